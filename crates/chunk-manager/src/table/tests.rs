//! The table without IO: each row of the semantics table, the budget, and a model-based
//! property test over arbitrary interleavings of calls, job completions and ref drops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use tokio::sync::{broadcast, mpsc};

use crate::handle::Releases;

use super::*;

const SIZE: u64 = 10;

struct Harness {
    table: Table,
    released: mpsc::UnboundedReceiver<Released>,
    events: broadcast::Receiver<Event>,
}

impl Harness {
    fn new(budget: u64, slots: usize) -> Self {
        let events = Emitter::new(1024);
        let receiver = events.subscribe();
        let (sender, released) = Releases::channel();
        Self {
            table: Table::new(budget, slots, events, sender),
            released,
            events: receiver,
        }
    }

    /// One reconciler turn: fold in releases, take the jobs, publish (here: drop) the
    /// visibility changes.
    fn work(&mut self) -> Vec<Work> {
        while let Ok(release) = self.released.try_recv() {
            self.table.released(release);
        }
        let work = self.table.next_work();
        self.table.take_index_changes();
        work
    }

    fn events(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            seen.push(event.to_string());
        }
        seen
    }

    fn state(&self, id: u8) -> Option<&'static str> {
        self.table
            .status(&[id; 32])
            .map(|status| status.state.name())
    }
}

fn chunk(id: u8) -> Arc<DataChunk> {
    Arc::new(DataChunk::new(
        [id; 32],
        [0; 32],
        u64::from(id) * 100..u64::from(id) * 100 + 100,
        [("f".to_string(), format!("http://origin/{id}"))].into(),
    ))
}

fn committed(id: u8) -> Outcome {
    Outcome::Download(DownloadOutcome::Committed {
        path: PathBuf::from(format!("/chunks/{id}")),
        size: SIZE,
    })
}

fn single(work: Vec<Work>) -> Work {
    assert_eq!(work.len(), 1, "{work:?}");
    work.into_iter().next().expect("one job")
}

#[test]
fn download_commits_and_shows() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    assert_eq!(h.state(1), Some("queued"));
    assert!(matches!(
        single(h.work()),
        Work::Download { reserved: None, .. }
    ));
    assert_eq!(h.state(1), Some("downloading"));
    assert_eq!(h.table.try_reserve(&[1; 32], SIZE), Reservation::Granted);
    h.table.job_finished([1; 32], committed(1));
    assert!(h.work().is_empty());
    assert_eq!(h.state(1), Some("ready"));
    assert!(h.table.shown(&[1; 32]).is_some());
    assert_eq!(h.table.totals().bytes_committed, SIZE);
    assert_eq!(h.table.totals().bytes_reserved, 0);
    assert!(h.table.is_idle());
    let events = h.events();
    assert!(events.iter().any(|e| e.starts_with("📡")), "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("✅")), "{events:?}");
}

#[test]
fn delete_of_a_queued_chunk_unqueues_it() {
    let mut h = Harness::new(100, 1);
    h.table.request_download(chunk(1), None);
    h.table.request_download(chunk(2), None);
    let _first = single(h.work());
    h.table.request_delete([2; 32]);
    assert_eq!(h.state(2), None);
    h.table.job_finished([1; 32], committed(1));
    assert!(h.work().is_empty(), "the unqueued chunk must not start");
}

#[test]
fn delete_while_downloading_cancels_and_forgets_after_cleanup() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    let Work::Download { cancel, .. } = single(h.work()) else {
        panic!("a download")
    };
    h.table.request_delete([1; 32]);
    assert!(cancel.is_cancelled());
    assert!(h.table.try_reserve(&[1; 32], SIZE) == Reservation::Gone);
    h.table
        .job_finished([1; 32], Outcome::Download(DownloadOutcome::Cancelled));
    assert!(h.work().is_empty());
    assert_eq!(h.state(1), None);
    assert!(h.events().iter().any(|e| e.starts_with("❌")));
}

#[test]
fn download_after_cancel_requeues_once_the_cancelled_job_ends() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    h.table.request_delete([1; 32]);
    h.table.request_download(chunk(1), None);
    assert!(h.work().is_empty(), "one job per chunk at a time");
    h.table
        .job_finished([1; 32], Outcome::Download(DownloadOutcome::Cancelled));
    assert!(matches!(single(h.work()), Work::Download { .. }));
}

#[test]
fn delete_while_pinned_hides_records_and_removes_after_the_last_ref() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    h.table.job_finished([1; 32], committed(1));
    h.work();
    let pinned = h.table.shown(&[1; 32]).expect("ready");

    h.table.request_delete([1; 32]);
    assert!(pinned.is_hidden(), "hidden at once");
    assert!(h.table.shown(&[1; 32]).is_none());
    assert!(matches!(
        h.table.take_index_changes().0.as_slice(),
        [IndexChange::Hide(_)]
    ));
    assert!(matches!(single(h.work()), Work::WriteTombstone { .. }));
    h.table
        .job_finished([1; 32], Outcome::TombstoneWritten(Ok(())));
    assert!(h.work().is_empty(), "nothing is removed while pinned");
    assert!(h.events().iter().any(|e| e.starts_with("⌛️")));
    assert!(h.table.is_idle(), "waiting for refs is idle");

    drop(pinned);
    let Work::Remove { tombstone, .. } = single(h.work()) else {
        panic!("a removal")
    };
    assert!(tombstone);
    h.table.job_finished([1; 32], Outcome::Removed(Ok(())));
    h.work();
    assert_eq!(h.state(1), None);
    assert_eq!(h.table.totals().bytes_committed, 0);
}

#[test]
fn download_while_waiting_for_refs_shows_again_without_downloading() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    h.table.job_finished([1; 32], committed(1));
    h.work();
    let pinned = h.table.shown(&[1; 32]).expect("ready");
    h.table.request_delete([1; 32]);
    let _tombstone = single(h.work());
    h.table.request_download(chunk(1), None);
    assert!(!pinned.is_hidden());
    assert_eq!(h.state(1), Some("ready"));
    h.table
        .job_finished([1; 32], Outcome::TombstoneWritten(Ok(())));
    assert!(
        matches!(single(h.work()), Work::RemoveTombstone { .. }),
        "the record goes, no download"
    );
}

#[test]
fn revive_after_every_ref_is_gone_but_before_removal_keeps_the_files() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    h.table.job_finished([1; 32], committed(1));
    h.work();
    h.table.request_delete([1; 32]);
    // The release is in flight (not yet folded in) when the chunk is wanted again.
    h.table.request_download(chunk(1), None);
    assert_eq!(h.state(1), Some("ready"));
    assert!(h.work().is_empty(), "no removal and no download");
}

#[test]
fn download_while_removing_downloads_again_afterwards() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    h.table.job_finished([1; 32], committed(1));
    h.work();
    h.table.request_delete([1; 32]);
    assert!(matches!(single(h.work()), Work::Remove { .. }));
    h.table.request_download(chunk(1), None);
    assert_eq!(h.state(1), Some("deleting"));
    h.table.job_finished([1; 32], Outcome::Removed(Ok(())));
    assert!(matches!(single(h.work()), Work::Download { .. }));
}

#[test]
fn failed_chunk_is_tried_again_first_or_forgotten() {
    let mut h = Harness::new(100, 1);
    h.table.request_download(chunk(1), None);
    h.table.request_download(chunk(2), None);
    let _job = single(h.work());
    let error = Error::HttpStatus {
        chunk: [1; 32],
        file: "f".into(),
        url: "u".into(),
        status: 404,
    };
    h.table.job_finished(
        [1; 32],
        Outcome::Download(DownloadOutcome::Failed { error, attempts: 1 }),
    );
    assert_eq!(h.state(1), Some("failed"));
    let Work::Download { chunk: started, .. } = single(h.work()) else {
        panic!()
    };
    assert_eq!(started.id(), &[2; 32]);
    h.table.request_download(chunk(1), None);
    assert_eq!(h.state(1), Some("queued"));
    h.table.request_delete([1; 32]);
    assert_eq!(h.state(1), None);
}

#[test]
fn a_different_description_is_rejected_while_the_first_is_in_use() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    let other = Arc::new(DataChunk::new(
        [1; 32],
        [0; 32],
        0..5,
        [("g".into(), "http://x/".into())].into(),
    ));
    let refused = h.table.request_download(other, None).expect("refused");
    assert!(matches!(*refused, Error::Conflict { .. }));
    assert_eq!(h.state(1), Some("downloading"));
    assert!(h.table.status(&[1; 32]).and_then(|s| s.rejected).is_some());
    assert!(h.events().iter().any(|e| e.starts_with("⛔")));
}

#[test]
fn an_invalid_description_fails_the_chunk() {
    let mut h = Harness::new(100, 4);
    let refused = h
        .table
        .request_download(chunk(1), Some(InvalidChunk::NoFiles));
    assert!(matches!(
        refused.as_deref(),
        Some(Error::InvalidChunk { .. })
    ));
    assert_eq!(h.state(1), Some("failed"));
    assert!(h.work().is_empty());
}

#[test]
fn budget_makes_downloads_wait_until_deletions_free_space() {
    let mut h = Harness::new(2 * SIZE, 4);
    for id in 1..=2 {
        h.table.request_download(chunk(id), None);
    }
    for _ in h.work() {}
    for id in 1..=2 {
        assert_eq!(h.table.try_reserve(&[id; 32], SIZE), Reservation::Granted);
        h.table.job_finished([id; 32], committed(id));
    }
    h.table.request_download(chunk(3), None);
    let _job = single(h.work());
    assert_eq!(h.table.try_reserve(&[3; 32], SIZE), Reservation::NoSpace);
    h.table.job_finished(
        [3; 32],
        Outcome::Download(DownloadOutcome::NeedsSpace { size: SIZE }),
    );
    assert!(h.work().is_empty());
    assert_eq!(h.state(3), Some("waiting_for_space"));
    assert!(h.events().iter().any(|e| e.starts_with("🚫")));
    assert!(h.table.is_idle());

    h.table.request_delete([1; 32]);
    let removal = single(h.work());
    assert!(matches!(removal, Work::Remove { .. }));
    h.table.job_finished([1; 32], Outcome::Removed(Ok(())));
    let Work::Download { reserved, .. } = single(h.work()) else {
        panic!("admitted")
    };
    assert_eq!(reserved, Some(SIZE), "reserved at admission");
    let totals = h.table.totals();
    assert!(totals.bytes_committed + totals.bytes_reserved <= totals.disk_budget);
}

#[test]
fn a_chunk_larger_than_the_budget_fails() {
    let mut h = Harness::new(SIZE, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    assert_eq!(
        h.table.try_reserve(&[1; 32], SIZE + 1),
        Reservation::TooLarge { budget: SIZE }
    );
}

#[derive(Debug, Clone)]
enum Op {
    Download(u8),
    Delete(u8),
    TakeRef(u8),
    DropRef(usize),
    /// Finish the n-th running job (modulo the number running).
    Finish(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4).prop_map(Op::Download),
        2 => (0u8..4).prop_map(Op::Delete),
        1 => (0u8..4).prop_map(Op::TakeRef),
        1 => any::<usize>().prop_map(Op::DropRef),
        4 => any::<usize>().prop_map(Op::Finish),
    ]
}

/// Completes a job the way the real one would.
fn finish(h: &mut Harness, work: Work, refs: &[Arc<Resident>]) {
    match work {
        Work::Download { chunk, cancel, .. } => {
            let id = *chunk.id();
            let outcome = if cancel.is_cancelled() {
                Outcome::Download(DownloadOutcome::Cancelled)
            } else {
                match h.table.try_reserve(&id, SIZE) {
                    Reservation::Granted => committed(id[0]),
                    Reservation::NoSpace => {
                        Outcome::Download(DownloadOutcome::NeedsSpace { size: SIZE })
                    }
                    Reservation::Gone => Outcome::Download(DownloadOutcome::Cancelled),
                    Reservation::TooLarge { .. } => panic!("the budget fits one chunk"),
                }
            };
            h.table.job_finished(id, outcome);
        }
        Work::Remove { chunk, .. } => {
            assert!(
                refs.iter().all(|resident| resident.chunk.id() != &chunk),
                "removed files under a held ref"
            );
            h.table.job_finished(chunk, Outcome::Removed(Ok(())));
        }
        Work::WriteTombstone { chunk } => h
            .table
            .job_finished(chunk, Outcome::TombstoneWritten(Ok(()))),
        Work::RemoveTombstone { chunk } => h
            .table
            .job_finished(chunk, Outcome::TombstoneRemoved(Ok(()))),
    }
}

fn job_chunk(work: &Work) -> ChunkId {
    match work {
        Work::Download { chunk, .. } => *chunk.id(),
        Work::Remove { chunk, .. }
        | Work::WriteTombstone { chunk }
        | Work::RemoveTombstone { chunk } => *chunk,
    }
}

proptest! {
    /// Whatever the order of calls, job completions and ref drops: one job per chunk at a
    /// time, nothing removed under a ref, the budget holds, deleted chunks are hidden at once,
    /// and after quiescence the visible set is exactly the desired set.
    #[test]
    fn converges_to_the_last_call_for_each_chunk(ops in prop::collection::vec(op(), 1..80), budget_chunks in 2u64..5) {
        let mut h = Harness::new(budget_chunks * SIZE, 2);
        let mut wanted: HashMap<u8, bool> = HashMap::new();
        let mut running: Vec<Work> = Vec::new();
        let mut refs: Vec<Arc<Resident>> = Vec::new();
        for op in ops {
            match op {
                Op::Download(id) => {
                    h.table.request_download(chunk(id), None);
                    wanted.insert(id, true);
                }
                Op::Delete(id) => {
                    h.table.request_delete([id; 32]);
                    wanted.insert(id, false);
                    prop_assert!(h.table.shown(&[id; 32]).is_none(), "hidden at once");
                    prop_assert!(refs.iter().filter(|r| r.chunk.id()[0] == id).all(|r| r.is_hidden()));
                }
                Op::TakeRef(id) => refs.extend(h.table.shown(&[id; 32])),
                Op::DropRef(n) => {
                    if !refs.is_empty() {
                        refs.swap_remove(n % refs.len());
                    }
                }
                Op::Finish(n) => {
                    if !running.is_empty() {
                        let work = running.swap_remove(n % running.len());
                        finish(&mut h, work, &refs);
                    }
                }
            }
            running.extend(h.work());
            let mut ids: Vec<_> = running.iter().map(job_chunk).collect();
            ids.sort();
            let before = ids.len();
            ids.dedup();
            prop_assert_eq!(before, ids.len(), "two jobs for one chunk");
            let totals = h.table.totals();
            prop_assert!(totals.bytes_committed + totals.bytes_reserved <= totals.disk_budget);
        }
        refs.clear();
        // Quiesce. Chunks that cannot fit stay waiting for space; give room by finishing.
        for _ in 0..1000 {
            running.extend(h.work());
            let Some(work) = running.pop() else { break };
            finish(&mut h, work, &refs);
        }
        prop_assert!(running.is_empty());
        prop_assert!(h.table.is_idle());
        let visible = wanted.iter().filter(|&(&id, _)| h.table.shown(&[id; 32]).is_some()).count();
        for (&id, &wanted) in &wanted {
            let state = h.state(id);
            if wanted {
                prop_assert!(
                    matches!(state, Some("ready") | Some("waiting_for_space")),
                    "chunk {} wanted but {:?}", id, state
                );
            } else {
                prop_assert_eq!(state, None, "chunk {} deleted but known", id);
            }
        }
        let ready = wanted.values().filter(|&&w| w).count().min(budget_chunks as usize);
        prop_assert_eq!(visible, ready, "as many wanted chunks visible as the budget allows");
        prop_assert_eq!(h.table.totals().bytes_committed, visible as u64 * SIZE);
    }
}
