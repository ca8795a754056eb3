//! The reconciler: the one task that turns the table's wishes into jobs and publishes the
//! lookup index.
//!
//! # Overview
//!
//! [`Shared`] is what API calls, jobs and the reconciler share: the table behind a mutex, the
//! published index, the event channel and the wake-ups. API calls change the table and wake
//! the reconciler; they never wait for it. Each turn of [`run`] folds in finished jobs and
//! released refs, asks the table for new work, rebuilds the index if the visible set changed,
//! spawns the jobs, and tells waiters that something changed.
//!
//! # Concurrency
//!
//! The table lock is a `std::sync::Mutex` held for in-memory steps only; no IO and no await
//! happens under it. The table is pure: the effects its transitions record (events,
//! cancellations, residents' flags, the visible version) are carried out here, by [`apply`],
//! when a [`TableGuard`] is dropped, still under the lock. The index is rebuilt outside the lock from the reconciler's own ordered
//! map of visible chunks and swapped in atomically.
//!
//! # Cancellation
//!
//! Shutdown cancels the token: the loop stops starting work, cancels the downloads, waits for
//! every job (tracked by a `TaskTracker`), then makes every requested deletion durable (a
//! removal, or a tombstone for a chunk still pinned) and emits the shutdown event.
//!
//! # Failures
//!
//! A disk job that fails (a removal, a tombstone) is retried after an exponential backoff
//! until it succeeds or the chunk is requested again. If the loop itself fails (a bug: a
//! panic), [`supervise_loop`] records the failure in [`Shared`], which turns every waiter's
//! wait into an error and the manager's health red, instead of leaving them waiting forever.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chunk::{ChunkId, ShortId};
use crate::config::Config;
use crate::disk::Layout;
use crate::download::DownloadJob;
use crate::error::Error;
use crate::event::{Emitter, Event};
use crate::handle::{Released, Releases, Resident};
use crate::index::{Hides, Index, Retire, Retired};
use crate::table::{
    DownloadOutcome, Effect, IndexChange, IndexKey, IoRetry, Outcome, Reservation, Table, Work,
};

/// State shared by the API, the reconciler and the jobs. Owned through `Arc`.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) layout: Layout,
    /// Where files come from: one pooled HTTP client, one object store client per bucket.
    pub(crate) sources: crate::source::Sources,
    table: Mutex<Table>,
    /// The releases channel, whose in-flight count [`apply`] lowers.
    releases: Releases,
    /// The visible chunks, for lock-free lookups.
    pub(crate) index: ArcSwap<Index>,
    /// Where a dropped snapshot sends its contents, to be freed by the reconciler.
    retire: Retire,
    /// The table's visible-set version, for lock-free `list_chunks` (see
    /// [`Effect::VisibleVersion`]).
    pub(crate) visible_version: AtomicU64,
    /// The chunks hidden since the last published snapshot, for lock-free `list_chunks` (see
    /// [`Effect::Hidden`]).
    pub(crate) hides: ArcSwap<Hides>,
    /// The table's index version the published index reflects.
    published: AtomicU64,
    /// Wakes the reconciler after an API call.
    wake: Notify,
    /// Bumped after every change, for waiters.
    version: watch::Sender<u64>,
    events: Emitter,
    pub(crate) shutdown: CancellationToken,
    /// Set once if the reconciler loop failed; the manager is then stopped and unhealthy.
    failure: std::sync::OnceLock<Arc<Error>>,
    /// Test hook: makes the loop panic at its next turn, to test supervision.
    #[cfg(test)]
    pub(crate) panic_next_turn: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        layout: Layout,
        sources: crate::source::Sources,
        mut table: Table,
        index: Index,
        retire: Retire,
        events: Emitter,
    ) -> Self {
        let published = table.index_version();
        // The index is built at the table's version: what adopting chunks asked for is done.
        let _built_with_the_index = table.take_effects();
        let visible_version = AtomicU64::new(published);
        Self {
            config,
            layout,
            sources,
            releases: table.releases().clone(),
            table: Mutex::new(table),
            index: ArcSwap::from_pointee(index),
            retire,
            visible_version,
            hides: ArcSwap::default(),
            published: AtomicU64::new(published),
            wake: Notify::new(),
            version: watch::Sender::new(0),
            events,
            shutdown: CancellationToken::new(),
            failure: std::sync::OnceLock::new(),
            #[cfg(test)]
            panic_next_turn: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The reconciler's failure, if it failed: waiters return it instead of waiting.
    pub(crate) fn failure(&self) -> Option<Arc<Error>> {
        self.failure.get().cloned()
    }

    /// Locks the table. A panic under the lock cannot leave it half-changed in a way that
    /// matters more than stopping would, so a poisoned lock is used as is. The effects of the
    /// transitions made through the guard are carried out when it is dropped, before the lock
    /// is released (see [`apply`]).
    pub(crate) fn table(&self) -> TableGuard<'_> {
        TableGuard {
            table: self.table.lock().unwrap_or_else(PoisonError::into_inner),
            shared: self,
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// After an API call changed the table: wake the reconciler and the waiters.
    pub(crate) fn changed(&self) {
        self.wake.notify_one();
        self.bump();
    }

    fn bump(&self) {
        self.version
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Whether the published index includes every visibility change made so far.
    pub(crate) fn index_current(&self, table: &Table) -> bool {
        self.published.load(Ordering::Acquire) >= table.index_version()
    }

    /// See [`Table::try_reserve_within`]; `free`: the usable free space just read.
    pub(crate) fn try_reserve(&self, id: &ChunkId, size: u64, free: Option<u64>) -> Reservation {
        let reservation = self.table().try_reserve_within(id, size, free);
        self.changed();
        reservation
    }
}

/// The locked table. Dropping it carries out the effects of the transitions made through it
/// ([`apply`]), then releases the lock: every caller (the API, the reconciler, the jobs, the
/// scrub) has its effects carried out in the order the table recorded them, under the lock as
/// the table's own changes.
pub(crate) struct TableGuard<'a> {
    table: MutexGuard<'a, Table>,
    shared: &'a Shared,
}

impl std::ops::Deref for TableGuard<'_> {
    type Target = Table;

    fn deref(&self) -> &Table {
        &self.table
    }
}

impl std::ops::DerefMut for TableGuard<'_> {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.table
    }
}

impl Drop for TableGuard<'_> {
    fn drop(&mut self) {
        let effects = self.table.take_effects();
        if !effects.is_empty() {
            apply(
                effects,
                &self.shared.events,
                &self.shared.visible_version,
                &self.shared.hides,
                &self.shared.releases,
            );
        }
    }
}

/// Carries out the effects of table transitions, in order: the one place that sends the
/// table's events, cancels downloads, flips residents' flags and publishes the visible
/// version. Called with the table lock held (by [`TableGuard`]'s drop, and by tests).
pub(crate) fn apply(
    effects: Vec<Effect>,
    events: &Emitter,
    visible_version: &AtomicU64,
    hides: &ArcSwap<Hides>,
    releases: &Releases,
) {
    for effect in effects {
        match effect {
            Effect::Emit(event) => events.emit(event),
            Effect::Cancel(cancel) => cancel.cancel(),
            Effect::SetHidden { resident, hidden } => resident.set_hidden(hidden),
            Effect::SetCached { resident, cached } => resident.set_cached(cached),
            Effect::SetTotal { progress, total } => {
                progress.total.store(total, Ordering::Relaxed);
            }
            Effect::VisibleVersion(version) => visible_version.store(version, Ordering::Release),
            Effect::Hidden { version, key } => {
                hides.store(Arc::new(hides.load().with(version, key)))
            }
            Effect::HidesPublished(version) => {
                let listed = hides.load();
                if listed.since() < version {
                    hides.store(Arc::new(listed.published(version)));
                }
            }
            Effect::ReleaseFolded => releases.folded(),
        }
    }
}

/// The reconciler loop. Runs until `shared.shutdown` is cancelled and every job has ended.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut released: mpsc::UnboundedReceiver<Released>,
    mut visible: BTreeMap<IndexKey, Arc<Resident>>,
    mut retired: mpsc::UnboundedReceiver<Retired>,
) {
    let jobs = TaskTracker::new();
    let (done, mut finished) = mpsc::unbounded_channel::<(ChunkId, Outcome)>();
    let (retry_after_backoff, mut retries) = mpsc::unbounded_channel::<IoRetry>();
    // While chunks wait for disk space: one timer at a time, which reads the free space.
    let (free_space_read, mut free_space) = mpsc::unbounded_channel::<u64>();
    let mut disk_timer = false;
    let io_slots = Arc::new(Semaphore::new(shared.config.max_concurrent_io));
    jobs.spawn(crate::scrub::run(shared.clone(), shared.shutdown.clone()));
    loop {
        #[cfg(test)]
        if shared.panic_next_turn.swap(false, Ordering::Relaxed) {
            panic!("injected reconciler failure");
        }
        // Fold in what happened, then publish visibility changes before deciding work, so the
        // old snapshot's references to deleted chunks are gone when the table checks for refs.
        let (changes, events) = {
            let mut table = shared.table();
            fold(&mut table, &mut released, &mut finished);
            (table.take_index_changes(), table.take_after_publish())
        };
        publish(&shared, &mut visible, &mut retired, changes);
        events.into_iter().for_each(|event| shared.emit(event));
        let (work, changes, events, io_retries, waiting_for_disk) = {
            let mut table = shared.table();
            fold(&mut table, &mut released, &mut finished);
            let work = table.next_work();
            // An eviction during this turn left chunks to settle once the snapshot that still
            // holds them is replaced: take another turn right away.
            if table.needs_turn() {
                shared.wake.notify_one();
            }
            (
                work,
                table.take_index_changes(),
                table.take_after_publish(),
                table.take_io_retries(),
                table.waiting_for_disk(),
            )
        };
        publish(&shared, &mut visible, &mut retired, changes);
        events.into_iter().for_each(|event| shared.emit(event));
        for work in work {
            spawn_job(&jobs, &shared, &done, &io_slots, work);
        }
        for retry in io_retries {
            schedule_retry(&jobs, &shared, &retry_after_backoff, retry);
        }
        if waiting_for_disk && !disk_timer {
            disk_timer = true;
            schedule_free_space_read(&jobs, &shared, &free_space_read);
        }
        shared.bump();
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            Some(release) = released.recv() => shared.table().released(release),
            Some((id, outcome)) = finished.recv() => shared.table().job_finished(id, outcome),
            Some(retry) = retries.recv() => shared.table().retry_io(retry),
            // Freed here, not in the lookup that dropped the snapshot last; chunks it pinned
            // are released (and their removal follows).
            Some(snapshot) = retired.recv() => drop(snapshot),
            Some(free) = free_space.recv() => {
                disk_timer = false;
                shared.table().disk_space(free);
            }
            () = shared.wake.notified() => {}
        }
    }

    shared.table().begin_shutdown();
    shared.bump();
    jobs.close();
    // Wait for the running jobs, then record the deletions requested so far (a cancelled
    // download may have committed meanwhile, so look again after each round).
    loop {
        loop {
            tokio::select! {
                () = jobs.wait() => break,
                Some((id, outcome)) = finished.recv() => shared.table().job_finished(id, outcome),
            }
        }
        while let Ok((id, outcome)) = finished.try_recv() {
            shared.table().job_finished(id, outcome);
        }
        let work = shared.table().shutdown_work();
        if work.is_empty() {
            break;
        }
        for work in work {
            spawn_job(&jobs, &shared, &done, &io_slots, work);
        }
    }
    let (changes, events) = {
        let mut table = shared.table();
        (table.take_index_changes(), table.take_after_publish())
    };
    publish(&shared, &mut visible, &mut retired, changes);
    events.into_iter().for_each(|event| shared.emit(event));
    tracing::info!("chunk manager stopped");
    shared.emit(Event::Shutdown);
    shared.bump();
}

/// Runs the reconciler loop and supervises it: if it fails (panics), the failure is recorded
/// so that waiters return an error and health checks turn red, the manager stops taking work,
/// and the shutdown event still goes out.
pub(crate) async fn supervise_loop(
    shared: Arc<Shared>,
    run: impl Future<Output = ()> + Send + 'static,
) {
    let Err(join_error) = tokio::spawn(run).await else {
        return;
    };
    let message = if join_error.is_panic() {
        let panic = join_error.into_panic();
        panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string())
    } else {
        join_error.to_string()
    };
    tracing::error!(error = %message, "the chunk manager's reconciler failed; the manager is stopped");
    let _first_failure_wins = shared.failure.set(Arc::new(Error::Crashed { message }));
    shared.shutdown.cancel();
    shared.emit(Event::Shutdown);
    shared.bump();
}

/// After a disk job failed: waits the backoff, then asks the reconciler to try it again.
/// Shutdown ends the wait.
fn schedule_retry(
    jobs: &TaskTracker,
    shared: &Arc<Shared>,
    retry_after_backoff: &mpsc::UnboundedSender<IoRetry>,
    retry: IoRetry,
) {
    let delay = io_backoff(&shared.config, retry.failures);
    tracing::info!(
        chunk = %ShortId(&retry.chunk),
        failures = retry.failures,
        delay_ms = delay.as_millis() as u64,
        "disk operation will be retried"
    );
    let shutdown = shared.shutdown.clone();
    let sender = retry_after_backoff.clone();
    jobs.spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {
                // The reconciler ends only after its jobs, so the channel is open.
                let _reconciler_waits_for_jobs = sender.send(retry);
            }
        }
    });
}

/// While chunks wait for disk space: after [`Config::disk_space_poll`], reads the filesystem's
/// usable free space and sends it to the reconciler, which re-queues the chunks that fit.
/// Space freed by another process changes nothing the manager sees, hence a timer; the loop
/// arms one only while chunks wait. Shutdown ends the wait.
fn schedule_free_space_read(
    jobs: &TaskTracker,
    shared: &Arc<Shared>,
    free_space_read: &mpsc::UnboundedSender<u64>,
) {
    let shutdown = shared.shutdown.clone();
    let sender = free_space_read.clone();
    let delay = shared.config.disk_space_poll;
    let root = shared.layout.root.clone();
    let margin = shared.config.min_free_bytes;
    jobs.spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let path = root.clone();
        let read =
            tokio::task::spawn_blocking(move || crate::disk::usable_free_space(&path, margin))
                .await
                .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)));
        let free = read.unwrap_or_else(|error| {
            // Unknown: let the waiting downloads try; each checks again (or meets the full
            // disk again and waits).
            tracing::warn!(path = %root.display(), %error, "cannot read the free disk space");
            u64::MAX
        });
        // The reconciler ends only after its jobs, so the channel is open.
        let _reconciler_waits_for_jobs = sender.send(free);
    });
}

/// The wait before retrying a disk job that failed `failures` times in a row: exponential from
/// the download retry base delay, capped at its max delay, with jitter in the upper half.
fn io_backoff(config: &Config, failures: u32) -> std::time::Duration {
    let exponential = config
        .retry_base_delay
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(config.retry_max_delay);
    let half = exponential / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Folds released refs and finished jobs into the table.
fn fold(
    table: &mut Table,
    released: &mut mpsc::UnboundedReceiver<Released>,
    finished: &mut mpsc::UnboundedReceiver<(ChunkId, Outcome)>,
) {
    while let Ok(release) = released.try_recv() {
        table.released(release);
    }
    while let Ok((id, outcome)) = finished.try_recv() {
        table.job_finished(id, outcome);
    }
}

/// Applies visibility changes to the reconciler's ordered map and swaps in a new snapshot,
/// then records the version it reflects. The old snapshot drops here (or when its last reader
/// finishes), releasing the hidden chunks it held.
fn publish(
    shared: &Shared,
    visible: &mut BTreeMap<IndexKey, Arc<Resident>>,
    retired: &mut mpsc::UnboundedReceiver<Retired>,
    (changes, version): (Vec<IndexChange>, u64),
) {
    if !changes.is_empty() {
        for change in changes {
            match change {
                IndexChange::Show(resident) => {
                    visible.insert(crate::table::index_key(&resident.chunk), resident);
                }
                IndexChange::Hide(key) => {
                    visible.remove(&key);
                }
            }
        }
        shared.index.store(Arc::new(Index::build(
            visible,
            version,
            Some(shared.retire.clone()),
        )));
        // Unless a lookup still reads it, the old snapshot was just dropped: free it now, so
        // the deleted chunks it held are released before the table looks for refs.
        while let Ok(snapshot) = retired.try_recv() {
            drop(snapshot);
        }
    }
    shared.published.store(version, Ordering::Release);
}

/// A filesystem step of a disk job: the layout, the chunk and its path.
type LayoutOperation =
    Box<dyn FnOnce(&Layout, &ChunkId, &std::path::Path) -> std::io::Result<()> + Send>;

/// Spawns one job; its outcome comes back on `done`, even if it panics.
fn spawn_job(
    jobs: &TaskTracker,
    shared: &Arc<Shared>,
    done: &mpsc::UnboundedSender<(ChunkId, Outcome)>,
    io_slots: &Arc<Semaphore>,
    work: Work,
) {
    let layout_job =
        |chunk: ChunkId, action: &'static str, path: PathBuf, operation: LayoutOperation| {
            let shared = shared.clone();
            let io_slots = io_slots.clone();
            async move {
                let _slot = io_slots.acquire_owned().await;
                let error_path = path.clone();
                let result =
                    tokio::task::spawn_blocking(move || operation(&shared.layout, &chunk, &path))
                        .await
                        .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)));
                result.map_err(|source| Error::Io {
                    chunk,
                    action,
                    path: error_path,
                    source,
                })
            }
        };
    match work {
        Work::Download {
            chunk,
            cancel,
            progress,
            // Reserved at admission; the job reserves again with the free space it reads.
            reserved: _,
        } => {
            let id = *chunk.id();
            let job = DownloadJob {
                shared: shared.clone(),
                chunk,
                cancel,
                progress,
                writers: TaskTracker::new(),
            };
            supervise(
                jobs,
                done,
                id,
                async move { Outcome::Download(job.run().await) },
                |error| Outcome::Download(DownloadOutcome::Failed { error, attempts: 1 }),
            );
        }
        Work::Remove {
            chunk,
            path,
            tombstone,
            cached_mark,
        } => {
            let operation = move |layout: &Layout, id: &ChunkId, path: &std::path::Path| {
                remove(layout, path)?;
                if tombstone {
                    layout.remove_tombstone(id)?;
                }
                if cached_mark {
                    layout.set_cached_mark(id, false)?;
                }
                Ok(())
            };
            let job = layout_job(chunk, "remove", path, Box::new(operation));
            supervise(
                jobs,
                done,
                chunk,
                async move { Outcome::Removed(job.await) },
                |error| Outcome::Removed(Err(error)),
            );
        }
        Work::WriteTombstone { chunk } => {
            let job = layout_job(
                chunk,
                "record the deletion in",
                shared.layout.tombstone(&chunk),
                Box::new(|layout, id, _| layout.write_tombstone(id)),
            );
            supervise(
                jobs,
                done,
                chunk,
                async move { Outcome::TombstoneWritten(job.await) },
                |error| Outcome::TombstoneWritten(Err(error)),
            );
        }
        Work::RemoveTombstone { chunk } => {
            let job = layout_job(
                chunk,
                "remove the deletion record",
                shared.layout.tombstone(&chunk),
                Box::new(|layout, id, _| layout.remove_tombstone(id)),
            );
            supervise(
                jobs,
                done,
                chunk,
                async move { Outcome::TombstoneRemoved(job.await) },
                |error| Outcome::TombstoneRemoved(Err(error)),
            );
        }
        Work::SetCachedMark { chunk, cached } => {
            let job = layout_job(
                chunk,
                "record whether the chunk is cached in",
                shared.layout.cached_mark(&chunk),
                Box::new(move |layout, id, _| layout.set_cached_mark(id, cached)),
            );
            supervise(
                jobs,
                done,
                chunk,
                async move {
                    Outcome::CachedMarked {
                        cached,
                        result: job.await,
                    }
                },
                move |error| Outcome::CachedMarked {
                    cached,
                    result: Err(error),
                },
            );
        }
    }
}

fn remove(layout: &Layout, path: &std::path::Path) -> std::io::Result<()> {
    match layout.remove_dir(path) {
        // Already gone (removed by hand): the goal is reached.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// Runs a job in its own task so that a panic becomes a failed outcome, logs the outcome once,
/// and sends it to the reconciler.
fn supervise(
    jobs: &TaskTracker,
    done: &mpsc::UnboundedSender<(ChunkId, Outcome)>,
    id: ChunkId,
    job: impl Future<Output = Outcome> + Send + 'static,
    on_panic: impl FnOnce(Error) -> Outcome + Send + 'static,
) {
    let inner = jobs.spawn(job);
    let done = done.clone();
    jobs.spawn(async move {
        let outcome = match inner.await {
            Ok(outcome) => outcome,
            Err(join_error) => {
                tracing::error!(chunk = %ShortId(&id), error = %join_error, "job panicked");
                on_panic(Error::Internal {
                    chunk: id,
                    message: join_error.to_string(),
                })
            }
        };
        log_outcome(&id, &outcome);
        // The reconciler outlives every job, so the channel is open.
        let _reconciler_waits_for_jobs = done.send((id, outcome));
    });
}

fn log_outcome(id: &ChunkId, outcome: &Outcome) {
    let chunk = ShortId(id);
    match outcome {
        Outcome::Download(DownloadOutcome::Committed { path, size }) => {
            tracing::info!(%chunk, path = %path.display(), bytes = size, "chunk committed");
        }
        Outcome::Download(DownloadOutcome::Cancelled) => {
            tracing::info!(%chunk, "download cancelled")
        }
        Outcome::Download(DownloadOutcome::NeedsSpace { size }) => {
            tracing::info!(%chunk, bytes = size, "download waits for room in the disk budget");
        }
        Outcome::Download(DownloadOutcome::NeedsDiskSpace { size, free }) => {
            tracing::info!(
                %chunk,
                bytes = size,
                free,
                "download waits for free space on the filesystem"
            );
        }
        Outcome::Download(DownloadOutcome::Failed { error, attempts }) => {
            tracing::warn!(%chunk, attempts, error = %error.with_causes(), "download failed");
        }
        Outcome::Removed(Ok(())) => tracing::info!(%chunk, "chunk removed"),
        Outcome::TombstoneWritten(Ok(())) => tracing::debug!(%chunk, "deletion recorded"),
        Outcome::TombstoneRemoved(Ok(())) => tracing::debug!(%chunk, "deletion record removed"),
        Outcome::CachedMarked {
            cached,
            result: Ok(()),
        } => tracing::debug!(%chunk, cached, "cached mark recorded"),
        Outcome::Removed(Err(error))
        | Outcome::TombstoneWritten(Err(error))
        | Outcome::TombstoneRemoved(Err(error))
        | Outcome::CachedMarked {
            result: Err(error), ..
        } => {
            tracing::error!(%chunk, error = %error.with_causes(), "disk operation failed; retried after a backoff");
        }
    }
}
