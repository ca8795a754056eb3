//! API latency under load: a thread that calls `find_chunk`, `list_chunks` and
//! `download_chunk` in a paced loop while downloads run, timing each call.
//!
//! Each call is timed on the wall clock (the target) and on this thread's CPU clock (the work
//! the call itself did). A call whose wall time is far above its CPU time spent that time off
//! the CPU: preempted by another thread (an involuntary context switch) or blocked on a lock
//! (a voluntary one). The probe reads its context switch counters around every round, so each
//! slow call is attributed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chunk_manager::{ChunkManager, DataChunk, DatasetId};

use crate::latency::Histogram;
use crate::proc;

/// A call slower than this is recorded with its attribution.
const SLOW: Duration = Duration::from_micros(20);

/// What one probe measured.
#[derive(Default)]
pub struct ProbeReport {
    pub find_chunk: Histogram,
    pub list_chunks: Histogram,
    pub download_chunk: Histogram,
    /// An empty timed section: the floor that timer and scheduler noise set under this load.
    pub empty: Histogram,
    /// On-CPU time of each call, all three operations together.
    pub on_cpu: Histogram,
    pub rounds: u64,
    /// Calls slower than `SLOW`, by what the thread went through meanwhile.
    pub slow_preempted: u64,
    pub slow_blocked: u64,
    pub slow_unexplained: u64,
    /// The slowest call that was neither preempted nor blocked.
    pub max_unexplained_ns: u64,
}

impl ProbeReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rounds": self.rounds,
            "find_chunk": self.find_chunk.summary(),
            "list_chunks": self.list_chunks.summary(),
            "download_chunk": self.download_chunk.summary(),
            "empty": self.empty.summary(),
            "on_cpu": self.on_cpu.summary(),
            "slow_calls": {
                "threshold_ns": SLOW.as_nanos() as u64,
                "preempted": self.slow_preempted,
                "blocked": self.slow_blocked,
                "unexplained": self.slow_unexplained,
                "max_unexplained_ns": self.max_unexplained_ns,
            },
        })
    }
}

enum Operation {
    Find,
    List,
    Download,
    Empty,
}

/// Calls the API every `pace` until `stop` is set. `queries` are lookups to cycle through;
/// `requests` chunks already requested (so `download_chunk` is the "nothing to do" call that
/// an assignment refresh makes).
pub fn run(
    manager: &ChunkManager,
    queries: &[(DatasetId, u64)],
    requests: &[DataChunk],
    pace: Duration,
    stop: &AtomicBool,
) -> ProbeReport {
    let mut report = ProbeReport::default();
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (voluntary, involuntary) = proc::context_switches();
        let mut slow = Vec::new();
        for operation in [
            Operation::Find,
            Operation::List,
            Operation::Download,
            Operation::Empty,
        ] {
            // Prepared outside the timed section: the caller's clone is not the manager's cost.
            let request = requests[round % requests.len()].clone();
            let (dataset, block) = queries[round % queries.len()];
            let cpu_start = proc::thread_cpu_time();
            let start = Instant::now();
            match operation {
                Operation::Find => drop(manager.find_chunk(dataset, block)),
                Operation::List => drop(manager.list_chunks()),
                Operation::Download => manager.download_chunk(request),
                Operation::Empty => {}
            }
            let wall = start.elapsed();
            let cpu = proc::thread_cpu_time().saturating_sub(cpu_start);
            let nanos = wall.as_nanos() as u64;
            let histogram = match operation {
                Operation::Find => &mut report.find_chunk,
                Operation::List => &mut report.list_chunks,
                Operation::Download => &mut report.download_chunk,
                Operation::Empty => &mut report.empty,
            };
            histogram.record(nanos);
            if !matches!(operation, Operation::Empty) {
                report.on_cpu.record(cpu.as_nanos() as u64);
            }
            if wall > SLOW {
                slow.push(nanos);
            }
        }
        if !slow.is_empty() {
            let (voluntary_after, involuntary_after) = proc::context_switches();
            for nanos in slow {
                if involuntary_after > involuntary {
                    report.slow_preempted += 1;
                } else if voluntary_after > voluntary {
                    report.slow_blocked += 1;
                } else {
                    report.slow_unexplained += 1;
                    report.max_unexplained_ns = report.max_unexplained_ns.max(nanos);
                }
            }
        }
        round += 1;
        report.rounds += 1;
        std::thread::sleep(pace);
    }
    report
}
