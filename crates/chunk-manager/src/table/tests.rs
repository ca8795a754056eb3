//! The table without IO: each row of the semantics table, the budget, and a model-based
//! property test over arbitrary interleavings of calls, job completions and ref drops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use tokio::sync::{broadcast, mpsc};

use crate::event::Emitter;
use crate::handle::{ChunkRef, Releases};

use super::*;

const SIZE: u64 = 10;

struct Harness {
    table: Table,
    released: mpsc::UnboundedReceiver<Released>,
    events: broadcast::Receiver<Event>,
    /// Where the table's effects are carried out, as the reconciler does.
    emitter: Emitter,
    visible_version: AtomicU64,
    hides: arc_swap::ArcSwap<crate::index::Hides>,
    releases: Releases,
}

impl Harness {
    fn new(budget: u64, slots: usize) -> Self {
        Self::with_fetch_slots(budget, slots, 0)
    }

    fn with_fetch_slots(budget: u64, slots: usize, fetch_slots: usize) -> Self {
        let events = Emitter::new(1024);
        let receiver = events.subscribe();
        let (sender, released) = Releases::channel();
        Self {
            table: Table::new(budget, slots, fetch_slots, sender.clone()),
            released,
            events: receiver,
            emitter: events,
            visible_version: AtomicU64::new(0),
            hides: Default::default(),
            releases: sender,
        }
    }

    /// Carries out the table's effects so far, as the manager does when it releases the lock.
    fn apply(&mut self) {
        crate::reconciler::apply(
            self.table.take_effects(),
            &self.emitter,
            &self.visible_version,
            &self.hides,
            &self.releases,
        );
    }

    /// The events sent so far.
    fn drain(&mut self) -> Vec<Event> {
        self.apply();
        drain(&mut self.events)
    }

    /// One reconciler turn: fold in releases, take the jobs, publish (here: drop) the
    /// visibility changes; and another while the table asks for one (after an eviction), as
    /// the reconciler does. Cached marks are bookkeeping: written at once (see
    /// `cached_marks_follow_the_desire` for them).
    fn work(&mut self) -> Vec<Work> {
        let mut work = Vec::new();
        loop {
            self.apply();
            while let Ok(release) = self.released.try_recv() {
                self.table.released(release);
            }
            for job in self.table.next_work() {
                match job {
                    Work::SetCachedMark { chunk, cached } => self.table.job_finished(
                        chunk,
                        Outcome::CachedMarked {
                            cached,
                            result: Ok(()),
                        },
                    ),
                    job => work.push(job),
                }
            }
            self.table.take_index_changes();
            self.apply();
            self.table.check_invariants();
            if !self.table.needs_turn() {
                return work;
            }
        }
    }

    fn events(&mut self) -> Vec<String> {
        self.apply();
        for event in self.table.take_after_publish() {
            self.emitter.emit(event);
        }
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
    assert!(
        !cancel.is_cancelled(),
        "the table asks for the cancellation, it does not cancel"
    );
    assert!(h.table.try_reserve(&[1; 32], SIZE) == Reservation::Gone);
    let effects = h.table.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::Cancel(_)]),
        "{effects:?}"
    );
    crate::reconciler::apply(
        effects,
        &h.emitter,
        &h.visible_version,
        &h.hides,
        &h.releases,
    );
    assert!(cancel.is_cancelled());
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
    h.apply();
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
    h.apply();
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

/// Issue 10 (the Phase enum): an invalid description replacing a queued one fails the chunk
/// and takes it out of the queue. With separate flags it stayed queued with a failure and its
/// invalid description was downloaded.
#[test]
fn issue10_an_invalid_description_replacing_a_queued_one_is_not_downloaded() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    assert_eq!(h.state(1), Some("queued"));
    let without_files = Arc::new(DataChunk::new(
        [1; 32],
        [0; 32],
        100..200,
        Default::default(),
    ));
    let refused = h
        .table
        .request_download(without_files, Some(InvalidChunk::NoFiles));
    assert!(matches!(
        refused.as_deref(),
        Some(Error::InvalidChunk { .. })
    ));
    assert_eq!(h.state(1), Some("failed"));
    assert!(
        h.work().is_empty(),
        "the invalid description is not downloaded"
    );
    assert_eq!(h.state(1), Some("failed"));
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

// Queries: fetch, priority, cache, eviction.

fn fetch(h: &mut Harness, id: u8) -> Fetch {
    h.table.request_fetch(chunk(id), None)
}

fn ticket(fetch: Fetch) -> FetchTicket {
    match fetch {
        Fetch::Pending(ticket) => ticket,
        other => panic!("expected a pending fetch, got {other:?}"),
    }
}

/// Runs a download job to its commit (reserving `SIZE`).
fn commit(h: &mut Harness, work: Work) {
    let Work::Download { chunk, .. } = work else {
        panic!("a download, got {work:?}")
    };
    let id = *chunk.id();
    assert_eq!(h.table.try_reserve(&id, SIZE), Reservation::Granted);
    h.table.job_finished(id, committed(id[0]));
}

/// Starts the one job the table has and commits it.
fn commit_next(h: &mut Harness) {
    let job = single(h.work());
    commit(h, job);
}

/// A cached chunk, ready: fetched, downloaded, and its fetch settled (not pinned).
fn cached_ready(h: &mut Harness, id: u8) {
    let waiting = ticket(fetch(h, id));
    commit_next(h);
    assert!(matches!(
        h.table.fetch_settled(&waiting),
        FetchState::Ready(_)
    ));
    h.work();
}

fn evicted(events: &[String]) -> usize {
    events.iter().filter(|e| e.starts_with("🧹")).count()
}

#[test]
fn fetch_of_an_unknown_chunk_downloads_it_as_cached() {
    let mut h = Harness::new(100, 4);
    let waiting = ticket(fetch(&mut h, 1));
    assert_eq!(h.state(1), Some("queued"));
    let status = h.table.status(&[1; 32]).expect("known");
    assert!(status.cached && !status.wanted);
    assert!(matches!(
        h.table.fetch_settled(&waiting),
        FetchState::Pending
    ));
    commit_next(&mut h);
    let FetchState::Ready(resident) = h.table.fetch_settled(&waiting) else {
        panic!("ready")
    };
    assert!(resident.is_cached());
    assert_eq!(h.state(1), Some("ready"));
    assert_eq!(h.table.totals().cached, 1);
    assert!(h.events().iter().any(|e| e.starts_with("✅")));
}

#[test]
fn fetch_of_a_ready_chunk_answers_at_once_and_keeps_it_assigned() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    commit_next(&mut h);
    assert!(matches!(fetch(&mut h, 1), Fetch::Ready(_)));
    let status = h.table.status(&[1; 32]).expect("known");
    assert!(
        status.wanted && !status.cached,
        "a fetch leaves an assigned chunk assigned"
    );
    assert!(h.work().is_empty());
}

#[test]
fn concurrent_fetches_share_one_download() {
    let mut h = Harness::new(100, 4);
    let first = ticket(fetch(&mut h, 1));
    let second = ticket(fetch(&mut h, 1));
    let job = single(h.work());
    assert!(
        matches!(fetch(&mut h, 1), Fetch::Pending(_)),
        "still downloading"
    );
    assert!(h.work().is_empty(), "no second download");
    commit(&mut h, job);
    assert!(matches!(
        h.table.fetch_settled(&first),
        FetchState::Ready(_)
    ));
    assert!(matches!(
        h.table.fetch_settled(&second),
        FetchState::Ready(_)
    ));
}

#[test]
fn fetches_go_ahead_of_background_downloads() {
    let mut h = Harness::new(100, 1);
    for id in 1..=3 {
        h.table.request_download(chunk(id), None);
    }
    let first = single(h.work());
    let _waiting = ticket(fetch(&mut h, 9));
    assert!(h.work().is_empty(), "no free slot");
    commit(&mut h, first);
    let Work::Download { chunk: next, .. } = single(h.work()) else {
        panic!("a download")
    };
    assert_eq!(
        next.id(),
        &[9; 32],
        "the query's chunk before the queued background ones"
    );
}

#[test]
fn a_fetch_moves_a_queued_background_chunk_ahead_once() {
    let mut h = Harness::new(100, 1);
    for id in 1..=3 {
        h.table.request_download(chunk(id), None);
    }
    let first = single(h.work());
    let _waiting = ticket(fetch(&mut h, 3));
    commit(&mut h, first);
    let next = single(h.work());
    assert_eq!(job_chunk(&next), [3; 32]);
    assert!(
        h.table.status(&[3; 32]).expect("known").wanted,
        "still assigned"
    );
    commit(&mut h, next);
    let last = single(h.work());
    assert_eq!(
        job_chunk(&last),
        [2; 32],
        "the stale copy in the background queue is skipped"
    );
    commit(&mut h, last);
    assert!(h.work().is_empty());
}

#[test]
fn fetch_slots_are_beyond_the_background_slots() {
    let mut h = Harness::with_fetch_slots(100, 1, 1);
    h.table.request_download(chunk(1), None);
    h.table.request_download(chunk(2), None);
    let _background = single(h.work());
    let _waiting = ticket(fetch(&mut h, 9));
    let Work::Download { chunk: started, .. } = single(h.work()) else {
        panic!("a download")
    };
    assert_eq!(started.id(), &[9; 32], "started at once on the fetch slot");
    let _other = ticket(fetch(&mut h, 8));
    assert!(h.work().is_empty(), "both slots taken");
}

#[test]
fn eviction_makes_room_least_recently_used_first() {
    let mut h = Harness::new(2 * SIZE, 4);
    cached_ready(&mut h, 1);
    cached_ready(&mut h, 2);
    // 1 used again: 2 is now the least recently used.
    assert!(matches!(fetch(&mut h, 1), Fetch::Ready(_)));
    h.events();

    h.table.request_download(chunk(3), None);
    let Work::Download { chunk: three, .. } = single(h.work()) else {
        panic!("a download")
    };
    assert_eq!(h.table.try_reserve(three.id(), SIZE), Reservation::NoSpace);
    assert!(h.table.shown(&[2; 32]).is_none(), "evicted: hidden at once");
    assert!(h.table.shown(&[1; 32]).is_some());
    h.table.job_finished(
        [3; 32],
        Outcome::Download(DownloadOutcome::NeedsSpace { size: SIZE }),
    );
    let events = h.events();
    assert_eq!(evicted(&events), 1, "{events:?}");
    assert!(
        !events.iter().any(|e| e.starts_with("🚫")),
        "room is coming: {events:?}"
    );

    let Work::Remove { chunk: removed, .. } = single(h.work()) else {
        panic!("a removal")
    };
    assert_eq!(removed, [2; 32]);
    h.table.job_finished([2; 32], Outcome::Removed(Ok(())));
    let Work::Download { reserved, .. } = single(h.work()) else {
        panic!("admitted")
    };
    assert_eq!(reserved, Some(SIZE));
    assert_eq!(h.state(2), None);
    assert!(h.events().iter().any(|e| e.starts_with("❌")));
}

#[test]
fn a_pinned_cached_chunk_is_not_evicted_until_unpinned() {
    let mut h = Harness::new(2 * SIZE, 4);
    cached_ready(&mut h, 1);
    cached_ready(&mut h, 2);
    let pin_one = ChunkRef::new(h.table.shown(&[1; 32]).expect("ready"));
    let pin_two = ChunkRef::new(h.table.shown(&[2; 32]).expect("ready"));
    h.events();

    h.table.request_download(chunk(3), None);
    let job = single(h.work());
    assert_eq!(h.table.try_reserve(&[3; 32], SIZE), Reservation::NoSpace);
    h.table.job_finished(
        [3; 32],
        Outcome::Download(DownloadOutcome::NeedsSpace { size: SIZE }),
    );
    drop(job);
    assert!(h.work().is_empty());
    let events = h.events();
    assert_eq!(evicted(&events), 0, "both pinned: {events:?}");
    assert!(events.iter().any(|e| e.starts_with("🚫")));
    assert_eq!(h.state(3), Some("waiting_for_space"));

    // The last pin of 2 drops: the reconciler hears of it and evicts 2, not the older 1.
    drop(pin_two);
    let Work::Remove { chunk: removed, .. } = single(h.work()) else {
        panic!("a removal")
    };
    assert_eq!(removed, [2; 32]);
    assert!(h.table.shown(&[1; 32]).is_some());
    drop(pin_one);
}

#[test]
fn assigned_chunks_are_never_evicted() {
    let mut h = Harness::new(2 * SIZE, 4);
    for id in 1..=2 {
        h.table.request_download(chunk(id), None);
        commit_next(&mut h);
    }
    let _waiting = ticket(fetch(&mut h, 3));
    let job = single(h.work());
    assert_eq!(h.table.try_reserve(&[3; 32], SIZE), Reservation::NoSpace);
    h.table.job_finished(
        [3; 32],
        Outcome::Download(DownloadOutcome::NeedsSpace { size: SIZE }),
    );
    drop(job);
    assert!(h.work().is_empty());
    assert_eq!(evicted(&h.events()), 0);
    assert_eq!(h.state(3), Some("waiting_for_space"));
    assert_eq!(h.table.totals().ready, 2);
}

#[test]
fn a_cached_chunk_that_gets_assigned_is_no_longer_evictable() {
    let mut h = Harness::new(2 * SIZE, 4);
    cached_ready(&mut h, 1);
    cached_ready(&mut h, 2);
    h.table.request_download(chunk(1), None);
    h.table.request_download(chunk(2), None);
    assert!(h.work().is_empty(), "no download: already on disk");
    let status = h.table.status(&[1; 32]).expect("known");
    assert!(status.wanted && !status.cached);
    let _waiting = ticket(fetch(&mut h, 3));
    let _job = single(h.work());
    assert_eq!(h.table.try_reserve(&[3; 32], SIZE), Reservation::NoSpace);
    assert_eq!(evicted(&h.events()), 0);
}

#[test]
fn a_chunk_a_fetch_waits_for_is_not_evicted() {
    let mut h = Harness::new(SIZE, 4);
    let waiting = ticket(fetch(&mut h, 1));
    commit_next(&mut h);
    // Ready, but its fetch has not picked it up yet.
    h.table.request_download(chunk(2), None);
    let _job = single(h.work());
    assert_eq!(h.table.try_reserve(&[2; 32], SIZE), Reservation::NoSpace);
    assert_eq!(evicted(&h.events()), 0);
    assert!(matches!(
        h.table.fetch_settled(&waiting),
        FetchState::Ready(_)
    ));
}

#[test]
fn delete_of_a_pinned_cached_chunk_removes_it_after_the_last_ref() {
    let mut h = Harness::new(100, 4);
    cached_ready(&mut h, 1);
    let pinned = ChunkRef::new(h.table.shown(&[1; 32]).expect("ready"));
    h.table.request_delete([1; 32]);
    assert!(h.table.shown(&[1; 32]).is_none(), "hidden at once");
    assert!(matches!(single(h.work()), Work::WriteTombstone { .. }));
    h.table
        .job_finished([1; 32], Outcome::TombstoneWritten(Ok(())));
    assert!(h.work().is_empty(), "kept while pinned");
    drop(pinned);
    assert!(matches!(single(h.work()), Work::Remove { .. }));
    h.table.job_finished([1; 32], Outcome::Removed(Ok(())));
    h.work();
    assert_eq!(h.state(1), None);
}

#[test]
fn fetch_of_a_deleted_chunk_still_on_disk_shows_it_again_as_cached() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    commit_next(&mut h);
    let pinned = ChunkRef::new(h.table.shown(&[1; 32]).expect("ready"));
    h.table.request_delete([1; 32]);
    let _tombstone = single(h.work());
    assert!(matches!(fetch(&mut h, 1), Fetch::Ready(_)), "no download");
    let status = h.table.status(&[1; 32]).expect("known");
    assert!(status.cached && !status.wanted);
    drop(pinned);
}

#[test]
fn a_deleted_chunk_fails_its_waiting_fetch() {
    let mut h = Harness::new(100, 4);
    let waiting = ticket(fetch(&mut h, 1));
    h.table.request_delete([1; 32]);
    assert!(matches!(h.table.fetch_settled(&waiting), FetchState::Gone));
    // A later entry of the same id is not touched by the stale ticket.
    let later = ticket(fetch(&mut h, 1));
    h.table.fetch_abandoned(&waiting);
    assert!(matches!(h.table.fetch_settled(&later), FetchState::Pending));
}

#[test]
fn an_abandoned_fetch_forgets_a_cached_chunk_not_yet_started() {
    let mut h = Harness::new(100, 1);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    let waiting = ticket(fetch(&mut h, 2));
    let again = ticket(fetch(&mut h, 2));
    h.table.fetch_abandoned(&waiting);
    assert_eq!(h.state(2), Some("queued"), "another fetch still waits");
    h.table.fetch_abandoned(&again);
    assert_eq!(h.state(2), None);
}

#[test]
fn a_failed_fetch_is_reported_and_tried_again_by_the_next() {
    let mut h = Harness::new(100, 4);
    let waiting = ticket(fetch(&mut h, 1));
    let _job = single(h.work());
    let error = Error::HttpStatus {
        chunk: [1; 32],
        file: "f".into(),
        url: "u".into(),
        status: 500,
    };
    h.table.job_finished(
        [1; 32],
        Outcome::Download(DownloadOutcome::Failed { error, attempts: 3 }),
    );
    assert!(matches!(
        h.table.fetch_settled(&waiting),
        FetchState::Failed(_)
    ));
    let _retry = ticket(fetch(&mut h, 1));
    assert!(matches!(single(h.work()), Work::Download { .. }));
}

#[test]
fn fetch_refuses_invalid_and_conflicting_descriptions_without_a_trace() {
    let mut h = Harness::new(100, 4);
    let refused = h.table.request_fetch(chunk(1), Some(InvalidChunk::NoFiles));
    assert!(matches!(refused, Fetch::Refused(_)));
    assert_eq!(h.state(1), None);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    let other = Arc::new(DataChunk::new(
        [1; 32],
        [0; 32],
        0..5,
        [("g".into(), "http://x/".into())].into(),
    ));
    assert!(matches!(
        h.table.request_fetch(other, None),
        Fetch::Refused(error) if matches!(*error, Error::Conflict { .. })
    ));
    assert_eq!(h.state(1), Some("downloading"));
}

#[test]
fn an_assignment_keeps_cached_chunks() {
    let mut h = Harness::new(100, 4);
    cached_ready(&mut h, 1);
    h.table.request_download(chunk(2), None);
    commit_next(&mut h);
    h.table.request_assignment(vec![(chunk(3), None)]);
    assert!(
        h.table.shown(&[1; 32]).is_some(),
        "cached: not part of the assignment"
    );
    assert!(h.table.shown(&[2; 32]).is_none(), "unassigned: deleted");
}

#[test]
fn waiting_fetches_claim_room_ahead_of_background_downloads() {
    let mut h = Harness::new(2 * SIZE, 4);
    cached_ready(&mut h, 1);
    let pinned = ChunkRef::new(h.table.shown(&[1; 32]).expect("ready"));
    // Both sizes are known from a first attempt that found no room.
    let _waiting = ticket(fetch(&mut h, 2));
    h.table.request_download(chunk(3), None);
    for job in h.work() {
        let Work::Download { chunk, .. } = job else {
            panic!("downloads")
        };
        let id = *chunk.id();
        let reservation = h.table.try_reserve(&id, 2 * SIZE);
        assert_eq!(reservation, Reservation::NoSpace);
        h.table.job_finished(
            id,
            Outcome::Download(DownloadOutcome::NeedsSpace { size: 2 * SIZE }),
        );
    }
    assert!(h.work().is_empty(), "neither fits while 1 is pinned");
    drop(pinned);
    // 1 is evicted for the fetch; the background chunk must not take the room.
    let work = h.work();
    assert!(matches!(work.as_slice(), [Work::Remove { chunk, .. }] if chunk == &[1; 32]));
    h.table.job_finished([1; 32], Outcome::Removed(Ok(())));
    let Work::Download { chunk: next, .. } = single(h.work()) else {
        panic!("a download")
    };
    assert_eq!(next.id(), &[2; 32]);
}

#[derive(Debug, Clone)]
enum Op {
    Download(u8),
    Delete(u8),
    /// A query's fetch; a pending one is kept as a ticket.
    Fetch(u8),
    /// Ask about the n-th pending fetch; a ready one becomes a ref.
    SettleFetch(usize),
    /// The n-th pending fetch gives up.
    AbandonFetch(usize),
    TakeRef(u8),
    DropRef(usize),
    /// Finish the n-th running job (modulo the number running).
    Finish(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5).prop_map(Op::Download),
        2 => (0u8..5).prop_map(Op::Delete),
        3 => (0u8..5).prop_map(Op::Fetch),
        2 => any::<usize>().prop_map(Op::SettleFetch),
        1 => any::<usize>().prop_map(Op::AbandonFetch),
        1 => (0u8..5).prop_map(Op::TakeRef),
        2 => any::<usize>().prop_map(Op::DropRef),
        5 => any::<usize>().prop_map(Op::Finish),
    ]
}

/// Completes a job the way the real one would.
fn finish(h: &mut Harness, work: Work, refs: &[ChunkRef]) {
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
                    Reservation::NoDiskSpace { .. } => panic!("no free space was given"),
                }
            };
            h.table.job_finished(id, outcome);
        }
        Work::Remove { chunk, .. } => {
            assert!(
                refs.iter().all(|held| held.id() != &chunk),
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
        Work::SetCachedMark { chunk, cached } => h.table.job_finished(
            chunk,
            Outcome::CachedMarked {
                cached,
                result: Ok(()),
            },
        ),
    }
}

fn job_chunk(work: &Work) -> ChunkId {
    match work {
        Work::Download { chunk, .. } => *chunk.id(),
        Work::Remove { chunk, .. }
        | Work::WriteTombstone { chunk }
        | Work::RemoveTombstone { chunk }
        | Work::SetCachedMark { chunk, .. } => *chunk,
    }
}

/// The model: what the last call (or an eviction) asked for each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wish {
    Assigned,
    Cached,
    Deleted,
}

proptest! {
    /// Whatever the order of calls, fetches, job completions and ref drops: one job per chunk
    /// at a time, nothing removed under a ref, the budget holds, deleted chunks are hidden at
    /// once, only unpinned cached chunks nobody waits for are evicted, and after quiescence
    /// the assigned chunks are visible as far as the budget allows (evicting cached ones), the
    /// deleted ones are gone and the cached ones are ready or gone.
    #[test]
    fn converges_to_the_last_call_for_each_chunk(ops in prop::collection::vec(op(), 1..100), budget_chunks in 2u64..5) {
        let mut h = Harness::with_fetch_slots(budget_chunks * SIZE, 2, 1);
        let mut wishes: HashMap<u8, Wish> = HashMap::new();
        let mut running: Vec<Work> = Vec::new();
        let mut refs: Vec<ChunkRef> = Vec::new();
        // Pending fetches, each with whether its chunk was deleted since.
        let mut tickets: Vec<(FetchTicket, bool)> = Vec::new();
        for op in ops {
            match op {
                Op::Download(id) => {
                    h.table.request_download(chunk(id), None);
                    wishes.insert(id, Wish::Assigned);
                }
                Op::Delete(id) => {
                    h.table.request_delete([id; 32]);
                    h.apply();
                    wishes.insert(id, Wish::Deleted);
                    for (ticket, deleted) in &mut tickets {
                        *deleted |= ticket.chunk == [id; 32];
                    }
                    prop_assert!(h.table.shown(&[id; 32]).is_none(), "hidden at once");
                    prop_assert!(refs.iter().filter(|r| r.id()[0] == id).all(|r| r.resident().is_hidden()));
                }
                Op::Fetch(id) => {
                    let wish = wishes.entry(id).or_insert(Wish::Deleted);
                    if *wish == Wish::Deleted {
                        *wish = Wish::Cached;
                    }
                    match h.table.request_fetch(chunk(id), None) {
                        Fetch::Ready(resident) => refs.push(ChunkRef::new(resident)),
                        Fetch::Pending(ticket) => tickets.push((ticket, false)),
                        Fetch::Refused(error) => prop_assert!(false, "refused: {error}"),
                    }
                }
                Op::SettleFetch(n) => {
                    if !tickets.is_empty() {
                        let n = n % tickets.len();
                        let (ticket, deleted) = tickets[n];
                        match h.table.fetch_settled(&ticket) {
                            FetchState::Pending => {}
                            FetchState::Ready(resident) => {
                                refs.push(ChunkRef::new(resident));
                                tickets.swap_remove(n);
                            }
                            FetchState::Gone => {
                                prop_assert!(deleted, "a fetch of chunk {} gone without a delete", ticket.chunk[0]);
                                tickets.swap_remove(n);
                            }
                            FetchState::Failed(error) => prop_assert!(false, "failed: {error}"),
                        }
                    }
                }
                Op::AbandonFetch(n) => {
                    if !tickets.is_empty() {
                        let (ticket, _) = tickets.swap_remove(n % tickets.len());
                        h.table.fetch_abandoned(&ticket);
                    }
                }
                Op::TakeRef(id) => refs.extend(h.table.shown(&[id; 32]).map(ChunkRef::new)),
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
            for event in h.drain() {
                if let Event::Evicted { chunk, .. } = event {
                    let id = chunk[0];
                    prop_assert_eq!(wishes.get(&id), Some(&Wish::Cached), "evicted chunk {} was not cached", id);
                    prop_assert!(refs.iter().all(|r| r.id() != &chunk), "evicted pinned chunk {}", id);
                    prop_assert!(tickets.iter().all(|(t, deleted)| *deleted || t.chunk != chunk), "evicted chunk {} a fetch waits for", id);
                    wishes.insert(id, Wish::Deleted);
                }
            }
            let mut ids: Vec<_> = running.iter().map(job_chunk).collect();
            ids.sort();
            let before = ids.len();
            ids.dedup();
            prop_assert_eq!(before, ids.len(), "two jobs for one chunk");
        }
        refs.clear();
        for (ticket, _) in tickets.drain(..) {
            h.table.fetch_abandoned(&ticket);
        }
        // Quiesce. Chunks that cannot fit stay waiting for space; give room by finishing.
        for _ in 0..1000 {
            running.extend(h.work());
            let Some(work) = running.pop() else { break };
            finish(&mut h, work, &refs);
        }
        for event in h.drain() {
            if let Event::Evicted { chunk, .. } = event {
                prop_assert_eq!(wishes.get(&chunk[0]), Some(&Wish::Cached));
                wishes.insert(chunk[0], Wish::Deleted);
            }
        }
        prop_assert!(running.is_empty());
        prop_assert!(h.table.is_idle());
        let mut assigned_visible = 0;
        for (&id, &wish) in &wishes {
            let state = h.state(id);
            let visible = h.table.shown(&[id; 32]).is_some();
            match wish {
                Wish::Assigned => {
                    // Queued only behind a chunk that waits for room at the front of the queue.
                    let behind_a_waiting_chunk = state == Some("queued")
                        && wishes.keys().any(|&other| h.state(other) == Some("waiting_for_space"));
                    prop_assert!(
                        matches!(state, Some("ready") | Some("waiting_for_space")) || behind_a_waiting_chunk,
                        "chunk {} assigned but {:?}", id, state
                    );
                    assigned_visible += usize::from(visible);
                }
                Wish::Cached => prop_assert!(
                    matches!(state, Some("ready") | None),
                    "chunk {} cached but {:?}", id, state
                ),
                Wish::Deleted => prop_assert_eq!(state, None, "chunk {} deleted but known", id),
            }
        }
        let assigned = wishes.values().filter(|&&w| w == Wish::Assigned).count();
        prop_assert_eq!(
            assigned_visible,
            assigned.min(budget_chunks as usize),
            "as many assigned chunks visible as the budget allows"
        );
        let visible = wishes.keys().filter(|&&id| h.table.shown(&[id; 32]).is_some()).count();
        prop_assert_eq!(h.table.totals().bytes_committed, visible as u64 * SIZE);
    }
}

fn drain(events: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    seen
}

#[test]
fn issue11_cached_marks_follow_the_desire() {
    let mut h = Harness::with_fetch_slots(100, 1, 1);
    let Fetch::Pending(_ticket) = h.table.request_fetch(chunk(1), None) else {
        panic!("an unknown chunk is downloaded");
    };
    assert!(matches!(single(h.table.next_work()), Work::Download { .. }));
    assert_eq!(h.table.try_reserve(&[1; 32], SIZE), Reservation::Granted);
    h.table.job_finished([1; 32], committed(1));
    // Ready and cached: the mark is written.
    let Work::SetCachedMark { cached: true, .. } = single(h.table.next_work()) else {
        panic!("a cached chunk gets its mark");
    };
    h.table.job_finished(
        [1; 32],
        Outcome::CachedMarked {
            cached: true,
            result: Ok(()),
        },
    );
    assert!(h.table.next_work().is_empty());
    // Assigned now: the mark goes.
    h.table.request_download(chunk(1), None);
    let Work::SetCachedMark { cached: false, .. } = single(h.table.next_work()) else {
        panic!("an assigned chunk loses its mark");
    };
    h.table.job_finished(
        [1; 32],
        Outcome::CachedMarked {
            cached: false,
            result: Ok(()),
        },
    );
    assert!(h.table.next_work().is_empty());

    // A chunk adopted with a mark is cached, evictable, and its removal takes the mark along.
    let mut h = Harness::new(100, 1);
    h.table
        .adopt(chunk(2), PathBuf::from("/chunks/2"), SIZE, true);
    let status = h.table.status(&[2; 32]).expect("adopted");
    assert!(status.cached && !status.wanted);
    assert!(
        h.table.next_work().is_empty(),
        "the mark is already on disk"
    );
    h.table.take_index_changes();
    h.table.request_delete([2; 32]);
    let Work::Remove {
        cached_mark: true, ..
    } = single(h.work())
    else {
        panic!("the removal removes the mark too");
    };
}

/// Issue 10 item 3: the filesystem's free space as a second budget.
fn needs_disk_space(size: u64, free: u64) -> Outcome {
    Outcome::Download(DownloadOutcome::NeedsDiskSpace { size, free })
}

fn progress_of(work: &Work) -> Arc<Progress> {
    match work {
        Work::Download { progress, .. } => progress.clone(),
        other => panic!("not a download: {other:?}"),
    }
}

#[test]
fn issue10_free_space_is_a_second_budget() {
    // The budget has room for everything; the disk has room for one and a half chunks.
    let mut h = Harness::new(100 * SIZE, 4);
    for id in 1..=2 {
        h.table.request_download(chunk(id), None);
    }
    let jobs = h.work();
    assert_eq!(jobs.len(), 2);
    let free = SIZE + SIZE / 2;
    assert_eq!(
        h.table.try_reserve_within(&[1; 32], SIZE, Some(free)),
        Reservation::Granted
    );
    // Chunk 1 has written nothing yet: all of its bytes are still to come.
    assert_eq!(
        h.table.try_reserve_within(&[2; 32], SIZE, Some(free)),
        Reservation::NoDiskSpace { free: SIZE / 2 }
    );
    h.table
        .job_finished([2; 32], needs_disk_space(SIZE, SIZE / 2));
    assert!(h.work().is_empty(), "waits out of the queues");
    assert_eq!(h.state(2), Some("waiting_for_space"));
    let status = h.table.status(&[2; 32]).expect("known");
    assert!(
        matches!(status.state, ChunkState::WaitingForSpace { needed: SIZE, available } if available == SIZE / 2),
        "{:?}",
        status.state
    );
    assert_eq!(h.table.totals().waiting_for_space, 1);
    assert_eq!(h.table.totals().failed, 0);
    assert!(h.events().iter().any(|e| e.starts_with("🚫")));
    assert!(h.table.waiting_for_disk());

    // Chunk 1 is written and committed: the disk's free space is what is left.
    progress_of(&jobs[0]).add(SIZE);
    h.table.job_finished([1; 32], committed(1));
    assert!(
        h.work().is_empty(),
        "nothing in the table says the disk has room"
    );
    h.table.disk_space(SIZE / 2);
    assert!(h.work().is_empty(), "still does not fit");
    assert_eq!(h.state(2), Some("waiting_for_space"));
    // Space freed outside the manager: the next reading queues the chunk again.
    h.table.disk_space(SIZE);
    let Work::Download { reserved, .. } = single(h.work()) else {
        panic!("admitted")
    };
    assert_eq!(reserved, Some(SIZE));
    assert!(!h.table.waiting_for_disk());
    assert_eq!(
        h.table.try_reserve_within(&[2; 32], SIZE, Some(SIZE)),
        Reservation::Granted
    );
    h.table.job_finished([2; 32], committed(2));
    assert_eq!(h.state(2), Some("ready"));
}

#[test]
fn issue10_bytes_already_written_are_not_counted_twice() {
    let mut h = Harness::new(100 * SIZE, 4);
    for id in 1..=2 {
        h.table.request_download(chunk(id), None);
    }
    let jobs = h.work();
    assert_eq!(
        h.table.try_reserve_within(&[1; 32], SIZE, Some(2 * SIZE)),
        Reservation::Granted
    );
    // Chunk 1 wrote half its bytes: the disk shows them used already, and only the other
    // half is still to come.
    progress_of(&jobs[0]).add(SIZE / 2);
    let free = 2 * SIZE - SIZE / 2;
    assert_eq!(
        h.table.try_reserve_within(&[2; 32], SIZE, Some(free)),
        Reservation::Granted
    );
    // Both granted: a third chunk finds what both still have to write subtracted.
    h.table.request_download(chunk(3), None);
    let _job = single(h.work());
    assert_eq!(
        h.table.try_reserve_within(&[3; 32], SIZE, Some(free)),
        Reservation::NoDiskSpace { free: 0 }
    );
    // A download that ends stops counting.
    h.table
        .job_finished([2; 32], Outcome::Download(DownloadOutcome::Cancelled));
    assert_eq!(
        h.table.try_reserve_within(&[3; 32], SIZE, Some(free)),
        Reservation::Granted
    );
}

#[test]
fn issue10_a_full_disk_mid_download_waits_and_is_not_an_attempt() {
    let mut h = Harness::new(100 * SIZE, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    assert_eq!(
        h.table.try_reserve_within(&[1; 32], SIZE, Some(10 * SIZE)),
        Reservation::Granted
    );
    // ENOSPC while writing: the job ends and the reservation is released.
    h.table.job_finished([1; 32], needs_disk_space(SIZE, 0));
    assert_eq!(h.table.totals().bytes_reserved, 0);
    assert!(h.work().is_empty());
    assert_eq!(h.state(1), Some("waiting_for_space"));
    // A download call again, an assignment refreshed: it keeps waiting, without a new try.
    assert!(h.table.download_is_noop(&chunk(1)));
    h.table.request_download(chunk(1), None);
    assert!(h.work().is_empty());
    // Repeated waits are announced once.
    h.table.disk_space(SIZE);
    let _job = single(h.work());
    h.table.job_finished([1; 32], needs_disk_space(SIZE, 0));
    let events = h.events();
    assert_eq!(
        events.iter().filter(|e| e.starts_with("🚫")).count(),
        1,
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.starts_with("⚠")), "{events:?}");
    h.table.disk_space(SIZE);
    let _job = single(h.work());
    assert_eq!(
        h.table.try_reserve_within(&[1; 32], SIZE, Some(SIZE)),
        Reservation::Granted
    );
    h.table.job_finished([1; 32], committed(1));
    assert_eq!(h.state(1), Some("ready"));
    assert!(!h.table.waiting_for_disk());
}

#[test]
fn issue10_disk_space_queues_the_waiting_chunks_that_fit_oldest_first() {
    let mut h = Harness::new(100 * SIZE, 4);
    let sizes = [(1, 3 * SIZE), (2, SIZE), (3, SIZE), (4, SIZE)];
    for (id, _) in sizes {
        h.table.request_download(chunk(id), None);
    }
    assert_eq!(h.work().len(), 4);
    for (id, size) in sizes {
        assert_eq!(
            h.table.try_reserve_within(&[id; 32], size, Some(0)),
            Reservation::NoDiskSpace { free: 0 }
        );
        h.table.job_finished([id; 32], needs_disk_space(size, 0));
    }
    assert!(h.work().is_empty());
    // Deleted while waiting: forgotten, not queued again.
    h.table.request_delete([4; 32]);
    assert!(h.work().is_empty());
    // Room for two small ones: the large one waits on, without holding them back.
    h.table.disk_space(2 * SIZE);
    let started: Vec<ChunkId> = h
        .work()
        .iter()
        .map(|work| match work {
            Work::Download { chunk, .. } => *chunk.id(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(started, vec![[2; 32], [3; 32]]);
    assert_eq!(h.state(1), Some("waiting_for_space"));
    assert!(h.table.waiting_for_disk());
    assert!(h.table.status(&[4; 32]).is_none());
}

#[test]
fn issue10_a_full_disk_evicts_cached_chunks() {
    let mut h = Harness::with_fetch_slots(100 * SIZE, 4, 0);
    // A cached chunk takes disk space.
    let Fetch::Pending(ticket) = h.table.request_fetch(chunk(1), None) else {
        panic!("downloaded");
    };
    let _job = single(h.work());
    assert_eq!(
        h.table.try_reserve_within(&[1; 32], SIZE, Some(SIZE)),
        Reservation::Granted
    );
    h.table.job_finished([1; 32], committed(1));
    assert!(h.work().is_empty());
    assert!(matches!(
        h.table.fetch_settled(&ticket),
        FetchState::Ready(_)
    ));
    // An assigned chunk does not fit on the disk: the cached one goes for it.
    h.table.request_download(chunk(2), None);
    let _job = single(h.work());
    assert_eq!(
        h.table.try_reserve_within(&[2; 32], SIZE, Some(0)),
        Reservation::NoDiskSpace { free: 0 }
    );
    assert!(h.table.shown(&[1; 32]).is_none(), "evicted");
    assert!(h.events().iter().any(|e| e.starts_with("🧹")));
}

/// Issue 10: the table is pure. Deleting a ready pinned chunk asks, as effects, to hide it
/// (flag, index, version) and starts no removal until its last ref is released; the table
/// itself has touched neither the resident nor the index.
#[test]
fn issue10_delete_of_a_pinned_ready_chunk_yields_hide_and_no_removal_until_release() {
    let mut h = Harness::new(100, 4);
    h.table.request_download(chunk(1), None);
    let _job = single(h.work());
    h.table.job_finished([1; 32], committed(1));
    h.work();
    let pinned = ChunkRef::new(h.table.shown(&[1; 32]).expect("ready"));
    let version = h.table.index_version();

    h.table.request_delete([1; 32]);
    assert!(
        !pinned.resident().is_hidden(),
        "effects are not carried out by the table"
    );
    let effects = h.table.take_effects();
    assert!(
        effects.iter().any(|effect| matches!(
            effect,
            Effect::SetHidden { resident, hidden: true } if Arc::ptr_eq(resident, pinned.resident())
        )),
        "{effects:?}"
    );
    assert!(
        matches!(effects.last(), Some(Effect::VisibleVersion(v)) if *v == version + 1),
        "{effects:?}"
    );
    assert!(
        !effects
            .iter()
            .any(|effect| matches!(effect, Effect::Emit(_) | Effect::Cancel(_))),
        "{effects:?}"
    );
    let (changes, published) = h.table.take_index_changes();
    assert!(
        matches!(changes.as_slice(), [IndexChange::Hide(key)] if key.2 == [1; 32]),
        "{changes:?}"
    );
    assert_eq!(published, version + 1);
    crate::reconciler::apply(
        effects,
        &h.emitter,
        &h.visible_version,
        &h.hides,
        &h.releases,
    );
    assert!(pinned.resident().is_hidden());

    // Pinned: a tombstone, no removal.
    assert!(matches!(single(h.work()), Work::WriteTombstone { .. }));
    h.table
        .job_finished([1; 32], Outcome::TombstoneWritten(Ok(())));
    assert!(h.work().is_empty(), "no removal while a ref holds it");
    drop(pinned);
    assert!(matches!(
        single(h.work()),
        Work::Remove {
            tombstone: true,
            ..
        }
    ));
}
