//! A full disk (SPEC §4): the test re-runs itself in a private mount namespace (`unshare
//! -Urm`, which needs no privilege) with the data directory on a tiny tmpfs, so ENOSPC is
//! real. The download that does not fit fails with an error naming the file and path, its
//! partial files are removed, the committed chunk stays intact and served, and the manager
//! keeps working once space is freed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use chunk_manager::{ChunkManager, ChunkState, Error};
use common::{Catalog, config, temporary_entries};

/// The child: runs inside the namespace with `CHUNK_MANAGER_FULL_DIR` on a 256 KiB tmpfs.
#[test]
#[ignore = "run in a mount namespace by a_full_disk_fails_the_download_cleanly"]
fn full_disk_child() {
    let dir = std::env::var("CHUNK_MANAGER_FULL_DIR").expect("run by the parent test");
    let dir = std::path::Path::new(&dir);
    let catalog = Catalog::new();
    // The budget says there is room; the file system disagrees.
    let manager = ChunkManager::open(config(dir).with_retries(1)).unwrap();

    let small = catalog.simple(1, 64 * 1024);
    manager.download_chunk(small);
    let kept = manager.wait_ready_blocking([1; 32]).unwrap();

    let big = catalog.simple(2, 1024 * 1024);
    manager.download_chunk(big);
    let error = manager.wait_ready_blocking([2; 32]).unwrap_err();
    let message = error.to_string();
    assert!(matches!(*error, Error::Io { .. }), "{error:?}");
    assert!(message.contains("data"), "names the file: {message}");
    assert!(
        message.contains(&dir.display().to_string()),
        "names the path: {message}"
    );
    println!("full disk error: {message}");
    let status = manager.status(&[2; 32]).unwrap();
    assert!(matches!(status.state, ChunkState::Failed { .. }));
    manager.wait_idle_blocking();
    assert!(temporary_entries(dir).is_empty(), "partial files removed");
    catalog.assert_intact(&kept);
    assert_eq!(manager.list_chunks(), vec![[1; 32]]);

    // Space freed: the same manager downloads again.
    manager.delete_chunk([2; 32]);
    drop(kept);
    manager.delete_chunk([1; 32]);
    manager.wait_idle_blocking();
    let third = catalog.simple(3, 128 * 1024);
    manager.download_chunk(third);
    catalog.assert_intact(&manager.wait_ready_blocking([3; 32]).unwrap());
    manager.shutdown_blocking();
    println!("full disk child passed");
}

#[test]
fn a_full_disk_fails_the_download_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = r#"mount -t tmpfs -o size=256k tmpfs "$CHUNK_MANAGER_FULL_DIR" && exec "$0" --ignored --exact full_disk_child --nocapture --test-threads=1"#;
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .arg(&exe)
        .env("CHUNK_MANAGER_FULL_DIR", dir.path())
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("full disk child passed"),
        "the child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
