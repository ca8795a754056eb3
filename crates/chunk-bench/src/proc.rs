//! Readings from `/proc` and the clock: memory of this process, context switches and CPU time
//! of this thread.

use std::time::Duration;

/// A `kB` field of a `/proc/.../status` file, in KiB.
fn status_field(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Resident memory now, in KiB.
pub fn rss_kib() -> u64 {
    status_field("/proc/self/status", "VmRSS").unwrap_or(0)
}

/// The peak resident memory of the process so far (high-water mark), in KiB.
pub fn peak_rss_kib() -> u64 {
    status_field("/proc/self/status", "VmHWM").unwrap_or(0)
}

/// This thread's voluntary (blocked) and involuntary (preempted) context switches so far.
pub fn context_switches() -> (u64, u64) {
    let voluntary = status_field("/proc/thread-self/status", "voluntary_ctxt_switches");
    let involuntary = status_field("/proc/thread-self/status", "nonvoluntary_ctxt_switches");
    (voluntary.unwrap_or(0), involuntary.unwrap_or(0))
}

/// CPU time this thread has used.
pub fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The load average over the last minute, for the report.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            let fields: Vec<&str> = text.split_whitespace().take(3).collect();
            (fields.len() == 3).then(|| fields.join(" "))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Formats KiB as MiB.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
