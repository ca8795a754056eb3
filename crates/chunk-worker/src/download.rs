//! `chunk-worker download`: downloads the chunks listed in a JSON file into the data directory,
//! showing progress.
//!
//! # Overview
//!
//! The file holds chunk descriptions as the library serialises [`DataChunk`]: a JSON array, or
//! an object `{"chunks": [...]}`. Each is handed to [`ChunkManager::download_chunk`]; the
//! command ends when the manager is idle, that is when every chunk is ready or has failed (or
//! waits for room in the disk budget, which nothing in this process will free). It then shuts
//! the manager down gracefully, prints a summary on stdout and, if a chunk did not make it,
//! lists each one with its error on stderr and exits with 1.
//!
//! On a terminal, stderr shows one progress bar per chunk in flight and a total bar with bytes,
//! rate and ETA, redrawn from the chunks' status ten times a second; notable events print above
//! the bars. Otherwise (or with `--plain`) every event prints as one line on stdout.
//!
//! # Cancellation
//!
//! Ctrl-C (SIGINT) or SIGTERM shuts the manager down gracefully: running downloads are
//! cancelled and their partial files discarded (the next start of any command on the directory
//! removes what is left); committed chunks stay. The exit code is 130 (143 for SIGTERM).

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chunk_manager::{
    Bytes, ChunkId, ChunkManager, ChunkState, DataChunk, Event, ShortId, id_to_hex,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::offline::{self, print, print_err};
use crate::settings::ManagerArgs;

/// How often the progress bars are refreshed from the chunks' status.
const REFRESH: Duration = Duration::from_millis(100);

/// Options of `chunk-worker download`.
#[derive(Debug, Clone, clap::Args)]
pub struct DownloadArgs {
    /// A JSON file listing the chunks: an array of chunk descriptions
    /// (`{"id": HEX, "dataset_id": HEX, "block_range": {"start": N, "end": N}, "files": {NAME:
    /// URL}}`), or an object `{"chunks": [...]}`.
    #[arg(value_name = "FILE")]
    pub manifest: PathBuf,
    /// The manager's options (data directory, budget, concurrency, ...).
    #[command(flatten)]
    pub manager: ManagerArgs,
    /// Print one line per event instead of progress bars (the default when stderr is not a
    /// terminal).
    #[arg(long)]
    pub plain: bool,
}

/// Runs `chunk-worker download`: 0 when every chunk is ready, 1 when one is not, 130 on
/// Ctrl-C (143 on SIGTERM).
pub fn run(args: &DownloadArgs) -> anyhow::Result<ExitCode> {
    let chunks = load_manifest(&args.manifest)?;
    if chunks.is_empty() {
        print("the manifest lists no chunks; nothing to download\n");
        return Ok(ExitCode::SUCCESS);
    }
    let config = args.manager.resolve()?;
    let plain = args.plain || !std::io::stderr().is_terminal();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let manager = offline::open(config)?;
    let report = runtime.block_on(download(&manager, chunks, plain))?;
    Ok(report.finish())
}

/// The manifest file's two accepted shapes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    chunks: Vec<DataChunk>,
}

/// Reads and parses the manifest. Errors name the file and, for bad JSON, serde's line and
/// column. An id listed twice with different descriptions is refused here, since only one of
/// them could be downloaded.
fn load_manifest(path: &Path) -> anyhow::Result<Vec<DataChunk>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the manifest {}", path.display()))?;
    let parsed = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Wrapped>(&text).map(|wrapped| wrapped.chunks)
    } else {
        serde_json::from_str::<Vec<DataChunk>>(&text)
    };
    let listed = parsed.with_context(|| {
        format!(
            "invalid manifest {}: expected a JSON array of chunks or an object {{\"chunks\": \
             [...]}}",
            path.display()
        )
    })?;
    let mut chunks: Vec<DataChunk> = Vec::with_capacity(listed.len());
    let mut seen: HashMap<ChunkId, usize> = HashMap::new();
    for (position, chunk) in listed.into_iter().enumerate() {
        match seen.get(chunk.id()) {
            Some(&first) if chunks[first] == chunk => {}
            Some(&first) => bail!(
                "invalid manifest {}: chunk {} is listed twice with different descriptions \
                 (entries {} and {})",
                path.display(),
                id_to_hex(chunk.id()),
                first + 1,
                position + 1
            ),
            None => {
                seen.insert(*chunk.id(), chunks.len());
                chunks.push(chunk);
            }
        }
    }
    Ok(chunks)
}

/// Requests every chunk and shows progress until the manager is idle or a signal arrives,
/// then shuts the manager down.
async fn download(
    manager: &ChunkManager,
    chunks: Vec<DataChunk>,
    plain: bool,
) -> anyhow::Result<Report> {
    // Listening starts before the first request, so no signal falls between the two.
    let mut signals = Signals::listen();
    let mut events = manager.subscribe();
    let ids: Vec<ChunkId> = chunks.iter().map(|chunk| *chunk.id()).collect();
    let present: HashSet<ChunkId> = ids
        .iter()
        .filter(|id| manager.get_chunk(id).is_some())
        .copied()
        .collect();
    let fetching: Vec<ChunkId> = ids
        .iter()
        .filter(|id| !present.contains(*id))
        .copied()
        .collect();
    let mut progress = Progress::new(plain, fetching)?;
    let started = Instant::now();
    for chunk in chunks {
        manager.download_chunk(chunk);
    }

    let idle = manager.wait_idle();
    tokio::pin!(idle);
    let mut ticker = tokio::time::interval(REFRESH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut events_open = true;
    let interrupted = loop {
        tokio::select! {
            () = &mut idle => break None,
            code = signals.recv() => break Some(code),
            received = events.recv(), if events_open => match received {
                Ok(event) => progress.event(&event, manager),
                Err(RecvError::Lagged(missed)) => progress.lagged(missed),
                Err(RecvError::Closed) => events_open = false,
            },
            _ = ticker.tick() => progress.refresh(manager),
        }
    };
    if interrupted.is_some() {
        progress.note("interrupted: shutting down");
    }
    let outcomes: Vec<(ChunkId, Outcome)> = ids
        .iter()
        .map(|id| (*id, Outcome::of(manager, id, present.contains(id))))
        .collect();
    let elapsed = started.elapsed();
    manager.shutdown().await;
    // What happened between the last poll and the shutdown, ending with 🛑.
    loop {
        match events.try_recv() {
            Ok(event) => progress.event(&event, manager),
            Err(TryRecvError::Lagged(missed)) => progress.lagged(missed),
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    progress.finish();
    Ok(Report {
        outcomes,
        elapsed,
        interrupted,
    })
}

/// How one chunk of the manifest ended.
#[derive(Debug)]
enum Outcome {
    /// Downloaded by this run; its size.
    Downloaded(u64),
    /// Already in the data directory; its size.
    Present(u64),
    /// Still queued or downloading: the run was interrupted.
    Unfinished(&'static str),
    /// Not downloaded, and why.
    Failed(String),
}

impl Outcome {
    fn of(manager: &ChunkManager, id: &ChunkId, present: bool) -> Self {
        let Some(status) = manager.status(id) else {
            return Outcome::Failed("the manager lost track of the chunk".to_string());
        };
        if let Some(rejected) = &status.rejected {
            return Outcome::Failed(rejected.to_string());
        }
        match &status.state {
            ChunkState::Ready => {
                let bytes = manager.get_chunk(id).map_or(0, |chunk| chunk.size());
                if present {
                    Outcome::Present(bytes)
                } else {
                    Outcome::Downloaded(bytes)
                }
            }
            ChunkState::Failed { error, attempts } if *attempts > 1 => {
                Outcome::Failed(format!("{error} (after {attempts} attempts)"))
            }
            ChunkState::Failed { error, .. } => Outcome::Failed(error.to_string()),
            ChunkState::WaitingForSpace { needed, available } => Outcome::Failed(format!(
                "waits for room in the disk budget: needs {}, {} free (raise --disk-budget or \
                 delete chunks)",
                Bytes(*needed),
                Bytes(*available)
            )),
            other => Outcome::Unfinished(other.name()),
        }
    }
}

/// The end of a run: what to print and the exit code.
#[derive(Debug)]
struct Report {
    outcomes: Vec<(ChunkId, Outcome)>,
    elapsed: Duration,
    /// The exit code for the signal that interrupted the run.
    interrupted: Option<u8>,
}

impl Report {
    /// Prints the summary (stdout) and the failures (stderr); returns the exit code.
    fn finish(&self) -> ExitCode {
        let (mut downloaded, mut downloaded_bytes, mut present, mut present_bytes) = (0, 0, 0, 0);
        let mut failed = Vec::new();
        let mut unfinished = Vec::new();
        for (id, outcome) in &self.outcomes {
            match outcome {
                Outcome::Downloaded(bytes) => {
                    downloaded += 1;
                    downloaded_bytes += bytes;
                }
                Outcome::Present(bytes) => {
                    present += 1;
                    present_bytes += bytes;
                }
                Outcome::Unfinished(state) => unfinished.push((id, *state)),
                Outcome::Failed(reason) => failed.push((id, reason.clone())),
            }
        }
        let seconds = self.elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            (downloaded_bytes as f64 / seconds) as u64
        } else {
            0
        };
        let mut summary = format!(
            "downloaded {downloaded} chunks ({}) in {seconds:.1} s ({}/s)",
            Bytes(downloaded_bytes),
            Bytes(rate)
        );
        if present > 0 {
            summary.push_str(&format!(
                "; {present} already present ({})",
                Bytes(present_bytes)
            ));
        }
        if !failed.is_empty() {
            summary.push_str(&format!("; {} failed", failed.len()));
        }
        if !unfinished.is_empty() {
            summary.push_str(&format!("; {} unfinished", unfinished.len()));
        }
        print(format_args!("{summary}\n"));

        if let Some(code) = self.interrupted {
            print_err(format_args!(
                "interrupted: {} of {} chunks ready; partial downloads are discarded, run the \
                 command again to download the rest",
                downloaded + present,
                self.outcomes.len()
            ));
            return ExitCode::from(code);
        }
        for (id, state) in unfinished {
            // Not expected once the manager is idle; reported rather than passed as success.
            failed.push((id, format!("not finished: still {state}")));
        }
        if failed.is_empty() {
            return ExitCode::SUCCESS;
        }
        print_err(format_args!(
            "error: {} of {} chunks were not downloaded:",
            failed.len(),
            self.outcomes.len()
        ));
        for (id, reason) in failed {
            print_err(format_args!("  {}: {reason}", id_to_hex(id)));
        }
        ExitCode::FAILURE
    }
}

/// The signals that stop a run gracefully, listened to from the start of the run.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Starts listening. Must run inside the runtime. If a signal cannot be listened to, its
    /// default action (ending the process, which is crash-safe) stays, with a warning.
    #[cfg(unix)]
    fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, signal = name, "cannot listen for the signal");
                None
            }
        };
        Self {
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Starts listening (Ctrl-C only).
    #[cfg(not(unix))]
    fn listen() -> Self {
        Self {}
    }

    /// Waits for a signal; returns the exit code it calls for (128 + its number).
    #[cfg(unix)]
    async fn recv(&mut self) -> u8 {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            let received = match signal {
                Some(signal) => signal.recv().await,
                None => None,
            };
            if received.is_none() {
                // Not listening (or the runtime is going away): never fires.
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            () = next(&mut self.interrupt) => 130,
            () = next(&mut self.terminate) => 143,
        }
    }

    /// Waits for Ctrl-C; returns the exit code it calls for.
    #[cfg(not(unix))]
    async fn recv(&mut self) -> u8 {
        match tokio::signal::ctrl_c().await {
            Ok(()) => 130,
            Err(_) => std::future::pending().await,
        }
    }
}

/// What the operator sees during a run: progress bars on a terminal, or one line per event.
///
/// Owned by the run's loop; only the chunks this run downloads are drawn (those already
/// present are only counted in the summary).
struct Progress {
    /// `None` in plain mode.
    bars: Option<Bars>,
    /// The chunks this run downloads, in manifest order.
    fetching: Vec<ChunkId>,
    /// Sizes of the fetched chunks that are ready: they do not change again in this run.
    ready: HashMap<ChunkId, u64>,
}

/// The progress bars: one per chunk in flight, above a total bar.
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    chunk_style: ProgressStyle,
    in_flight: HashMap<ChunkId, ProgressBar>,
}

impl Progress {
    fn new(plain: bool, fetching: Vec<ChunkId>) -> anyhow::Result<Self> {
        let bars = if plain { None } else { Some(Bars::new()?) };
        Ok(Self {
            bars,
            fetching,
            ready: HashMap::new(),
        })
    }

    /// Shows an event: a line in plain mode; above the bars if it is notable, and a redraw.
    fn event(&mut self, event: &Event, manager: &ChunkManager) {
        let Some(bars) = &self.bars else {
            print(format_args!("{event}\n"));
            return;
        };
        let notable = matches!(
            event,
            Event::ChunkReady { .. }
                | Event::DownloadFailed { .. }
                | Event::Retrying { .. }
                | Event::BudgetExceeded { .. }
                | Event::Rejected { .. }
                | Event::IoFailed { .. }
                | Event::Shutdown
        );
        if notable {
            bars.println(&event.to_string());
        }
        if matches!(
            event,
            Event::ChunkReady { .. } | Event::DownloadFailed { .. } | Event::DownloadStarted { .. }
        ) {
            self.refresh(manager);
        }
    }

    /// Says that events were missed; the bars recover at the next refresh.
    fn lagged(&self, missed: u64) {
        self.note(&format!(
            "({missed} events missed: the display fell behind)"
        ));
    }

    /// A line of the command's own, above the bars or on stderr.
    fn note(&self, text: &str) {
        match &self.bars {
            Some(bars) => bars.println(text),
            None => print_err(text),
        }
    }

    /// Redraws the bars from the chunks' status.
    fn refresh(&mut self, manager: &ChunkManager) {
        let Some(bars) = &mut self.bars else {
            return;
        };
        let (mut done, mut total, mut sized, mut failed, mut sizes_unknown) =
            (0u64, 0u64, 0u64, 0usize, 0u64);
        for id in &self.fetching {
            if let Some(size) = self.ready.get(id) {
                done += size;
                total += size;
                sized += 1;
                continue;
            }
            match manager.status(id).map(|status| status.state) {
                Some(ChunkState::Ready) => {
                    let size = manager.get_chunk(id).map_or(0, |chunk| chunk.size());
                    self.ready.insert(*id, size);
                    done += size;
                    total += size;
                    sized += 1;
                    bars.settle(id);
                }
                Some(ChunkState::Downloading {
                    bytes_done,
                    bytes_total,
                }) => {
                    let bar = bars.chunk_bar(id);
                    match bytes_total {
                        Some(bytes_total) => {
                            bar.set_length(bytes_total);
                            total += bytes_total;
                            sized += 1;
                        }
                        None => {
                            bar.unset_length();
                            sizes_unknown += 1;
                        }
                    }
                    bar.set_position(bytes_done);
                    done += bytes_done;
                }
                Some(ChunkState::Failed { .. }) | None => {
                    failed += 1;
                    bars.settle(id);
                }
                Some(_) => {
                    sizes_unknown += 1;
                    bars.settle(id);
                }
            }
        }
        // Chunks not sized yet count as the average of the sized ones, so the ETA means
        // something before every origin has answered.
        if let Some(average) = total.checked_div(sized) {
            total += average * sizes_unknown;
        }
        if total > 0 {
            bars.total.set_length(total.max(done));
        } else {
            bars.total.unset_length();
        }
        bars.total.set_position(done);
        let mut message = format!("{}/{} ready", self.ready.len(), self.fetching.len());
        if failed > 0 {
            message.push_str(&format!(", {failed} failed"));
        }
        if sizes_unknown > 0 {
            message.push_str(&format!(", {sizes_unknown} not sized yet"));
        }
        bars.total.set_message(message);
    }

    /// Clears the bars before the summary.
    fn finish(&mut self) {
        if let Some(bars) = &mut self.bars {
            bars.clear();
        }
    }
}

impl Bars {
    fn new() -> anyhow::Result<Self> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total_style = ProgressStyle::with_template(
            "{prefix:>12.bold} [{bar:40.cyan/blue}] {binary_bytes}/{binary_total_bytes} \
             {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .context("the total bar's template")?
        .progress_chars("=> ");
        let chunk_style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:40.green/white}] {binary_bytes}/{binary_total_bytes}",
        )
        .context("the chunk bar's template")?
        .progress_chars("=> ");
        let total = multi.add(
            ProgressBar::no_length()
                .with_style(total_style)
                .with_prefix("total"),
        );
        Ok(Self {
            multi,
            total,
            chunk_style,
            in_flight: HashMap::new(),
        })
    }

    /// The bar of a chunk in flight, created above the total bar on first sight.
    fn chunk_bar(&mut self, id: &ChunkId) -> &ProgressBar {
        self.in_flight.entry(*id).or_insert_with(|| {
            self.multi.insert_before(
                &self.total,
                ProgressBar::no_length()
                    .with_style(self.chunk_style.clone())
                    .with_prefix(ShortId(id).to_string()),
            )
        })
    }

    /// Removes the bar of a chunk that is no longer in flight.
    fn settle(&mut self, id: &ChunkId) {
        if let Some(bar) = self.in_flight.remove(id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    fn println(&self, text: &str) {
        let _terminal_gone_is_fine = self.multi.println(text);
    }

    fn clear(&mut self) {
        for (_, bar) in self.in_flight.drain() {
            bar.finish_and_clear();
        }
        self.total.finish_and_clear();
        let _terminal_gone_is_fine = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const CHUNK: &str = r#"{"id": "0101010101010101010101010101010101010101010101010101010101010101",
        "dataset_id": "0202020202020202020202020202020202020202020202020202020202020202",
        "block_range": {"start": 0, "end": 10}, "files": {"a": "http://127.0.0.1:1/a"}}"#;

    #[test]
    fn manifests_are_arrays_or_objects_with_chunks() {
        let (_dir, path) = write(&format!("[{CHUNK}]"));
        assert_eq!(load_manifest(&path).unwrap().len(), 1);
        let (_dir, path) = write(&format!("{{\"chunks\": [{CHUNK}, {CHUNK}]}}"));
        assert_eq!(load_manifest(&path).unwrap().len(), 1, "duplicates fold");
    }

    #[test]
    fn bad_manifests_name_the_file_and_the_position() {
        let (_dir, path) = write("[\n  {\"id\": \"zz\"}\n]");
        let error = format!("{:#}", load_manifest(&path).unwrap_err());
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("line 2"), "{error}");

        let other = CHUNK.replace("\"end\": 10", "\"end\": 11");
        let (_dir, path) = write(&format!("[{CHUNK}, {other}]"));
        let error = format!("{:#}", load_manifest(&path).unwrap_err());
        assert!(error.contains("listed twice"), "{error}");
    }
}
