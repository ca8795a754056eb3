//! The cluster store on a `file://` directory: round trips, bad files, racing writers.

use std::io::Write;
use std::path::Path;

use chunk_fleet::placement::{ChunkSize, Params, WorkerCapacity, place};
use chunk_fleet::store::{
    Assignment, AssignmentId, ClusterStore, FORMAT_VERSION, Member, State, StoreError,
};
use sha2::{Digest, Sha256};

fn open(dir: &Path) -> ClusterStore {
    ClusterStore::open(&format!("file://{}", dir.display())).expect("valid url")
}

fn sample_assignment() -> Assignment {
    let chunks: Vec<ChunkSize> = (0..50u8)
        .map(|i| ChunkSize {
            id: [i; 32],
            bytes: 10,
        })
        .collect();
    let workers = [
        WorkerCapacity::new("a", 1_000),
        WorkerCapacity::new("b", 1_000),
        WorkerCapacity::new("c", 2_000),
    ];
    let placement = place(&chunks, &workers, Params::default()).expect("valid");
    Assignment::from_placement(&placement, "catalog-sha256-0123")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory")
}

#[tokio::test]
async fn an_empty_store_has_no_members_and_no_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("not-yet-created"));
    let members = store.list_members().await.expect("lists");
    assert!(members.members.is_empty() && members.skipped.is_empty());
    assert!(store.read_state().await.expect("reads").is_none());
}

#[tokio::test]
async fn members_round_trip_and_garbage_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut a = Member::new("worker-a", "http://127.0.0.1:8001", 1 << 40, 1_000);
    a.flight_url = Some("http://127.0.0.1:9001".into());
    a.applied_assignment = Some(
        format!("{:020}_{}", 5, "ab".repeat(32))
            .parse()
            .expect("valid"),
    );
    let b = Member::new("worker-b", "http://127.0.0.1:8002", 1 << 39, 1_001);
    store.put_member(&a).await.expect("put a");
    store.put_member(&b).await.expect("put b");

    let members_dir = dir.path().join("members");
    std::fs::write(members_dir.join("garbage.json"), b"{not json").expect("write");
    let mut newer = serde_json::to_value(Member::new("newer", "http://x", 1, 1)).expect("json");
    newer["format"] = (FORMAT_VERSION + 1).into();
    std::fs::write(members_dir.join("newer.json"), newer.to_string()).expect("write");
    let impostor = serde_json::to_vec(&Member::new("worker-a", "http://x", 1, 1)).expect("json");
    std::fs::write(members_dir.join("worker-c.json"), impostor).expect("write");
    std::fs::write(members_dir.join("README.txt"), b"not a member").expect("write");

    let list = store.list_members().await.expect("lists despite garbage");
    assert_eq!(list.members, vec![a, b]);
    assert_eq!(list.skipped.len(), 3, "{:?}", list.skipped);
    let messages: Vec<String> = list.skipped.iter().map(ToString::to_string).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("garbage.json") && m.contains("corrupt"))
    );
    assert!(list.skipped.iter().any(|e| matches!(
        e,
        StoreError::NewerFormat { path, found, .. } if path.ends_with("newer.json") && *found == FORMAT_VERSION + 1
    )));
    assert!(
        messages
            .iter()
            .any(|m| m.contains("worker-c.json") && m.contains("worker-a"))
    );
}

#[tokio::test]
async fn invalid_worker_ids_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for id in ["", "../x", ".hidden", "a/b", "sp ace", &"x".repeat(129)] {
        let member = Member::new(id, "http://127.0.0.1:1", 1, 1);
        assert!(
            matches!(
                store.put_member(&member).await,
                Err(StoreError::InvalidWorkerId { .. })
            ),
            "{id:?}"
        );
    }
}

#[tokio::test]
async fn two_processes_claiming_one_worker_id_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut first = Member::new("worker-a", "http://127.0.0.1:8001", 1, 10_000);
    first.instance = Some("one".into());
    let mut second = Member::new("worker-a", "http://127.0.0.1:8002", 1, 11_000);
    second.instance = Some("two".into());

    assert_eq!(store.put_member(&first).await.expect("put").clash, None);
    first.heartbeat_unix_ms = 12_000;
    assert_eq!(
        store.put_member(&first).await.expect("put").clash,
        None,
        "its own record"
    );
    let clash = store
        .put_member(&second)
        .await
        .expect("put")
        .clash
        .expect("a clash");
    assert_eq!(clash.theirs_http_url, "http://127.0.0.1:8001");
    assert_eq!(clash.ours_http_url, "http://127.0.0.1:8002");
    assert!(clash.to_string().contains("claimed by two processes"));
    // The same address, another process: still a clash.
    let mut third = first.clone();
    third.instance = Some("three".into());
    third.http_url = second.http_url.clone();
    third.heartbeat_unix_ms = 13_000;
    assert!(store.put_member(&third).await.expect("put").clash.is_some());
    // A record older than the window is a previous life of this worker, not a clash.
    let mut restarted = Member::new("worker-a", "http://127.0.0.1:8009", 1, 13_000 + 31_000);
    restarted.instance = Some("four".into());
    assert_eq!(store.put_member(&restarted).await.expect("put").clash, None);
}

#[tokio::test]
async fn assignments_round_trip_and_the_same_content_keeps_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let assignment = sample_assignment();
    let id = store.put_assignment(&assignment, 1_000).await.expect("put");
    assert_eq!(id.created_unix_ms(), 1_000);
    let again = store
        .put_assignment(&assignment, 2_000)
        .await
        .expect("put again");
    assert_eq!(again, id, "same content, same name");
    assert_eq!(
        std::fs::read_dir(dir.path().join("assignments"))
            .expect("dir")
            .count(),
        1
    );
    assert_eq!(store.read_assignment(&id).await.expect("read"), assignment);

    // The name's sha256 is the sha256 of the uncompressed canonical JSON.
    let compressed = std::fs::read(dir.path().join(id.relative_path())).expect("file");
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut json,
    )
    .expect("gzip");
    assert_eq!(hex::encode(Sha256::digest(&json)), id.sha256());
    assert!(
        String::from_utf8_lossy(&json).contains(&"00".repeat(32)),
        "ids in hex"
    );

    // Other content, another name.
    let mut other = assignment.clone();
    other.catalog = "another catalog".into();
    assert_ne!(store.put_assignment(&other, 3_000).await.expect("put"), id);
}

#[tokio::test]
async fn a_corrupt_assignment_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let id = store
        .put_assignment(&sample_assignment(), 1_000)
        .await
        .expect("put");
    let file = dir.path().join(id.relative_path());

    std::fs::write(&file, b"definitely not gzip").expect("write");
    let error = store.read_assignment(&id).await.expect_err("corrupt");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().contains(&id.to_string()),
        "names the file: {error}"
    );

    // Valid gzip of other content: the sha256 does not match the name.
    let mut tampered = sample_assignment();
    tampered.workers.get_mut("a").expect("worker a").pop();
    std::fs::write(&file, gzip(&serde_json::to_vec(&tampered).expect("json"))).expect("write");
    let error = store.read_assignment(&id).await.expect_err("corrupt");
    assert!(error.to_string().contains("sha256"), "{error}");

    // Missing.
    let missing: AssignmentId = format!("{:020}_{}", 7, "cd".repeat(32))
        .parse()
        .expect("valid");
    assert!(matches!(
        store.read_assignment(&missing).await,
        Err(StoreError::Io { .. })
    ));
}

#[tokio::test]
async fn an_assignment_from_a_newer_format_is_refused_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut value = serde_json::to_value(sample_assignment()).expect("json");
    value["format"] = (FORMAT_VERSION + 1).into();
    value["something_new"] = "whatever".into();
    let json = serde_json::to_vec(&value).expect("json");
    let id: AssignmentId = format!("{:020}_{}", 1, hex::encode(Sha256::digest(&json)))
        .parse()
        .expect("valid");
    let file = dir.path().join(id.relative_path());
    std::fs::create_dir_all(file.parent().expect("parent")).expect("dir");
    std::fs::write(&file, gzip(&json)).expect("write");
    let error = store.read_assignment(&id).await.expect_err("newer");
    assert!(
        matches!(error, StoreError::NewerFormat { found, supported, .. } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{error}"
    );
}

#[test]
fn assignment_ids_parse_strictly() {
    for bad in [
        "",
        "12",
        "x_".to_string().as_str(),
        &format!("12_{}", "AB".repeat(32)),
        &format!("1a_{}", "ab".repeat(32)),
        &format!("12_{}", "ab".repeat(31)),
    ] {
        assert!(bad.parse::<AssignmentId>().is_err(), "{bad:?}");
    }
    let id: AssignmentId = format!("12_{}", "ab".repeat(32)).parse().expect("valid");
    assert_eq!(id.to_string(), format!("{:020}_{}", 12, "ab".repeat(32)));
    assert_eq!(
        id.to_string().parse::<AssignmentId>().expect("round trip"),
        id
    );
}

fn state(generation: u64, id: &AssignmentId) -> State {
    State::new(
        generation,
        id.clone(),
        5_000,
        vec!["a".into(), "b".into(), "c".into()],
        4_000,
    )
}

#[tokio::test]
async fn state_round_trips_and_generations_advance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let id = store
        .put_assignment(&sample_assignment(), 1_000)
        .await
        .expect("put");
    assert!(matches!(
        store.write_state(&state(0, &id)).await,
        Err(StoreError::ZeroGeneration)
    ));
    store.write_state(&state(1, &id)).await.expect("first");
    assert_eq!(store.read_state().await.expect("read"), Some(state(1, &id)));
    store.write_state(&state(2, &id)).await.expect("second");
    let read = store.read_state().await.expect("read").expect("some");
    assert_eq!(read.generation, 2);
    assert_eq!(read.assignment_path, id.relative_path());
    assert_eq!(
        store.read_assignment(&read.assignment).await.expect("read"),
        sample_assignment()
    );
}

#[tokio::test]
async fn two_writers_of_one_generation_one_wins_the_other_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    let second = open(dir.path());
    let id = first
        .put_assignment(&sample_assignment(), 1_000)
        .await
        .expect("put");
    first.write_state(&state(1, &id)).await.expect("first");

    // Both read generation 1 and publish generation 2 at once.
    let mut mine = state(2, &id);
    mine.live_workers = vec!["a".into()];
    let mut theirs = state(2, &id);
    theirs.live_workers = vec!["b".into()];
    let (left, right) = tokio::join!(first.write_state(&mine), second.write_state(&theirs));
    let (winner, loser) = match (&left, &right) {
        (Ok(()), Err(error)) => (&mine, error),
        (Err(error), Ok(())) => (&theirs, error),
        other => panic!("exactly one must win: {other:?}"),
    };
    assert!(loser.is_conflict(), "{loser}");
    assert!(
        matches!(loser, StoreError::Conflict { generation: 2, path } if path.contains("states"))
    );
    assert_eq!(
        first.read_state().await.expect("read").as_ref(),
        Some(winner)
    );
}

#[tokio::test]
async fn the_chain_wins_over_a_stale_or_missing_pointer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let id = store
        .put_assignment(&sample_assignment(), 1_000)
        .await
        .expect("put");
    store.write_state(&state(1, &id)).await.expect("first");
    let one = std::fs::read(dir.path().join("state.json")).expect("pointer");
    store.write_state(&state(2, &id)).await.expect("second");
    // A slow writer of generation 1 overwrites the pointer late: readers still see 2.
    std::fs::write(dir.path().join("state.json"), &one).expect("write");
    assert_eq!(
        store
            .read_state()
            .await
            .expect("read")
            .map(|s| s.generation),
        Some(2)
    );
    // A writer that died between its two puts: generation 3 is in the chain only.
    let three = serde_json::to_vec(&state(3, &id)).expect("json");
    std::fs::write(dir.path().join(format!("states/{:020}.json", 3)), three).expect("write");
    assert_eq!(
        store
            .read_state()
            .await
            .expect("read")
            .map(|s| s.generation),
        Some(3)
    );
    // And the next writer cannot reuse a generation already in the chain.
    assert!(
        store
            .write_state(&state(3, &id))
            .await
            .expect_err("taken")
            .is_conflict()
    );
    // With no pointer at all the chain is still found.
    std::fs::remove_file(dir.path().join("state.json")).expect("remove");
    assert_eq!(
        store
            .read_state()
            .await
            .expect("read")
            .map(|s| s.generation),
        Some(3)
    );
}

#[tokio::test]
async fn a_bad_state_is_an_error_never_an_empty_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    std::fs::write(dir.path().join("state.json"), b"\x00garbage").expect("write");
    assert!(matches!(
        store.read_state().await,
        Err(StoreError::Corrupt { .. })
    ));
    let id: AssignmentId = format!("1_{}", "ab".repeat(32)).parse().expect("valid");
    let mut newer = serde_json::to_value(state(1, &id)).expect("json");
    newer["format"] = 99.into();
    std::fs::write(dir.path().join("state.json"), newer.to_string()).expect("write");
    assert!(matches!(
        store.read_state().await,
        Err(StoreError::NewerFormat { found: 99, .. })
    ));
}

#[test]
fn bad_urls_are_clear_errors() {
    for url in ["not a url", "nosuchscheme://x/y"] {
        let error = ClusterStore::open(url).expect_err("invalid");
        assert!(
            matches!(error, StoreError::InvalidUrl { .. }),
            "{url}: {error}"
        );
        assert!(error.to_string().contains(url));
    }
    assert!(ClusterStore::open("memory://").is_ok());
}

#[tokio::test]
async fn issue12_catalogs_are_content_addressed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = ClusterStore::open(&format!("file://{}", dir.path().display())).unwrap();
    let sha = store.put_catalog(b"[1, 2, 3]").await.unwrap();
    assert_eq!(store.put_catalog(b"[1, 2, 3]").await.unwrap(), sha);
    assert_eq!(store.read_catalog(&sha).await.unwrap(), b"[1, 2, 3]");
    // A file whose content does not match its name is corrupt, not returned.
    let path = dir.path().join(format!("catalogs/{sha}.json.gz"));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"[4]").unwrap();
    std::fs::write(&path, encoder.finish().unwrap()).unwrap();
    let error = store.read_catalog(&sha).await.unwrap_err();
    assert!(error.to_string().contains("sha256"), "{error}");
    assert!(store.read_catalog("../x").await.is_err());
    assert!(store.read_catalog(&"0".repeat(64)).await.is_err());
}
