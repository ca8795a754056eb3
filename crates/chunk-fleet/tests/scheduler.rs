//! Scheduler rounds: what is published when members and the catalog change.

use chunk_fleet::placement::ChunkSize;
use chunk_fleet::scheduler::{
    CatalogSnapshot, RoundDecision, SchedulerConfig, plan_round, run_round,
};
use chunk_fleet::store::{ClusterStore, Member};
use sha2::{Digest, Sha256};

const GB: u64 = 1_000_000_000;

fn catalog(identity: &str, count: u64) -> CatalogSnapshot {
    CatalogSnapshot {
        identity: identity.to_string(),
        chunks: (0..count)
            .map(|i| ChunkSize {
                id: Sha256::digest(i.to_le_bytes()).into(),
                bytes: GB / 5,
            })
            .collect(),
    }
}

fn members(ids: &[&str], heartbeat: u64) -> Vec<Member> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            Member::new(
                *id,
                format!("http://127.0.0.1:{}", 8000 + i),
                100 * GB,
                heartbeat,
            )
        })
        .collect()
}

fn open(dir: &std::path::Path) -> ClusterStore {
    ClusterStore::open(&format!("file://{}", dir.display())).expect("valid url")
}

#[tokio::test]
async fn a_restarted_scheduler_publishes_nothing_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for member in members(&["a", "b", "c", "d"], 1_000) {
        store.put_member(&member).await.expect("heartbeat");
    }
    let config = SchedulerConfig::default();
    let catalog = catalog("v1", 600);
    let first = run_round(&store, &catalog, 2_000, &config)
        .await
        .expect("round");
    let state = first.published.expect("first round publishes");
    assert_eq!(state.generation, 1);
    assert_eq!(state.live_workers, ["a", "b", "c", "d"]);
    let assignment = store
        .read_assignment(&state.assignment)
        .await
        .expect("read");
    assert_eq!(
        assignment.workers.values().map(Vec::len).sum::<usize>(),
        1_200
    );

    // A new scheduler process (a new store handle) a little later: nothing changes.
    let again = run_round(&open(dir.path()), &catalog, 3_000, &config)
        .await
        .expect("round");
    assert_eq!(again.plan.decision, RoundDecision::Unchanged);
    assert!(again.published.is_none());
    assert_eq!(store.read_state().await.expect("read"), Some(state));
}

#[tokio::test]
async fn a_silent_member_is_replaced_and_only_its_replicas_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for member in members(&["a", "b", "c", "d"], 1_000) {
        store.put_member(&member).await.expect("heartbeat");
    }
    let config = SchedulerConfig::default();
    let catalog = catalog("v1", 600);
    let first = run_round(&store, &catalog, 2_000, &config)
        .await
        .expect("round");
    let first_state = first.published.expect("published");
    let before = store
        .read_assignment(&first_state.assignment)
        .await
        .expect("read");

    // b, c, d keep heartbeating; a falls silent past the timeout.
    let later = 1_000 + 61_000;
    for member in members(&["a", "b", "c", "d"], later).into_iter().skip(1) {
        store.put_member(&member).await.expect("heartbeat");
    }
    let round = run_round(&store, &catalog, later + 500, &config)
        .await
        .expect("round");
    assert_eq!(round.plan.left, ["a"]);
    let RoundDecision::Publish { moves, .. } = &round.plan.decision else {
        panic!("must publish: {:?}", round.plan.decision);
    };
    let held = before.workers["a"].len();
    assert_eq!((moves.added, moves.removed), (held, held));
    let state = round.published.expect("published");
    assert_eq!((state.generation, state.live_workers.len()), (2, 3));
}

#[test]
fn catalog_changes_publish_and_an_empty_fleet_publishes_nothing() {
    let config = SchedulerConfig::default();
    let fleet = members(&["a", "b", "c"], 1_000);
    let v1 = catalog("v1", 100);
    let first = plan_round(&fleet, &v1, None, None, 1_000, &config).expect("plan");
    let RoundDecision::Publish {
        assignment,
        generation,
        ..
    } = first.decision
    else {
        panic!("first round publishes");
    };
    assert_eq!(generation, 1);
    let id = format!("1_{}", "ab".repeat(32)).parse().expect("valid");
    let state = chunk_fleet::store::State::new(1, id, 1_000, first.live_workers.clone(), 1_000);

    let same =
        plan_round(&fleet, &v1, Some(&state), Some(&assignment), 2_000, &config).expect("plan");
    assert_eq!(same.decision, RoundDecision::Unchanged);

    let v2 = catalog("v2", 110);
    let grown =
        plan_round(&fleet, &v2, Some(&state), Some(&assignment), 2_000, &config).expect("plan");
    let RoundDecision::Publish {
        moves, generation, ..
    } = grown.decision
    else {
        panic!("a new catalog publishes");
    };
    assert_eq!(generation, 2);
    assert_eq!(
        (moves.added, moves.removed),
        (20, 0),
        "only the new chunks' replicas"
    );

    // Every member silent: the previous state stays, nothing is published.
    let silent = plan_round(
        &fleet,
        &v1,
        Some(&state),
        Some(&assignment),
        1_000 + 61_000,
        &config,
    )
    .expect("plan");
    assert_eq!(silent.decision, RoundDecision::NoLiveWorkers);
    assert_eq!(silent.left.len(), 3);
}

#[tokio::test]
async fn two_schedulers_at_once_publish_one_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for member in members(&["a", "b", "c"], 1_000) {
        store.put_member(&member).await.expect("heartbeat");
    }
    let config = SchedulerConfig::default();
    let catalog = catalog("v1", 200);
    let other = open(dir.path());
    let (left, right) = tokio::join!(
        run_round(&store, &catalog, 2_000, &config),
        run_round(&other, &catalog, 2_001, &config)
    );
    let published: Vec<_> = [&left, &right]
        .iter()
        .filter_map(|result| {
            result
                .as_ref()
                .ok()
                .and_then(|outcome| outcome.published.clone())
        })
        .collect();
    for result in [&left, &right] {
        if let Err(error) = result {
            assert!(error.is_conflict(), "{error}");
        }
    }
    assert!(!published.is_empty());
    let state = store.read_state().await.expect("read").expect("some");
    assert_eq!(state.generation, 1);
    assert!(published.contains(&state));
}
