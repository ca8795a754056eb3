//! Azurite, Azure's blob storage emulator (npm), on 127.0.0.1 for the `az://` tests.
//!
//! `azurite-blob` is taken from the `PATH`, or else installed once with npm (pinned to
//! [`VERSION`], the last release that runs on Node 20) into a directory the caller names. A
//! server that cannot be installed or started is an error with the reason, for the test to fail
//! on: the `az://` tests never skip silently.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// The azurite release installed when `azurite-blob` is not on the `PATH`.
pub const VERSION: &str = "3.35.0";

/// The emulator's well-known account.
pub const ACCOUNT: &str = "devstoreaccount1";

/// The emulator's well-known account key.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Runs the command in its arguments until stdin closes, so that the server stops with the
/// test process even when it is killed.
const UNTIL_STDIN_CLOSES: &str =
    "\"$@\" & server=$!; cat >/dev/null; kill -9 $server; { wait $server; } 2>/dev/null";

/// A running azurite blob server, in memory, on a free port of 127.0.0.1. Stopped on drop.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

impl Azurite {
    /// Starts a server, installing azurite into `install_dir` first if `azurite-blob` is not
    /// on the `PATH`.
    pub fn start(install_dir: &Path) -> Result<Azurite, String> {
        let program = program(install_dir)?;
        let mut child = Command::new("sh")
            .args(["-c", UNTIL_STDIN_CLOSES, "azurite"])
            .arg(&program)
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--loose"])
            .args(["--disableTelemetry", "--silent"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", program.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(port) = line.split("listens on http://127.0.0.1:").nth(1) {
                    let _ = sender.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let mut server = Azurite {
            child,
            stdin,
            port: 0,
        };
        server.port = receiver
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .ok_or_else(|| format!("{} did not announce its port", program.display()))?;
        Ok(server)
    }

    /// The blob service's URL for the well-known account, as object_store's endpoint:
    /// `http://127.0.0.1:<port>/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Creates a container (the emulator starts with none).
    pub fn create_container(&self, container: &str) -> Result<(), String> {
        let output = Command::new("node")
            .arg("-e")
            .arg(CREATE_CONTAINER)
            .args([&self.endpoint(), ACCOUNT, ACCOUNT_KEY, container])
            .output()
            .map_err(|error| format!("cannot run node: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cannot create container {container:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

/// Creates a container with a Shared Key signed `PUT ?restype=container`, in plain Node.
const CREATE_CONTAINER: &str = r#"
const [endpoint, account, key, container] = process.argv.slice(1);
const crypto = require("crypto");
const http = require("http");
const url = new URL(`${endpoint}/${container}?restype=container`);
const date = new Date().toUTCString();
const version = "2021-08-06";
const toSign = ["PUT", "", "", "", "", "", "", "", "", "", "", "",
  `x-ms-date:${date}\nx-ms-version:${version}`,
  `/${account}${url.pathname}\nrestype:container`].join("\n");
const signature = crypto.createHmac("sha256", Buffer.from(key, "base64"))
  .update(toSign, "utf8").digest("base64");
const request = http.request(url, { method: "PUT", headers: {
  "x-ms-date": date, "x-ms-version": version, "Content-Length": 0,
  "Authorization": `SharedKey ${account}:${signature}`,
} }, (response) => {
  let body = "";
  response.on("data", (piece) => body += piece);
  response.on("end", () => {
    if (response.statusCode !== 201 && response.statusCode !== 409) {
      console.error(`HTTP ${response.statusCode}: ${body}`);
      process.exit(1);
    }
  });
});
request.on("error", (error) => { console.error(error.message); process.exit(1); });
request.end();
"#;

impl Drop for Azurite {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `azurite-blob` from the `PATH`, or installed into `install_dir` (once, under a lock).
fn program(install_dir: &Path) -> Result<std::path::PathBuf, String> {
    let on_path = Command::new("azurite-blob")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if on_path {
        return Ok("azurite-blob".into());
    }
    let installed = install_dir.join("node_modules/.bin/azurite-blob");
    std::fs::create_dir_all(install_dir)
        .map_err(|error| format!("cannot create {}: {error}", install_dir.display()))?;
    let lock = std::fs::File::create(install_dir.join(".lock"))
        .map_err(|error| format!("cannot create the install lock: {error}"))?;
    lock.lock()
        .map_err(|error| format!("cannot take the install lock: {error}"))?;
    if !installed.exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(install_dir)
            .arg(format!("azurite@{VERSION}"))
            .status()
            .map_err(|error| {
                format!("azurite-blob is not on the PATH and npm cannot run ({error}): install Node.js and npm, or `npm install -g azurite@{VERSION}`")
            })?;
        if !status.success() || !installed.exists() {
            return Err(format!(
                "npm install azurite@{VERSION} into {} failed ({status})",
                install_dir.display()
            ));
        }
    }
    Ok(installed)
}
