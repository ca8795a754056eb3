//! The operator CLI, as the built binary run against a temporary data directory and an
//! in-process origin: `download` (plain output, since a test's stderr is not a terminal),
//! then `ls`, `status`, `find`, `rm`, `verify` and `gc`, bad input, a locked directory and
//! Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use chunk_manager::{ChunkManager, Config, DataChunk, ShortId, id_to_hex};
use chunk_origin::{Fault, Gate, Origin, content};
use serde_json::Value;

/// How long a test waits for something that should take milliseconds before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// An origin, a temporary directory for the data and manifests, and the bytes of every file
/// the origin serves.
struct Fixture {
    origin: Origin,
    dir: tempfile::TempDir,
    files: HashMap<String, Bytes>,
}

/// A finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        let run = Run {
            code: output.status.code().expect("the binary exits, not killed"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        assert!(!run.stderr.contains("panicked"), "{run:?}");
        run
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| panic!("{error}: {self:?}"))
    }

    #[track_caller]
    fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{self:?}");
        self
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            origin: Origin::start().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            files: HashMap::new(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A chunk of `dataset` covering `range`, with files of the given names and sizes served
    /// by the origin at `<id>/<name>`.
    fn chunk(
        &mut self,
        id: u8,
        dataset: u8,
        range: std::ops::Range<u64>,
        files: &[(&str, usize)],
    ) -> DataChunk {
        let mut urls = HashMap::new();
        for &(name, size) in files {
            let path = format!("{id}/{name}");
            let body = content(u64::from(id) << 32 | size as u64, size);
            self.origin.insert(&path, body.clone());
            self.files.insert(path.clone(), body);
            urls.insert(name.to_string(), self.origin.url(&path));
        }
        DataChunk::new([id; 32], [dataset; 32], range, urls)
    }

    /// Writes chunk descriptions to a manifest file, as a JSON array.
    fn manifest(&self, name: &str, chunks: &[DataChunk]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_string_pretty(chunks).unwrap()).unwrap();
        path
    }

    /// Runs the binary with `args`, then this fixture's data directory; without any setting
    /// from the environment.
    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chunk-worker"));
        command
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--fsync", "false"])
            .env_clear()
            .stdin(Stdio::null());
        command
    }

    fn download(&self, chunks: &[DataChunk]) -> Run {
        let manifest = self.manifest("manifest.json", chunks);
        self.run(&["download", manifest.to_str().unwrap()])
    }

    /// Where a committed chunk lives (the layout of the library's `disk` module).
    fn chunk_dir(&self, chunk: &DataChunk) -> PathBuf {
        let range = chunk.block_range();
        self.data_dir()
            .join("chunks")
            .join(id_to_hex(chunk.dataset_id()))
            .join(format!(
                "{:010}-{:010}-{}",
                range.start,
                range.end,
                id_to_hex(chunk.id())
            ))
    }

    /// Asserts the chunk's files on disk are exactly the origin's.
    fn assert_intact(&self, chunk: &DataChunk) {
        let dir = self.chunk_dir(chunk);
        for name in chunk.files().keys() {
            let on_disk = std::fs::read(dir.join(name))
                .unwrap_or_else(|error| panic!("{}: {error}", dir.join(name).display()));
            let served = &self.files[&format!("{}/{name}", chunk.id()[0])];
            assert!(
                on_disk == served[..],
                "{} differs",
                dir.join(name).display()
            );
        }
    }
}

fn hex(chunk: &DataChunk) -> String {
    id_to_hex(chunk.id())
}

fn short(chunk: &DataChunk) -> String {
    ShortId(chunk.id()).to_string()
}

/// Three chunks: two of dataset 7, one of dataset 8.
fn three_chunks(fixture: &mut Fixture) -> Vec<DataChunk> {
    vec![
        fixture.chunk(
            1,
            7,
            0..100,
            &[("blocks.parquet", 70_000), ("logs.parquet", 130_000)],
        ),
        fixture.chunk(2, 7, 100..250, &[("blocks.parquet", 50_000)]),
        fixture.chunk(3, 8, 0..1000, &[("a", 1), ("b", 20_000), ("c", 3)]),
    ]
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|chunk| chunk["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn download_fetches_every_chunk_of_a_manifest() {
    let mut fixture = Fixture::new();
    let chunks = three_chunks(&mut fixture);
    let run = fixture.download(&chunks).expect_code(0);
    assert_eq!(run.stdout.matches("✅ chunk ready").count(), 3, "{run:?}");
    assert!(run.stdout.contains("📡 download started"), "{run:?}");
    assert!(run.stdout.contains("🛑 shutdown"), "{run:?}");
    assert!(run.stdout.contains("downloaded 3 chunks"), "{run:?}");
    for chunk in &chunks {
        fixture.assert_intact(chunk);
    }
    assert_eq!(
        std::fs::read_dir(fixture.data_dir().join("tmp"))
            .unwrap()
            .count(),
        0,
        "no temporary data left"
    );

    // The object form, again: nothing to fetch.
    let path = fixture.dir.path().join("wrapped.json");
    let wrapped = serde_json::json!({ "chunks": chunks });
    std::fs::write(&path, wrapped.to_string()).unwrap();
    let again = fixture
        .run(&["download", path.to_str().unwrap()])
        .expect_code(0);
    assert!(again.stdout.contains("downloaded 0 chunks"), "{again:?}");
    assert!(again.stdout.contains("3 already present"), "{again:?}");
}

#[test]
fn logs_to_a_file_or_pipe_carry_no_colour_codes() {
    let mut fixture = Fixture::new();
    let chunks = three_chunks(&mut fixture);
    let manifest = fixture.manifest("manifest.json", &chunks);
    let run = Run::from(
        fixture
            .command(&["download", manifest.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            .output()
            .unwrap(),
    )
    .expect_code(0);
    assert!(run.stderr.contains("DEBUG"), "logs were written: {run:?}");
    assert!(!run.stderr.contains('\x1b'), "no escape codes: {run:?}");
}

#[test]
fn download_exits_non_zero_naming_a_chunk_whose_file_is_missing() {
    let mut fixture = Fixture::new();
    let good = fixture.chunk(1, 7, 0..100, &[("blocks", 10_000)]);
    let mut bad = fixture.chunk(2, 7, 100..200, &[("blocks", 10_000)]);
    fixture.origin.remove("2/blocks");
    let missing = fixture.origin.url("2/blocks");
    bad = DataChunk::new(
        *bad.id(),
        *bad.dataset_id(),
        bad.block_range(),
        [("blocks".to_string(), missing)].into(),
    );
    let invalid = DataChunk::new(
        [3; 32],
        [7; 32],
        200..300,
        [("../escape".to_string(), fixture.origin.url("1/blocks"))].into(),
    );
    let run = fixture
        .download(&[good.clone(), bad.clone(), invalid.clone()])
        .expect_code(1);
    assert!(run.stderr.contains("2 of 3 chunks"), "{run:?}");
    assert!(run.stderr.contains(&hex(&bad)), "{run:?}");
    assert!(run.stderr.contains("404"), "{run:?}");
    assert!(run.stderr.contains(&hex(&invalid)), "{run:?}");
    assert!(run.stderr.contains("../escape"), "{run:?}");
    assert!(!run.stderr.contains(&hex(&good)), "{run:?}");
    fixture.assert_intact(&good);
    assert!(!fixture.chunk_dir(&bad).exists());
}

#[test]
fn an_invalid_manifest_names_the_file_and_the_position() {
    let fixture = Fixture::new();
    let path = fixture.dir.path().join("broken.json");
    std::fs::write(&path, "[\n  {\"id\": \"00\",\n").unwrap();
    let run = fixture
        .run(&["download", path.to_str().unwrap()])
        .expect_code(1);
    assert!(run.stderr.contains(&path.display().to_string()), "{run:?}");
    assert!(run.stderr.contains("line 2"), "{run:?}");

    let missing = fixture.dir.path().join("missing.json");
    let run = fixture
        .run(&["download", missing.to_str().unwrap()])
        .expect_code(1);
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "{run:?}"
    );
}

#[test]
fn ls_status_find_and_rm_inspect_and_change_the_directory() {
    let mut fixture = Fixture::new();
    let chunks = three_chunks(&mut fixture);
    fixture.download(&chunks).expect_code(0);

    let ls = fixture.run(&["ls"]).expect_code(0);
    assert!(ls.stdout.starts_with("ID"), "{ls:?}");
    for chunk in &chunks {
        assert!(ls.stdout.contains(&short(chunk)), "{ls:?}");
    }
    assert!(ls.stdout.contains("100..250"), "{ls:?}");
    assert!(ls.stdout.contains("3 chunks, 2 datasets"), "{ls:?}");

    let listed = fixture.run(&["ls", "--json"]).expect_code(0).json();
    assert_eq!(
        ids(&listed),
        chunks.iter().map(hex).collect::<Vec<_>>(),
        "ordered by dataset and range"
    );
    assert_eq!(listed[0]["state"], "ready");
    assert_eq!(listed[0]["size"], 200_000);
    assert_eq!(listed[1]["block_range"]["start"], 100);
    assert_eq!(
        listed[0]["path"],
        fixture.chunk_dir(&chunks[0]).to_str().unwrap()
    );
    let all = fixture
        .run(&["ls", "--all", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(ids(&all), ids(&listed));

    let status = fixture.run(&["status", &hex(&chunks[0])]).expect_code(0);
    assert!(status.stdout.contains("state    ready"), "{status:?}");
    assert!(status.stdout.contains("logs.parquet"), "{status:?}");
    let status = fixture
        .run(&["status", "--json", &hex(&chunks[2])[..8]])
        .expect_code(0)
        .json();
    assert_eq!(status["id"], hex(&chunks[2]));
    assert_eq!(status["files"][1]["name"], "b");
    assert_eq!(status["files"][1]["size"], 20_000);

    let unknown = id_to_hex(&[0xee; 32]);
    let run = fixture.run(&["status", &unknown]).expect_code(1);
    assert!(run.stderr.contains(&unknown), "{run:?}");
    assert!(run.stderr.contains("not in the data directory"), "{run:?}");

    let dataset = id_to_hex(&[7; 32]);
    let found = fixture
        .run(&["find", "--json", &dataset, "150"])
        .expect_code(0)
        .json();
    assert_eq!(found["id"], hex(&chunks[1]));
    let found = fixture.run(&["find", &dataset[..6], "0"]).expect_code(0);
    assert!(found.stdout.contains(&hex(&chunks[0])), "{found:?}");
    let miss = fixture.run(&["find", &dataset, "250"]).expect_code(1);
    assert!(miss.stderr.contains("no ready chunk"), "{miss:?}");
    assert!(miss.stderr.contains("250"), "{miss:?}");
    fixture
        .run(&["find", &id_to_hex(&[9; 32]), "0"])
        .expect_code(1);

    let removed = fixture.run(&["rm", &hex(&chunks[1])]).expect_code(0);
    assert!(removed.stdout.contains("deleted chunk"), "{removed:?}");
    assert!(!fixture.chunk_dir(&chunks[1]).exists());
    let listed = fixture.run(&["ls", "--json"]).expect_code(0).json();
    assert_eq!(ids(&listed), vec![hex(&chunks[0]), hex(&chunks[2])]);
    fixture.run(&["find", &dataset, "150"]).expect_code(1);
    let again = fixture
        .run(&["rm", "--json", &hex(&chunks[1])])
        .expect_code(0)
        .json();
    assert_eq!(again["existed"], false);
    fixture.assert_intact(&chunks[0]);
    fixture.assert_intact(&chunks[2]);
}

#[test]
fn verify_finds_a_file_corrupted_by_hand() {
    let mut fixture = Fixture::new();
    let chunks = three_chunks(&mut fixture);
    fixture.download(&chunks).expect_code(0);
    let clean = fixture.run(&["verify"]).expect_code(0);
    assert!(clean.stdout.contains("checked 3 ready chunks"), "{clean:?}");

    // Same size, different bytes: only a full re-read notices.
    let file = fixture.chunk_dir(&chunks[1]).join("blocks.parquet");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1234] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let run = fixture.run(&["verify"]).expect_code(1);
    assert!(run.stdout.contains("BAD"), "{run:?}");
    assert!(run.stdout.contains(&hex(&chunks[1])), "{run:?}");
    assert!(!run.stdout.contains(&hex(&chunks[0])), "{run:?}");
    let report = fixture.run(&["verify", "--json"]).expect_code(1).json();
    assert_eq!(report["checked"], 3);
    assert_eq!(report["bad"].as_array().unwrap().len(), 1);
    assert_eq!(report["bad"][0]["id"], hex(&chunks[1]));

    // A truncated file is caught when the directory is opened: never served, still reported.
    std::fs::write(fixture.chunk_dir(&chunks[2]).join("b"), b"short").unwrap();
    let report = fixture.run(&["verify", "--json"]).expect_code(1).json();
    assert_eq!(report["checked"], 2);
    assert_eq!(report["unusable"].as_array().unwrap().len(), 1);
}

#[test]
fn gc_removes_temporary_data_and_unknown_directories() {
    let mut fixture = Fixture::new();
    let chunk = fixture.chunk(1, 7, 0..100, &[("blocks", 4096)]);
    fixture
        .download(std::slice::from_ref(&chunk))
        .expect_code(0);

    let data = fixture.data_dir();
    let junk: Vec<PathBuf> = vec![
        data.join("tmp/stray-file"),
        data.join("tmp/0123/partial"),
        data.join("chunks/not-a-dataset/file"),
        data.join(format!("chunks/{}/leftover/file", id_to_hex(&[7; 32]))),
    ];
    for path in &junk {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![0u8; 1000]).unwrap();
    }
    let run = fixture.run(&["gc"]).expect_code(0);
    assert!(
        run.stdout.contains("removed 2 temporary entries"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("removed 2 entries that are not valid chunks"),
        "{run:?}"
    );
    assert!(run.stdout.contains("not-a-dataset"), "{run:?}");
    assert!(run.stdout.contains("freed 3.9 KiB"), "{run:?}");
    for path in &junk {
        assert!(!path.exists(), "{} is left", path.display());
    }
    assert!(!data.join("chunks/not-a-dataset").exists());
    fixture.assert_intact(&chunk);

    let again = fixture.run(&["gc", "--json"]).expect_code(0).json();
    assert_eq!(again["temporary_removed"], 0);
    assert_eq!(again["unusable_removed"].as_array().unwrap().len(), 0);
    assert_eq!(again["bytes_freed"], 0);
    fixture.run(&["verify"]).expect_code(0);
}

#[test]
fn bad_ids_get_a_clear_error_not_a_panic() {
    let mut fixture = Fixture::new();
    let chunk = fixture.chunk(1, 7, 0..100, &[("blocks", 100)]);
    fixture
        .download(std::slice::from_ref(&chunk))
        .expect_code(0);

    for args in [
        vec!["status", "not-hex"],
        vec!["rm", "xyz"],
        vec!["status", "01"],
        vec!["find", "zz", "5"],
    ] {
        let run = fixture.run(&args).expect_code(2);
        assert!(run.stderr.contains("invalid"), "{args:?}: {run:?}");
        assert!(run.stderr.contains(args[1]), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("64 hex characters"),
            "{args:?}: {run:?}"
        );
    }
    let too_long = "0".repeat(65);
    fixture.run(&["status", &too_long]).expect_code(2);
    let run = fixture
        .run(&["find", &id_to_hex(&[7; 32]), "block"])
        .expect_code(2);
    assert!(run.stderr.contains("block"), "{run:?}");

    // Well-formed prefixes that match nothing.
    let run = fixture.run(&["rm", "abcdef"]).expect_code(1);
    assert!(run.stderr.contains("abcdef"), "{run:?}");
    fixture.run(&["status", "abcdef"]).expect_code(1);
    fixture.assert_intact(&chunk);

    // A data directory that does not exist is not created by an inspection.
    let missing = fixture.dir.path().join("typo");
    let run = Run::from(
        Command::new(env!("CARGO_BIN_EXE_chunk-worker"))
            .args(["ls", "--data-dir"])
            .arg(&missing)
            .env_clear()
            .output()
            .unwrap(),
    )
    .expect_code(1);
    assert!(run.stderr.contains("does not exist"), "{run:?}");
    assert!(!missing.exists());
}

#[test]
fn a_directory_in_use_points_to_the_daemon_api() {
    let fixture = Fixture::new();
    let manager = ChunkManager::open(Config::new(fixture.data_dir()).with_fsync(false)).unwrap();
    let run = fixture.run(&["ls"]).expect_code(1);
    assert!(run.stderr.contains("in use"), "{run:?}");
    assert!(
        run.stderr.contains(&format!("pid {}", std::process::id())),
        "{run:?}"
    );
    assert!(run.stderr.contains("GET /chunks"), "{run:?}");
    manager.shutdown_blocking();
    fixture.run(&["ls"]).expect_code(0);
}

#[test]
fn ctrl_c_stops_a_download_gracefully() {
    let mut fixture = Fixture::new();
    let quick = fixture.chunk(1, 7, 0..100, &[("blocks", 1000)]);
    let stalled = fixture.chunk(2, 7, 100..200, &[("blocks", 100_000)]);
    let gate = Gate::new();
    fixture.origin.set_fault(
        "2/blocks",
        Some(Fault::Stall {
            after: 10_000,
            gate: gate.clone(),
        }),
    );
    fixture
        .download(std::slice::from_ref(&quick))
        .expect_code(0);
    let manifest = fixture.manifest("both.json", &[quick.clone(), stalled.clone()]);
    let child = fixture
        .command(&["download", manifest.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Signals are listened to before the first request, so once the origin holds the second
    // chunk's body, the download is surely under way and Ctrl-C is handled.
    assert!(gate.wait_reached(PATIENCE), "the stalled download starts");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let run = Run::from(child.wait_with_output().unwrap()).expect_code(130);
    assert!(run.stderr.contains("interrupted"), "{run:?}");
    assert!(run.stderr.contains("1 of 2 chunks ready"), "{run:?}");
    assert!(run.stdout.contains("🛑 shutdown"), "{run:?}");
    gate.open();

    fixture.assert_intact(&quick);
    let listed = fixture.run(&["ls", "--json"]).expect_code(0).json();
    assert_eq!(ids(&listed), vec![hex(&quick)], "no partial chunk visible");
    assert!(!fixture.chunk_dir(&stalled).exists());
    assert_eq!(
        std::fs::read_dir(fixture.data_dir().join("tmp"))
            .unwrap()
            .count(),
        0,
        "the next open removes the partial download"
    );
}

/// Output piped to a reader that stops early (`| head -1`) is not a panic: the command goes
/// on to its end and exits 0 (it panicked in `println!` with "Broken pipe", exit code 101).
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chunk-worker"))
        .args(["synth", "--chunks", "3", "--blocks-per-chunk", "20"])
        .args(["--transactions-per-block", "2", "--out"])
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the command prints anything.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.path().join("catalog.json").is_file());
}
