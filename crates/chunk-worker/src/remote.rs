//! `chunk-worker query --cluster URL`: sends the query to a worker of a fleet, whose
//! `POST /query` plans it across the fleet, and prints the answer as `query` does.
//!
//! `URL` is the fleet's cluster store (`file:///...`, `s3://...`: a member that heartbeat
//! within the last minute is asked, the freshest first, the next if it cannot be reached) or
//! one worker's HTTP API (`http://host:port`). With a store, `--dataset` may be a prefix of a
//! dataset of the fleet's catalog (or left out when it has one); with a worker's URL it is
//! the dataset's 64 hex digits. The worker's API token, if it has one, comes from
//! `--token` or `CHUNK_WORKER_TOKEN`.
//!
//! `--format json`, `ndjson` and `arrow` are the worker's bytes as they stream; `table` asks
//! for Arrow and prints a table. A query that fails after its first rows ends JSON and NDJSON
//! with the worker's `{"error": ...}` line, and the command exits non-zero (an error whose
//! code is `worker_lost` may simply be run again). A summary goes to stderr: the worker
//! asked, chunks read and downloaded, workers that were left out after a failure.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use chunk_fleet::store::ClusterStore;
use chunk_manager::id_from_hex;
use chunk_query::output::{Encoder, Format};
use futures::StreamExt;

use crate::query::QueryArgs;

/// A member silent for longer than this is not asked.
const LIVE_WITHIN: Duration = Duration::from_secs(60);

/// How long connecting to a worker may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `args` on the fleet at `cluster` (see the module docs).
pub fn run(args: &QueryArgs, cluster: &str) -> anyhow::Result<ExitCode> {
    if args.demo {
        bail!("--demo runs here; leave out --cluster");
    }
    if args.format == Format::ArrowIpc && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("--format arrow writes binary data: redirect it to a file or a pipe");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start a runtime")?;
    runtime.block_on(query(args, cluster))
}

async fn query(args: &QueryArgs, cluster: &str) -> anyhow::Result<ExitCode> {
    let (workers, dataset) = if cluster.starts_with("http://") || cluster.starts_with("https://") {
        let text = args
            .dataset
            .as_deref()
            .ok_or_else(|| anyhow!("--dataset (64 hex digits) is needed with a worker's URL"))?;
        id_from_hex(text).map_err(|error| {
            anyhow!("--dataset {text}: {error} (with a worker's URL give all 64 hex digits, or use the cluster store's URL)")
        })?;
        (
            vec![cluster.trim_end_matches('/').to_string()],
            text.to_ascii_lowercase(),
        )
    } else {
        let store = ClusterStore::open(cluster)
            .with_context(|| format!("open the cluster store {cluster}"))?;
        let workers = live_workers(&store).await?;
        let dataset = fleet_dataset(&store, args.dataset.as_deref()).await?;
        (workers, dataset)
    };
    let wire_format = match args.format {
        Format::Table => Format::ArrowIpc,
        other => other,
    };
    let body = serde_json::json!({
        "dataset": dataset,
        "blocks": {"start": args.blocks.start, "end": args.blocks.end},
        "sql": args.sql,
        "format": wire_format.name(),
    });
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .context("set up the HTTP client")?;
    // Serialized here: reqwest's `json` feature is not enabled for the binary (a feature
    // change would rebuild object_store and DataFusion apart from the tests' build).
    let body = serde_json::to_vec(&body).context("encode the query")?;
    let started = Instant::now();
    let mut tried = Vec::new();
    let (worker, response) = 'found: {
        for worker in &workers {
            let mut request = client
                .post(format!("{worker}/query"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(token) = &args.token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Ok(response) => break 'found (worker.clone(), response),
                Err(error) if error.is_connect() => {
                    tracing::warn!(%worker, %error, "cannot reach the worker; trying the next");
                    tried.push(format!("{worker}: {error}"));
                }
                Err(error) => return Err(error).with_context(|| format!("query {worker}")),
            }
        }
        bail!(
            "no worker of the fleet could be reached: {}",
            tried.join("; ")
        );
    };
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let detail: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        match (
            detail["error"]["code"].as_str(),
            detail["error"]["message"].as_str(),
        ) {
            (Some(code), Some(message)) => bail!("{worker}: {status} {code}: {message}"),
            _ => bail!("{worker}: {status} {text}"),
        }
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut summary = format!(
        "asked {worker}: {} chunk(s) read, {} downloaded",
        header("x-chunks-read"),
        header("x-chunks-downloaded")
    );
    let missing = header("x-blocks-missing");
    if !missing.is_empty() {
        summary.push_str(&format!(
            "; blocks {missing} are in no chunk of the catalog"
        ));
    }
    let lost = header("x-workers-lost");
    if !lost.is_empty() {
        summary.push_str(&format!("; left out after a failure: {lost}"));
    }
    let mut out = std::io::stdout().lock();
    let rows = if args.format == Format::Table {
        Some(print_table(response, &mut out).await?)
    } else {
        copy_body(response, args.format, &mut out).await?;
        None
    };
    let elapsed = started.elapsed().as_secs_f64();
    match rows {
        Some(rows) => eprintln!("{rows} row(s) in {elapsed:.3} s; {summary}"),
        None => eprintln!("done in {elapsed:.3} s; {summary}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The HTTP URLs of the members that heartbeat within [`LIVE_WITHIN`], the freshest first.
async fn live_workers(store: &ClusterStore) -> anyhow::Result<Vec<String>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let mut members = store
        .list_members()
        .await
        .context("list the fleet's members")?
        .members;
    members.retain(|member| {
        now.saturating_sub(member.heartbeat_unix_ms) <= LIVE_WITHIN.as_millis() as u64
    });
    members.sort_by_key(|member| std::cmp::Reverse(member.heartbeat_unix_ms));
    if members.is_empty() {
        bail!("no worker of the fleet heartbeat in the last {LIVE_WITHIN:?}");
    }
    Ok(members
        .into_iter()
        .map(|member| member.http_url.trim_end_matches('/').to_string())
        .collect())
}

/// The dataset `--dataset` names in the catalog the fleet's current assignment places (a
/// prefix, or nothing when it has one dataset).
async fn fleet_dataset(store: &ClusterStore, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(text) = given
        && text.len() == 64
    {
        id_from_hex(text).map_err(|error| anyhow!("--dataset {text}: {error}"))?;
        return Ok(text.to_ascii_lowercase());
    }
    let state = store
        .read_state()
        .await
        .context("read the fleet's state")?
        .ok_or_else(|| anyhow!("the fleet has no assignment yet (run `chunk-worker schedule`)"))?;
    let assignment = store
        .read_assignment(&state.assignment)
        .await
        .with_context(|| format!("read assignment {}", state.assignment))?;
    let bytes = store
        .read_catalog(&assignment.catalog)
        .await
        .context("read the fleet's catalog")?;
    let catalog = chunk_query::Catalog::from_json(&bytes, "the fleet's catalog")
        .context("parse the fleet's catalog")?;
    let dataset = crate::query::pick_dataset(&catalog, given)?;
    Ok(chunk_manager::id_to_hex(&dataset))
}

/// Writes the body as it comes (JSON, NDJSON, Arrow IPC); fails if it ends with the worker's
/// error line or is cut.
async fn copy_body(
    response: reqwest::Response,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut body = response.bytes_stream();
    // The last two lines, where an error line would be.
    let mut tail: Vec<u8> = Vec::new();
    while let Some(piece) = body.next().await {
        let piece = piece.context("the result was cut (the query may be run again)")?;
        out.write_all(&piece).context("write the result")?;
        if format != Format::ArrowIpc {
            tail.extend_from_slice(&piece);
            let newlines: Vec<usize> = tail
                .iter()
                .enumerate()
                .filter(|(_, byte)| **byte == b'\n')
                .map(|(index, _)| index)
                .collect();
            if newlines.len() > 2 {
                tail.drain(..=newlines[newlines.len() - 3]);
            }
        }
    }
    out.flush().context("write the result")?;
    let text = String::from_utf8_lossy(&tail);
    if let Some(line) = text.lines().rev().find(|line| !line.trim().is_empty())
        && let Ok(error) = serde_json::from_str::<serde_json::Value>(line)
        && let (Some(code), Some(message)) = (
            error["error"]["code"].as_str(),
            error["error"]["message"].as_str(),
        )
    {
        bail!("the query failed after its first rows: {code}: {message}");
    }
    Ok(())
}

/// Reads an Arrow IPC body and prints it as a table; returns the number of rows.
async fn print_table(response: reqwest::Response, out: &mut impl Write) -> anyhow::Result<usize> {
    let bytes = response
        .bytes()
        .await
        .context("the result was cut (the query may be run again)")?;
    let reader = chunk_query::arrow::ipc::reader::StreamReader::try_new(bytes.as_ref(), None)
        .context("read the Arrow result")?;
    let mut encoder = Encoder::new(Format::Table, reader.schema()).context("encode the result")?;
    out.write_all(&encoder.begin()?)
        .context("write the result")?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch.context("read the Arrow result (the query may be run again)")?;
        rows += batch.num_rows();
        out.write_all(&encoder.batch(&batch)?)
            .context("write the result")?;
    }
    out.write_all(&encoder.finish()?)
        .context("write the result")?;
    out.flush().context("write the result")?;
    Ok(rows)
}
