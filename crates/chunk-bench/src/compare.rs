//! The throughput comparison: chunk-manager, aria2c and curl fetch the same files from the same
//! nginx into the same disk, in rounds (the order rotates each round), and a table compares
//! them. Then the memory runs: the smallest and the largest chunks of the set, each alone in a
//! fresh process, to show peak memory does not follow file size.
//!
//! chunk-manager fsyncs every file, manifest and directory before it commits. aria2c and curl
//! have no such option, so their durable time is the tool's time plus an fsync of every file
//! and directory they wrote; their raw time is shown too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::files::{self, MB, PlannedChunk};
use crate::latency::human;
use crate::proc;

/// Streams at once for every tool: chunk-manager's default 4 chunks x 3 files.
const STREAMS: usize = 12;

pub struct Compare<'a> {
    pub chunks: &'a [PlannedChunk],
    pub shape_args: Vec<String>,
    pub base_url: &'a str,
    pub work_dir: &'a Path,
    pub rounds: usize,
    pub probe_pace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tool {
    ChunkManager,
    ChunkManagerNoFsync,
    Aria2,
    Curl,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::ChunkManager => "chunk-manager (fsync on)",
            Tool::ChunkManagerNoFsync => "chunk-manager (fsync off)",
            Tool::Aria2 => "aria2c -j12",
            Tool::Curl => "curl --parallel-max 12",
        }
    }
}

/// One tool's run: raw and durable seconds (equal for chunk-manager, which syncs itself).
#[derive(Debug, Clone)]
struct Timing {
    raw: f64,
    durable: f64,
    details: serde_json::Value,
}

pub fn run(compare: Compare<'_>) -> anyhow::Result<serde_json::Value> {
    let bytes: u64 = compare.chunks.iter().map(PlannedChunk::size).sum();
    let files = compare.chunks.len() * crate::fixture::FILE_NAMES.len();
    let smallest = compare
        .chunks
        .iter()
        .flat_map(|chunk| &chunk.files)
        .map(|file| file.size)
        .min()
        .unwrap_or(0);
    let largest = compare
        .chunks
        .iter()
        .flat_map(|chunk| &chunk.files)
        .map(|file| file.size)
        .max()
        .unwrap_or(0);
    println!(
        "throughput: {} chunks, {files} files of {:.1}-{:.1} MB, {:.0} MB in all; {STREAMS} streams per tool; load average {}",
        compare.chunks.len(),
        smallest as f64 / MB as f64,
        largest as f64 / MB as f64,
        bytes as f64 / MB as f64,
        proc::load_average()
    );
    let tools = [
        Tool::ChunkManager,
        Tool::Aria2,
        Tool::Curl,
        Tool::ChunkManagerNoFsync,
    ];
    let mut results: Vec<(Tool, Vec<Timing>)> = tools.iter().map(|&t| (t, Vec::new())).collect();
    for round in 0..compare.rounds {
        for offset in 0..tools.len() {
            let tool = tools[(round + offset) % tools.len()];
            let timing = run_tool(&compare, tool)
                .with_context(|| format!("round {}: {}", round + 1, tool.label()))?;
            println!(
                "  round {} {:<28} {:>7.1} s  {:>6.0} MB/s durable  ({:.0} MB/s raw)",
                round + 1,
                tool.label(),
                timing.durable,
                bytes as f64 / MB as f64 / timing.durable,
                bytes as f64 / MB as f64 / timing.raw,
            );
            if let Some(entry) = results.iter_mut().find(|(t, _)| *t == tool) {
                entry.1.push(timing);
            }
        }
    }

    let median = |timings: &[Timing], durable: bool| {
        let mut values: Vec<f64> = timings
            .iter()
            .map(|t| if durable { t.durable } else { t.raw })
            .collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mbps = |seconds: f64| bytes as f64 / MB as f64 / seconds;
    println!();
    println!(
        "{:<28} {:>14} {:>14}   rounds (durable MB/s)",
        "tool", "durable MB/s", "raw MB/s"
    );
    let mut table = Vec::new();
    for (tool, timings) in &results {
        let rounds: Vec<String> = timings
            .iter()
            .map(|t| format!("{:.0}", mbps(t.durable)))
            .collect();
        println!(
            "{:<28} {:>14.0} {:>14.0}   {}",
            tool.label(),
            mbps(median(timings, true)),
            mbps(median(timings, false)),
            rounds.join(" ")
        );
        table.push(serde_json::json!({
            "tool": tool.label(),
            "durable_mb_per_s": mbps(median(timings, true)),
            "raw_mb_per_s": mbps(median(timings, false)),
            "rounds": timings.iter().map(|t| serde_json::json!({
                "durable_s": t.durable, "raw_s": t.raw, "details": t.details,
            })).collect::<Vec<_>>(),
        }));
    }
    let durable_of = |tool: Tool| {
        results
            .iter()
            .find(|(t, _)| *t == tool)
            .map(|(_, timings)| mbps(median(timings, true)))
            .unwrap_or(0.0)
    };
    let raw_of = |tool: Tool| {
        results
            .iter()
            .find(|(t, _)| *t == tool)
            .map(|(_, timings)| mbps(median(timings, false)))
            .unwrap_or(0.0)
    };
    let best_durable = durable_of(Tool::Aria2).max(durable_of(Tool::Curl));
    let ratio = durable_of(Tool::ChunkManager) / best_durable;
    let best_raw = raw_of(Tool::Aria2).max(raw_of(Tool::Curl));
    let ratio_nofsync = raw_of(Tool::ChunkManagerNoFsync) / best_raw;
    println!(
        "ratio chunk-manager / faster of aria2c and curl, all durable: {ratio:.2} (target >= 0.9: {})",
        if ratio >= 0.9 { "met" } else { "NOT met" }
    );
    println!(
        "ratio with nothing synced (chunk-manager fsync off vs the tools' raw time): {ratio_nofsync:.2}"
    );

    let latency = latency_summary(&results);
    let memory = memory_runs(&compare)?;
    Ok(serde_json::json!({
        "bytes": bytes,
        "files": files,
        "table": table,
        "ratio_durable": ratio,
        "ratio_nofsync": ratio_nofsync,
        "latency": latency,
        "memory": memory,
    }))
}

/// The API latency seen during the chunk-manager runs: every round's percentiles, and the
/// worst of each across rounds.
fn latency_summary(results: &[(Tool, Vec<Timing>)]) -> serde_json::Value {
    let Some((_, timings)) = results.iter().find(|(t, _)| *t == Tool::ChunkManager) else {
        return serde_json::Value::Null;
    };
    println!();
    println!(
        "API latency while chunk-manager downloads (another thread, every round; wall clock):"
    );
    println!(
        "  {:<15} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "call", "calls", "p50", "p99", "p99.9", "max", "> 20 µs", "> 1 ms"
    );
    let mut worst = serde_json::Map::new();
    for operation in ["find_chunk", "list_chunks", "download_chunk", "empty"] {
        let mut calls = 0;
        let (mut p50, mut p99, mut p999, mut max, mut over20, mut over1ms) = (0, 0, 0, 0, 0, 0);
        for timing in timings {
            let summary = &timing.details["latency"][operation];
            let field = |name: &str| summary[name].as_u64().unwrap_or(0);
            calls += field("count");
            p50 = p50.max(field("p50_ns"));
            p99 = p99.max(field("p99_ns"));
            p999 = p999.max(field("p999_ns"));
            max = max.max(field("max_ns"));
            over20 += field("over_20us");
            over1ms += field("over_1ms");
        }
        let label = if operation == "empty" {
            "(empty section)"
        } else {
            operation
        };
        println!(
            "  {label:<15} {calls:>8} {:>10} {:>10} {:>10} {:>10} {over20:>10} {over1ms:>8}",
            human(p50),
            human(p99),
            human(p999),
            human(max)
        );
        worst.insert(
            operation.to_string(),
            serde_json::json!({"calls": calls, "p50_ns": p50, "p99_ns": p99, "p999_ns": p999,
                "max_ns": max, "over_20us": over20, "over_1ms": over1ms}),
        );
    }
    let (mut preempted, mut blocked, mut unexplained, mut max_unexplained) = (0, 0, 0, 0);
    for timing in timings {
        let slow = &timing.details["latency"]["slow_calls"];
        preempted += slow["preempted"].as_u64().unwrap_or(0);
        blocked += slow["blocked"].as_u64().unwrap_or(0);
        unexplained += slow["unexplained"].as_u64().unwrap_or(0);
        max_unexplained = max_unexplained.max(slow["max_unexplained_ns"].as_u64().unwrap_or(0));
    }
    println!(
        "  calls over 20 µs: {preempted} in rounds where the thread was preempted, {blocked} where it blocked, {unexplained} neither (slowest {})",
        human(max_unexplained)
    );
    println!("  (worst of the rounds for each percentile; counts summed over the rounds)");
    let worst_of = |field: &str| {
        ["find_chunk", "list_chunks", "download_chunk"]
            .iter()
            .map(|operation| worst[*operation][field].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let (p99, max) = (worst_of("p99_ns"), worst_of("max_ns"));
    println!(
        "  target p99 < 20 µs: {} (worst p99 {}); target max < 1 ms: {} (slowest call {}; slowest call in a round without a context switch {})",
        if p99 < 20_000 { "met" } else { "NOT met" },
        human(p99),
        if max < 1_000_000 {
            "met"
        } else {
            "NOT met on the wall clock"
        },
        human(max),
        if max_unexplained == 0 {
            "under 20 µs".to_string()
        } else {
            human(max_unexplained)
        },
    );
    worst.insert(
        "slow_calls".to_string(),
        serde_json::json!({"preempted": preempted, "blocked": blocked,
            "unexplained": unexplained, "max_unexplained_ns": max_unexplained}),
    );
    serde_json::Value::Object(worst)
}

/// Peak memory with the 4 smallest and the 4 largest chunks, each run alone.
fn memory_runs(compare: &Compare<'_>) -> anyhow::Result<serde_json::Value> {
    let mut by_size: Vec<&PlannedChunk> = compare.chunks.iter().collect();
    by_size.sort_by_key(|chunk| chunk.size());
    let take = 4.min(by_size.len());
    let smallest: Vec<usize> = by_size[..take].iter().map(|c| c.index).collect();
    let largest: Vec<usize> = by_size[by_size.len() - take..]
        .iter()
        .map(|c| c.index)
        .collect();
    println!();
    println!("peak memory of chunk-manager downloading (fresh process each, fsync on):");
    let mut runs = Vec::new();
    for (label, only) in [
        ("4 smallest chunks", &smallest),
        ("4 largest chunks", &largest),
    ] {
        let subset: Vec<&PlannedChunk> = compare
            .chunks
            .iter()
            .filter(|c| only.contains(&c.index))
            .collect();
        let biggest_file = subset
            .iter()
            .flat_map(|c| &c.files)
            .map(|f| f.size)
            .max()
            .unwrap_or(0);
        let bytes: u64 = subset.iter().map(|c| c.size()).sum();
        clean(&compare.work_dir.join("out"))?;
        let details = chunk_manager_process(compare, true, Some(only), false)?;
        let rss = &details["rss_kib"];
        let field = |name: &str| rss[name].as_u64().unwrap_or(0);
        println!(
            "  {label:<18} {:>6.0} MB, largest file {:>5.1} MB: peak RSS {} (after open {}, at start {})",
            bytes as f64 / MB as f64,
            biggest_file as f64 / MB as f64,
            proc::mib(field("peak")),
            proc::mib(field("open")),
            proc::mib(field("start")),
        );
        runs.push(serde_json::json!({"label": label, "bytes": bytes,
            "largest_file": biggest_file, "rss_kib": rss}));
    }
    Ok(serde_json::Value::Array(runs))
}

fn run_tool(compare: &Compare<'_>, tool: Tool) -> anyhow::Result<Timing> {
    let out = compare.work_dir.join("out");
    clean(&out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let timing = match tool {
        Tool::ChunkManager | Tool::ChunkManagerNoFsync => {
            let details = chunk_manager_process(compare, tool == Tool::ChunkManager, None, true)?;
            let seconds = details["seconds"].as_f64().unwrap_or(f64::NAN);
            Timing {
                raw: seconds,
                durable: seconds,
                details,
            }
        }
        Tool::Aria2 => {
            let list = compare.work_dir.join("aria2.input");
            std::fs::write(
                &list,
                files::aria2_input(compare.chunks, compare.base_url, &out),
            )?;
            let mut command = Command::new("aria2c");
            command
                .arg(format!("--input-file={}", list.display()))
                .arg(format!("--max-concurrent-downloads={STREAMS}"))
                .args([
                    "--split=1",
                    "--max-connection-per-server=1",
                    "--file-allocation=none",
                    "--allow-overwrite=true",
                    "--auto-file-renaming=false",
                    "--summary-interval=0",
                    "--console-log-level=error",
                    "--download-result=hide",
                    "--quiet=true",
                ]);
            external(command, &out, compare.chunks)?
        }
        Tool::Curl => {
            let config = compare.work_dir.join("curl.config");
            std::fs::write(
                &config,
                files::curl_config(compare.chunks, compare.base_url, &out),
            )?;
            let mut command = Command::new("curl");
            command
                .args(["--parallel", "--parallel-max"])
                .arg(STREAMS.to_string())
                .args([
                    "--silent",
                    "--no-progress-meter",
                    "--show-error",
                    "--fail",
                    "--create-dirs",
                ])
                .arg("--config")
                .arg(&config);
            external(command, &out, compare.chunks)?
        }
    };
    clean(&out)?;
    Ok(timing)
}

/// Runs this binary's `download` command in a fresh process and returns its JSON line.
fn chunk_manager_process(
    compare: &Compare<'_>,
    fsync: bool,
    only: Option<&Vec<usize>>,
    probe: bool,
) -> anyhow::Result<serde_json::Value> {
    let out = compare.work_dir.join("out");
    let exe = std::env::current_exe().context("find this benchmark's binary")?;
    let mut command = Command::new(exe);
    command
        .arg("download")
        .args(&compare.shape_args)
        .args(["--url", compare.base_url])
        .arg("--data-dir")
        .arg(out.join("data"))
        .args(["--fsync", if fsync { "on" } else { "off" }]);
    if probe {
        command
            .arg("--probe-us")
            .arg(compare.probe_pace.as_micros().to_string());
    }
    if let Some(only) = only {
        let list: Vec<String> = only.iter().map(usize::to_string).collect();
        command.args(["--only", &list.join(",")]);
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("run the chunk-manager download")?;
    if !output.status.success() {
        bail!("the chunk-manager download failed: {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let details: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("parse {line:?}"))?;
    clean(&out)?;
    Ok(details)
}

/// Runs an external downloader, then fsyncs what it wrote; checks every file's size.
fn external(mut command: Command, out: &Path, chunks: &[PlannedChunk]) -> anyhow::Result<Timing> {
    let start = Instant::now();
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("run {command:?}"))?;
    let raw = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    let mut written: Vec<PathBuf> = Vec::new();
    for file in chunks.iter().flat_map(|chunk| &chunk.files) {
        let path = out.join(&file.path);
        let size = std::fs::metadata(&path)
            .with_context(|| format!("{} missing", path.display()))?
            .len();
        if size != file.size {
            bail!(
                "{} has {size} bytes, expected {}",
                path.display(),
                file.size
            );
        }
        written.push(path);
    }
    for path in &written {
        std::fs::File::open(path)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("fsync {}", path.display()))?;
    }
    let mut dirs: Vec<&Path> = written.iter().filter_map(|path| path.parent()).collect();
    dirs.sort();
    dirs.dedup();
    dirs.push(out);
    for dir in dirs {
        std::fs::File::open(dir)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("fsync {}", dir.display()))?;
    }
    let durable = start.elapsed().as_secs_f64();
    Ok(Timing {
        raw,
        durable,
        details: serde_json::json!({"fsync_s": durable - raw}),
    })
}

/// Removes a previous run's output and flushes the disk, so no run pays for another's
/// write-back.
fn clean(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("remove {}", dir.display())),
    }
    let status = Command::new("sync").status().context("run sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}
