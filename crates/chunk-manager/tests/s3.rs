//! S3 sources against a real S3-compatible server on 127.0.0.1 (moto's server, from PyPI;
//! installed into the target directory if it is not on the PATH), with a TCP proxy in between
//! to cut or corrupt a response: download, resume after a cut connection, an object changed
//! during the resume, a missing object, bad credentials, checksum and ETag mismatches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chunk_manager::{Checksum, ChunkManager, Config, DataChunk, Error, Event, FileCheck, S3Config};
use chunk_origin::{Gate, content};
use common::{assert_missing_fails_at_once, config, put, temporary_entries, wait_event};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BUCKET: &str = "chunks";
const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// A moto S3 server on 127.0.0.1. Killed on drop, and also when this test process ends
/// (the shared server is a static, never dropped): it runs under a small Python wrapper that
/// stops it when its stdin, held open by this process, closes.
struct Moto {
    child: Child,
    /// The wrapper's stdin: closing it stops the server.
    stdin: Option<std::process::ChildStdin>,
    port: u16,
}

/// Runs the command in its arguments until stdin closes.
const UNTIL_STDIN_CLOSES: &str = "import subprocess, sys\n\
p = subprocess.Popen(sys.argv[1:])\n\
sys.stdin.read()\n\
p.terminate()\n\
p.wait()\n";

impl Moto {
    /// Starts a server; with `auth`, every request's credentials are checked (and ours, which
    /// moto does not know, are refused).
    fn start(auth: bool) -> Moto {
        let (server, pythonpath) = moto_command();
        let mut command = Command::new("python3");
        command
            .args(["-c", UNTIL_STDIN_CLOSES])
            .args(server)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(path) = pythonpath {
            command.env("PYTHONPATH", path);
        }
        if auth {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let mut child = command.spawn().expect("start moto_server");
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(address) = line.split("Running on http://127.0.0.1:").nth(1) {
                    let _ = sender.send(address.trim().parse::<u16>().ok());
                }
            }
        });
        let port = receiver
            .recv_timeout(Duration::from_secs(120))
            .expect("moto_server announces its port")
            .expect("a port number");
        Moto { child, stdin, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client for setting up the bucket's objects.
    fn store(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    fn create_bucket(&self) {
        let response = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{}/{BUCKET}", self.endpoint())])
            .output()
            .ok();
        if response.is_some_and(|output| output.status.success()) {
            return;
        }
        // No curl: the same request over a raw socket.
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// How to run moto's server: `moto_server` from the PATH, or else moto installed once into the
/// target directory (and the `PYTHONPATH` that finds it).
fn moto_command() -> (Vec<String>, Option<std::path::PathBuf>) {
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if on_path {
        return (vec!["moto_server".to_string()], None);
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("moto");
    let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if !dir.join("moto").exists() {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&dir)
            .arg("moto[server]")
            .status()
            .expect("python3 and pip install moto's server for the S3 tests");
        assert!(status.success(), "pip install moto[server] failed");
    }
    let server = ["python3", "-m", "moto.server"].map(String::from).to_vec();
    (server, Some(dir))
}

/// What the proxy does to the first response that passes `after` bytes on a connection.
#[derive(Clone)]
enum Mischief {
    None,
    /// Wait at `after` bytes until the gate opens, then close both sides.
    Cut {
        after: u64,
        gate: Gate,
    },
    /// Flip the byte at `at`.
    Corrupt {
        at: u64,
    },
}

/// A TCP proxy on 127.0.0.1 in front of moto, on its own thread and runtime.
struct Proxy {
    port: u16,
    mischief: Arc<Mutex<Mischief>>,
    /// Every request head the client sent, lowercased.
    requests: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mischief = Arc::new(Mutex::new(Mischief::None));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let armed = Arc::new(AtomicBool::new(true));
        runtime.spawn({
            let (mischief, requests) = (mischief.clone(), requests.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        continue;
                    };
                    tokio::spawn(relay(
                        client,
                        server,
                        mischief.clone(),
                        armed.clone(),
                        requests.clone(),
                    ));
                }
            }
        });
        Proxy {
            port,
            mischief,
            requests,
            _runtime: runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, mischief: Mischief) {
        *self.mischief.lock().unwrap() = mischief;
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    mischief: Arc<Mutex<Mischief>>,
    armed: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buffer[..n]).to_lowercase();
            if text.contains("http/1.1\r\n") {
                requests.lock().unwrap().push(text);
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut sent = 0u64;
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let window = sent..sent + n as u64;
            let current = mischief.lock().unwrap().clone();
            match current {
                Mischief::Cut { after, gate }
                    if window.contains(&after) && armed.swap(false, Ordering::SeqCst) =>
                {
                    let keep = (after - sent) as usize;
                    let _ = client_write.write_all(&buffer[..keep]).await;
                    let _ = client_write.flush().await;
                    gate.arrive();
                    gate.opened().await;
                    return; // both halves drop: the connection is cut
                }
                Mischief::Corrupt { at }
                    if window.contains(&at) && armed.swap(false, Ordering::SeqCst) =>
                {
                    buffer[(at - sent) as usize] ^= 0xff;
                }
                _ => {}
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
            sent += n as u64;
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

fn s3_config(dir: &std::path::Path, endpoint: String) -> Config {
    config(dir).with_s3(
        S3Config::default()
            .with_endpoint(endpoint)
            .with_region("us-east-1")
            .with_credentials(KEY_ID, SECRET),
    )
}

fn s3_chunk(id: u8, keys: &[&str]) -> DataChunk {
    let files: HashMap<String, String> = keys
        .iter()
        .map(|key| {
            let name = key.rsplit('/').next().unwrap().to_string();
            (name, format!("s3://{BUCKET}/{key}"))
        })
        .collect();
    DataChunk::new([id; 32], [0; 32], 0..100, files)
}

/// One moto server for the tests that do not need auth; each test uses its own keys.
fn shared_moto() -> &'static Moto {
    static MOTO: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
    MOTO.get_or_init(|| {
        let moto = Moto::start(false);
        moto.create_bucket();
        moto
    })
}

#[test]
fn downloads_from_s3_and_checks_the_etag() {
    let moto = shared_moto();
    let store = moto.store();
    let (blocks, logs) = (content(1, 300_000), content(2, 1_000));
    put(&store, "plain/1/blocks", &blocks);
    put(&store, "plain/1/logs", &logs);
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(s3_config(dir.path(), moto.endpoint())).unwrap();
    manager.download_chunk(s3_chunk(1, &["plain/1/blocks", "plain/1/logs"]));
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    assert!(std::fs::read(ready.path().join("blocks")).unwrap() == blocks[..]);
    assert!(std::fs::read(ready.path().join("logs")).unwrap() == logs[..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ready.path().join(".manifest.json")).unwrap())
            .unwrap();
    let md5 = format!("\"{:x}\"", md5_of(&blocks));
    assert_eq!(manifest["files"]["blocks"]["etag"], md5, "{manifest}");
}

fn md5_of(bytes: &[u8]) -> u128 {
    use md5::Digest as _;
    u128::from_be_bytes(md5::Md5::digest(bytes).into())
}

/// A download of `key` (holding `body`) through a proxy that cuts it at 150,000 bytes: runs
/// `meanwhile` with the connection held at the cut, then lets the cut happen.
struct CutDownload {
    proxy: Proxy,
    dir: tempfile::TempDir,
    manager: ChunkManager,
}

fn cut_download(key: &str, body: &Bytes, meanwhile: impl FnOnce()) -> CutDownload {
    let moto = shared_moto();
    put(&moto.store(), key, body);
    let proxy = Proxy::start(moto.port);
    let gate = Gate::new();
    proxy.set(Mischief::Cut {
        after: 150_000,
        gate: gate.clone(),
    });
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(s3_config(dir.path(), proxy.endpoint())).unwrap();
    manager.download_chunk(s3_chunk(1, &[key]));
    assert!(gate.wait_reached(Duration::from_secs(30)));
    meanwhile();
    gate.open();
    CutDownload {
        proxy,
        dir,
        manager,
    }
}

#[test]
fn a_cut_connection_resumes_with_a_pinned_range_request() {
    let body = content(3, 400_000);
    let cut = cut_download("cut/1/blocks", &body, || {});
    let ready = cut.manager.wait_ready_blocking([1; 32]).unwrap();
    assert!(std::fs::read(ready.path().join("blocks")).unwrap() == body[..]);
    let requests = cut.proxy.requests();
    let resume = requests
        .iter()
        .find(|head| head.starts_with("get ") && head.contains("\r\nrange: bytes="))
        .unwrap_or_else(|| panic!("no range request among {requests:#?}"));
    assert!(resume.contains("\r\nif-match: \""), "pinned: {resume}");
}

#[test]
fn an_object_changed_during_a_resume_is_downloaded_again_not_stitched() {
    let key = "changed/1/blocks";
    let replacement = content(5, 400_000);
    let cut = cut_download(key, &content(4, 400_000), || {
        put(&shared_moto().store(), key, &replacement);
    });
    let ready = cut.manager.wait_ready_blocking([1; 32]).unwrap();
    assert!(
        std::fs::read(ready.path().join("blocks")).unwrap() == replacement[..],
        "the new version, whole"
    );
}

#[test]
fn an_object_changed_to_another_size_fails_the_chunk() {
    let key = "resized/1/blocks";
    let cut = cut_download(key, &content(6, 400_000), || {
        put(&shared_moto().store(), key, &content(6, 500_000));
    });
    let error = cut.manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(matches!(*error, Error::SourceChanged { .. }), "{error:?}");
    assert!(
        error.to_string().contains("changed during the download"),
        "{error}"
    );
    cut.manager.wait_idle_blocking();
    assert!(temporary_entries(cut.dir.path()).is_empty());
}

#[test]
fn a_missing_object_fails_at_once_naming_it() {
    let moto = shared_moto();
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(s3_config(dir.path(), moto.endpoint())).unwrap();
    let chunk = s3_chunk(1, &["missing/1/blocks"]);
    assert_missing_fails_at_once(&manager, chunk, "s3://chunks/missing/1/blocks");
}

#[test]
fn bad_credentials_fail_with_access_denied() {
    let moto = Moto::start(true);
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(s3_config(dir.path(), moto.endpoint())).unwrap();
    manager.download_chunk(s3_chunk(1, &["any/1/blocks"]));
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(matches!(*error, Error::AccessDenied { .. }), "{error:?}");
    assert!(error.to_string().contains("credentials"), "{error}");
    assert!(!error.is_retryable());
}

#[test]
fn a_declared_checksum_mismatch_fails_the_chunk() {
    let moto = shared_moto();
    let body = content(7, 10_000);
    put(&moto.store(), "sum/1/blocks", &body);
    let dir = tempfile::tempdir().unwrap();
    let manager =
        ChunkManager::open(s3_config(dir.path(), moto.endpoint()).with_retries(1)).unwrap();
    let right = crc32c::crc32c(&body);
    let chunk = s3_chunk(1, &["sum/1/blocks"]).with_check(
        "blocks",
        FileCheck::new().with_checksum(Checksum::Crc32c(right ^ 1)),
    );
    manager.download_chunk(chunk);
    let error = manager.wait_ready_blocking([1; 32]).unwrap_err();
    assert!(
        matches!(&*error, Error::ChecksumMismatch { algorithm: chunk_manager::ChecksumAlgorithm::Crc32c, actual, .. } if **actual == format!("{right:08x}")),
        "{error:?}"
    );
}

#[test]
fn corruption_in_transit_fails_the_etag_check_and_is_downloaded_again() {
    let moto = shared_moto();
    let body = content(8, 300_000);
    put(&moto.store(), "corrupt/1/blocks", &body);
    let proxy = Proxy::start(moto.port);
    proxy.set(Mischief::Corrupt { at: 200_000 });
    let dir = tempfile::tempdir().unwrap();
    let manager = ChunkManager::open(s3_config(dir.path(), proxy.endpoint())).unwrap();
    let mut events = manager.subscribe();
    manager.download_chunk(s3_chunk(1, &["corrupt/1/blocks"]));
    let ready = manager.wait_ready_blocking([1; 32]).unwrap();
    assert!(std::fs::read(ready.path().join("blocks")).unwrap() == body[..]);
    let retried = wait_event(&mut events, |event| matches!(event, Event::Retrying { .. }));
    assert!(retried.to_string().contains("md5 (etag)"), "{retried}");
}
