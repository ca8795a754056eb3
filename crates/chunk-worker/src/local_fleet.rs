//! A fleet on 127.0.0.1 in one process tree, for `cluster demo` and `cluster bench`: an
//! in-process origin serving synthetic chunks, a `file://` cluster store in a temporary
//! directory, worker daemons and a scheduler as child processes of this binary.
//!
//! Every wait polls the store or the workers' `GET /cluster` with a deadline. The children are
//! killed (SIGKILL) and reaped when the fleet is dropped, also on an error, a panic or when the
//! future owning it is dropped (Ctrl-C); the temporary directory is removed after them.

use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chunk_fleet::store::ClusterStore;
use chunk_manager::{DataChunk, DatasetId, FileCheck, id_from_hex, id_to_hex};
use chunk_origin::Origin;
use chunk_query::Catalog;
use chunk_query::synth::{self, Synth, SynthConfig};
use serde_json::Value;

use crate::query::SYNTH_DATASET;

/// How long the fleet may take to start, place and download its chunks.
const PATIENCE: Duration = Duration::from_secs(60);
/// The longest any request to a worker may take, its body read.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a wait polls (an interval between polls, not a synchronisation).
const POLL: Duration = Duration::from_millis(100);
/// Members silent for longer are gone (for the scheduler) and not planned on (for the
/// coordinators). Long, so that a killed worker is still a member when the next query comes:
/// its loss is then found by the query, and shown in `x-workers-lost`.
const MEMBER_TIMEOUT: &str = "60s";

/// What to generate and start.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// How many workers.
    pub workers: usize,
    /// How many chunks.
    pub chunks: u64,
    /// Blocks per chunk.
    pub blocks_per_chunk: u64,
    /// Mean transactions per block of the synthetic data.
    pub transactions_per_block: u32,
    /// `serve --query-threads` of each worker (`None`: its default).
    pub query_threads: Option<usize>,
    /// One worker on its own instead (`workers` ignored): not in a cluster, no scheduler,
    /// with the catalog and `--whole-chunks` (the first query downloads each chunk it reads,
    /// the next ones read it from disk): the single-node engine.
    pub standalone: bool,
}

impl FleetSpec {
    /// The blocks of every chunk.
    pub fn blocks(&self) -> Range<u64> {
        0..self.chunks * self.blocks_per_chunk
    }

    /// Copies of each chunk the scheduler places: 2, or 1 with one worker.
    pub fn replication(&self) -> usize {
        self.workers.clamp(1, 2)
    }
}

/// A child process, killed with SIGKILL and reaped on drop.
struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, command: &mut Command, log: PathBuf) -> anyhow::Result<Process> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("create the log file {}", log.display()))?;
        let child = command
            .env("RUST_LOG", "warn")
            .env_remove("CHUNK_WORKER_TOKEN")
            .env_remove("CHUNK_WORKER_CATALOG")
            .env_remove("CHUNK_WORKER_CONFIG")
            .stdin(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Process {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    /// SIGKILL, then reaped.
    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .with_context(|| format!("kill {}", self.name))?;
            child
                .wait()
                .with_context(|| format!("reap {}", self.name))?;
        }
        Ok(())
    }

    /// The end of its log (stderr), for an error message.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(5);
        lines[start..].join("\n")
    }

    /// Whether it has exited (and if so, reaped).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One worker daemon of the fleet.
pub struct WorkerProcess {
    /// Its worker id (`w1`, `w2`, ...).
    pub id: String,
    /// Its HTTP API, `http://127.0.0.1:PORT`.
    pub url: String,
    process: Process,
}

/// The answer of one `POST /query`.
pub struct Answer {
    /// The rows, as JSON.
    pub rows: Value,
    /// The response's `x-*` headers, by name.
    pub headers: Vec<(String, String)>,
    /// Wall time of the request, the whole body read.
    pub elapsed: Duration,
}

impl Answer {
    /// A response header's value, if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A fleet running on 127.0.0.1.
pub struct LocalFleet {
    // Dropped in this order: the children before the origin they read from and the
    // directory they write to.
    /// Its workers, in id order.
    pub workers: Vec<WorkerProcess>,
    scheduler: Option<Process>,
    /// The origin serving the chunks.
    pub origin: Origin,
    /// The chunks, in block order.
    pub chunks: Vec<DataChunk>,
    /// The dataset of the chunks.
    pub dataset: DatasetId,
    store: ClusterStore,
    data_bytes: u64,
    client: reqwest::Client,
    spec: FleetSpec,
    dir: tempfile::TempDir,
}

impl LocalFleet {
    /// Generates the chunks, starts the workers and the scheduler, and waits until every
    /// chunk is ready on its holders.
    pub async fn start(spec: FleetSpec) -> anyhow::Result<LocalFleet> {
        if spec.workers == 0 || spec.chunks == 0 || spec.blocks_per_chunk == 0 {
            bail!("a fleet needs at least one worker, one chunk and one block per chunk");
        }
        let binary = std::env::current_exe().context("find this program's path")?;
        let dir = tempfile::Builder::new()
            .prefix("chunk-fleet-")
            .tempdir()
            .context("create a temporary directory")?;
        let origin = Origin::start().context("start the origin")?;
        let dataset = id_from_hex(SYNTH_DATASET).map_err(|error| anyhow!("{error}"))?;
        let generator = Synth::new(
            SynthConfig::default().with_transactions_per_block(spec.transactions_per_block),
        );
        let mut chunks = Vec::new();
        let mut total_bytes = 0;
        for index in 0..spec.chunks {
            // Generating takes a while: let a signal stop the fleet meanwhile.
            tokio::task::yield_now().await;
            let start = index * spec.blocks_per_chunk;
            let chunk = generator.chunk(&dataset, start..start + spec.blocks_per_chunk)?;
            let mut described = chunk.describe(&dataset, |path| origin.url(path));
            for (name, bytes) in &chunk.files {
                origin.insert(&chunk.path(name), bytes.clone());
                // Declared sizes: the scheduler places by them.
                let mut check = FileCheck::new();
                check.size = Some(bytes.len() as u64);
                described = described.with_check(name, check);
                total_bytes += bytes.len() as u64;
            }
            chunks.push(described);
        }
        let catalog = Catalog::new(chunks.clone())?.with_schemas(dataset, synth::schemas());
        let catalog_path = dir.path().join("catalog.json");
        std::fs::write(&catalog_path, catalog.to_json()?)
            .with_context(|| format!("write {}", catalog_path.display()))?;
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir)
            .with_context(|| format!("create {}", store_dir.display()))?;
        let store_url = format!("file://{}", store_dir.display());
        let store = ClusterStore::open(&store_url).context("open the cluster store")?;
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        // Room for every chunk twice on each worker, whatever the placement.
        let budget = (2 * total_bytes + (64 << 20)).to_string();

        let mut fleet = LocalFleet {
            workers: Vec::new(),
            scheduler: None,
            origin,
            chunks,
            dataset,
            store,
            data_bytes: total_bytes,
            // A query that hangs fails the demo or the benchmark rather than stalling it.
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .context("build the HTTP client")?,
            spec: spec.clone(),
            dir,
        };
        let launched = fleet
            .launch(&binary, &store_url, &catalog_path, &budget, &token)
            .await;
        match launched {
            Ok(()) => Ok(fleet),
            Err(error) => Err(fleet.explain_failure(error)),
        }
    }

    /// `serve` on an ephemeral port of 127.0.0.1 with the data directory `<dir>/<id>`, no
    /// fsync, the budget and the spec's query threads.
    fn serve_command(&self, binary: &Path, id: &str, budget: &str) -> Command {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.dir.path().join(id))
            .args(["--fsync", "false", "--disk-budget", budget]);
        if let Some(threads) = self.spec.query_threads {
            command.args(["--query-threads", &threads.to_string()]);
        }
        command
    }

    /// Starts a worker (its log in `<dir>/<id>.log`) and waits for the address it announces.
    async fn start_worker(&mut self, id: String, mut command: Command) -> anyhow::Result<()> {
        command.stdout(Stdio::piped());
        let log = self.dir.path().join(format!("{id}.log"));
        let mut process = Process::spawn(&id, &mut command, log)?;
        let url = announced_url(&mut process).await?;
        self.workers.push(WorkerProcess { id, url, process });
        Ok(())
    }

    /// Starts the workers, then the scheduler; waits for the placement.
    async fn launch(
        &mut self,
        binary: &Path,
        store_url: &str,
        catalog_path: &Path,
        budget: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let spec = self.spec.clone();
        if spec.standalone {
            let mut command = self.serve_command(binary, "single", budget);
            command
                .arg("--catalog")
                .arg(catalog_path)
                .arg("--whole-chunks");
            return self.start_worker("single".to_string(), command).await;
        }
        for n in 1..=spec.workers {
            let id = format!("w{n}");
            let mut command = self.serve_command(binary, &id, budget);
            command
                .args(["--cluster", store_url, "--worker-id", &id])
                .args(["--heartbeat-interval", "200ms", "--poll-interval", "200ms"])
                .args(["--member-timeout", MEMBER_TIMEOUT])
                .args(["--flight-listen", "127.0.0.1:0", "--cluster-token", token]);
            self.start_worker(id, command).await?;
        }
        self.wait_for_members().await?;
        let mut command = Command::new(binary);
        command
            .args(["schedule", "--cluster", store_url, "--catalog"])
            .arg(catalog_path)
            .args(["--interval", "500ms", "--member-timeout", MEMBER_TIMEOUT])
            .args(["--replication", &spec.replication().to_string()])
            .stdout(Stdio::null());
        let log = self.dir.path().join("scheduler.log");
        self.scheduler = Some(Process::spawn("the scheduler", &mut command, log)?);
        self.wait_for_placement().await?;
        Ok(())
    }

    /// The bytes of the chunks' files.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The temporary directory (removed when the fleet is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What went wrong, with the end of every child's log.
    pub fn explain_failure(&self, error: anyhow::Error) -> anyhow::Error {
        let mut logs = String::new();
        let processes = self
            .workers
            .iter()
            .map(|worker| &worker.process)
            .chain(self.scheduler.as_ref());
        for process in processes {
            let tail = process.log_tail();
            if !tail.is_empty() {
                logs.push_str(&format!(
                    "\n--- {} (last lines of its log)\n{tail}",
                    process.name
                ));
            }
        }
        if logs.is_empty() {
            error
        } else {
            error.context(format!("the fleet's logs:{logs}"))
        }
    }

    /// Fails if a child exited by itself.
    fn check_children(&mut self) -> anyhow::Result<()> {
        let processes = self
            .workers
            .iter_mut()
            .map(|worker| &mut worker.process)
            .chain(self.scheduler.as_mut());
        for process in processes {
            if let Some(status) = process.exited() {
                bail!("{} exited ({status})", process.name);
            }
        }
        Ok(())
    }

    /// Waits until every worker heartbeats with its Flight URL.
    async fn wait_for_members(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.check_children()?;
            let members = self.store.list_members().await?.members;
            let with_flight = members.iter().filter(|m| m.flight_url.is_some()).count();
            if with_flight == self.workers.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{with_flight} of {} workers joined the cluster store in {PATIENCE:?}",
                    self.workers.len()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the placement is applied: the assignment in force names every worker,
    /// each has applied it (its part ready, nothing kept from an earlier one), and every chunk
    /// is ready on R of them.
    async fn wait_for_placement(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let wanted = self.chunks.len() as u64 * self.spec.replication() as u64;
        let mut last = String::from("no assignment published yet");
        loop {
            self.check_children()?;
            if Instant::now() > deadline {
                bail!("the placement was not applied in {PATIENCE:?}: {last}");
            }
            if let Some(state) = self.store.read_state().await? {
                let assignment = state.assignment.to_string();
                let mut held = 0;
                let mut applied = true;
                for worker in &self.workers {
                    let view = self.get_json(&worker.url, "/cluster").await?;
                    held += view["chunks"]["held"].as_u64().unwrap_or(0);
                    let live = view["live_workers"].as_array().map_or(0, Vec::len);
                    if view["applied_assignment"].as_str() != Some(assignment.as_str())
                        || view["chunks"]["kept"] != 0
                        || live != self.workers.len()
                    {
                        applied = false;
                        last = format!("{} has not applied {assignment}: {view}", worker.id);
                    }
                }
                if applied && held == wanted {
                    return Ok(());
                }
                if applied {
                    last = format!("{held} of {wanted} copies ready");
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn get_json(&self, base: &str, path: &str) -> anyhow::Result<Value> {
        let url = format!("{base}{path}");
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("GET {url}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("GET {url}: not JSON"))
    }

    /// `POST /query` to `worker` (an index into [`LocalFleet::workers`]), rows as JSON.
    pub async fn query(
        &self,
        worker: usize,
        blocks: Range<u64>,
        sql: &str,
    ) -> anyhow::Result<Answer> {
        let worker = self
            .workers
            .get(worker)
            .ok_or_else(|| anyhow!("no worker {worker}"))?;
        let body = serde_json::json!({
            "dataset": id_to_hex(&self.dataset),
            "blocks": {"start": blocks.start, "end": blocks.end},
            "sql": sql,
            "format": "json",
        });
        let started = Instant::now();
        let response = self
            .client
            .post(format!("{}/query", worker.url))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await
            .with_context(|| format!("POST {}/query", worker.url))?;
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-"))
            .map(|(name, value)| {
                let value = value.to_str().unwrap_or_default().to_string();
                (name.as_str().to_string(), value)
            })
            .collect();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("read the answer of {}", worker.id))?;
        let elapsed = started.elapsed();
        if !status.is_success() {
            bail!(
                "{} answered {status}: {}",
                worker.id,
                String::from_utf8_lossy(&bytes)
            );
        }
        let rows = serde_json::from_slice(&bytes)
            .with_context(|| format!("the answer of {} is not a JSON array", worker.id))?;
        Ok(Answer {
            rows,
            headers,
            elapsed,
        })
    }

    /// Which worker reads which chunk of which table, from the distributed `EXPLAIN` of `sql`
    /// (`ChunkScanExec: table=T chunks=[id:start..end@worker, ...]`), in plan order, without
    /// repeats.
    pub async fn readers(
        &self,
        worker: usize,
        blocks: Range<u64>,
        sql: &str,
    ) -> anyhow::Result<Vec<ChunkRead>> {
        let answer = self
            .query(worker, blocks, &format!("EXPLAIN {sql}"))
            .await?;
        let mut reads = Vec::new();
        for row in answer
            .rows
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let plan = row["plan"].as_str().unwrap_or_default();
            for read in parse_chunk_reads(plan) {
                if !reads.contains(&read) {
                    reads.push(read);
                }
            }
        }
        Ok(reads)
    }

    /// Scrapes `GET /metrics` of every worker and sums the values of the samples of the
    /// counters `names` (over their labels); 0 for a counter not exported.
    pub async fn metric_sum(&self, names: &[&str]) -> anyhow::Result<f64> {
        let mut sum = 0.0;
        for worker in &self.workers {
            let url = format!("{}/metrics", worker.url);
            let text = self
                .client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?
                .text()
                .await
                .with_context(|| format!("GET {url}"))?;
            sum += sum_samples(&text, names);
        }
        Ok(sum)
    }

    /// Kills worker `index` with SIGKILL and reaps it.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let worker = self
            .workers
            .get_mut(index)
            .ok_or_else(|| anyhow!("no worker {index}"))?;
        worker.process.kill()
    }
}

/// One chunk scan in a distributed plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRead {
    /// The table scanned.
    pub table: String,
    /// The first 8 hex digits of the chunk id.
    pub chunk: String,
    /// The blocks read.
    pub blocks: String,
    /// The worker reading it.
    pub worker: String,
    /// Whether that worker downloads it (no live worker holds it).
    pub download: bool,
}

/// The chunk scans in an `EXPLAIN` plan's text.
fn parse_chunk_reads(plan: &str) -> Vec<ChunkRead> {
    let mut reads = Vec::new();
    for line in plan.lines() {
        let Some(scan) = line.split("ChunkScanExec: table=").nth(1) else {
            continue;
        };
        let Some((table, rest)) = scan.split_once(" chunks=[") else {
            continue;
        };
        let Some((list, _)) = rest.split_once(']') else {
            continue;
        };
        for part in list.split(", ") {
            let Some((chunk, rest)) = part.split_once(':') else {
                continue;
            };
            let Some((blocks, worker)) = rest.split_once('@') else {
                continue;
            };
            let (worker, download) = match worker.strip_suffix("(download)") {
                Some(worker) => (worker, true),
                None => (worker, false),
            };
            reads.push(ChunkRead {
                table: table.to_string(),
                chunk: chunk.to_string(),
                blocks: blocks.to_string(),
                worker: worker.to_string(),
                download,
            });
        }
    }
    reads
}

/// The sum of the Prometheus text samples of the metrics `names` (any labels).
fn sum_samples(text: &str, names: &[&str]) -> f64 {
    text.lines()
        .filter(|line| {
            names.iter().any(|name| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads the daemon's `listening on URL` line from its stdout, then keeps draining it.
async fn announced_url(process: &mut Process) -> anyhow::Result<String> {
    let stdout = process
        .child
        .as_mut()
        .and_then(|child| child.stdout.take())
        .ok_or_else(|| anyhow!("{} has no stdout", process.name))?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sender = Some(sender);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(url) = line.strip_prefix("listening on ")
                && let Some(sender) = sender.take()
            {
                let _ = sender.send(url.to_string());
            }
        }
    });
    match tokio::time::timeout(PATIENCE, receiver).await {
        Ok(Ok(url)) => Ok(url),
        Ok(Err(_)) => bail!(
            "{} exited before listening: {}",
            process.name,
            process.log_tail()
        ),
        Err(_) => bail!("{} did not listen in {PATIENCE:?}", process.name),
    }
}

/// Runs `work` (which starts a local fleet) on a runtime of its own until it ends or SIGINT or
/// SIGTERM comes. On a signal the work is aborted, which drops its fleet (children killed and
/// reaped, directory removed), and the signal is the error. Signals are watched from the
/// start, so one that comes during the setup is not lost.
pub fn run_until_signal(
    work: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("watch SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("watch SIGTERM")?;
        // A task of its own, so that a signal is seen even while it generates data.
        let mut task = tokio::spawn(work);
        let signal = tokio::select! {
            joined = &mut task => return joined.context("the fleet's task panicked")?,
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        task.abort();
        let _ = task.await;
        bail!("{signal} received; the fleet was stopped and its directory removed")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_reads_are_parsed_from_the_plan() {
        let plan = "  DistributedLeafExec\n    ChunkScanExec: table=blocks chunks=[ab12cd34:0..500@w1, 0011aabb:500..1000@w3(download)] on=http://x\n  other";
        let reads = parse_chunk_reads(plan);
        assert_eq!(reads.len(), 2);
        assert_eq!(reads[0].table, "blocks");
        assert_eq!(reads[0].chunk, "ab12cd34");
        assert_eq!(reads[0].blocks, "0..500");
        assert_eq!(reads[0].worker, "w1");
        assert!(!reads[0].download);
        assert_eq!(reads[1].worker, "w3");
        assert!(reads[1].download);
        assert!(parse_chunk_reads("ChunkScanExec: table=t chunks=[]").is_empty());
    }

    #[test]
    fn samples_are_summed_over_labels_and_names() {
        let text = "# TYPE a_total counter\na_total 10\na_total_x 5\nb_total{x=\"1\"} 2.5\nb_total{x=\"2\"} 1\nc 7\n";
        assert_eq!(sum_samples(text, &["a_total"]), 10.0);
        assert_eq!(sum_samples(text, &["a_total", "b_total"]), 13.5);
        assert_eq!(sum_samples(text, &["missing"]), 0.0);
    }
}
