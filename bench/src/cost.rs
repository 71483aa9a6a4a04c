//! Scenario 6: what holding leases costs the client process. One `bench hold` child per lease
//! count (1, 100, 1,000 leases on one `LeaseClient` via `for_lease`, default 10 s lease renewed
//! every 1 s), measured from outside over the same window: CPU time from
//! `/proc/<pid>/task/*/schedstat` (nanoseconds) and `/proc/<pid>/stat` (utime + stime, in clock
//! ticks), resident memory from `/proc/<pid>/status`. The three children run at the same time;
//! each one's CPU time is its own.

use super::child::{spawn_holder, HoldArgs};
use super::sql::Edition;
use super::{secs, BenchError, Plan};
use serde::Serialize;
use std::time::{Duration, Instant};
use tracing::info;

pub const LEASE_COUNTS: [usize; 3] = [1, 100, 1000];
pub const LEASE: Duration = Duration::from_secs(10);
pub const REFRESH: Duration = Duration::from_secs(1);
/// Time after the last lease was taken before measuring (the acquire burst is not holding).
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub leases: usize,
    pub window_s: f64,
    /// CPU time as a percentage of one core, from schedstat (ns).
    pub cpu_percent: f64,
    /// The same from `/proc/<pid>/stat` (10 ms ticks: coarse for an idle process).
    pub cpu_percent_ticks: f64,
    /// Client CPU per renewal: CPU time over the renewals due in the window (leases x window /
    /// refresh interval).
    pub cpu_us_per_renewal: f64,
    pub rss_kib: u64,
    /// (RSS - RSS of the 1-lease process) / (leases - 1).
    pub rss_kib_per_extra_lease: Option<f64>,
    pub threads: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CostResult {
    pub lease_ms: f64,
    pub refresh_ms: f64,
    pub rows: Vec<CostRow>,
}

struct CpuReading {
    at: Instant,
    schedstat_ns: u64,
    ticks: u64,
}

/// Runs scenario 6.
///
/// # Errors
/// A child that did not hold, or /proc files that could not be read.
pub async fn run(conninfo: &str, exe: &std::path::Path, plan: &Plan) -> Result<CostResult, BenchError> {
    let mut children = Vec::new();
    for &leases in &LEASE_COUNTS {
        let args = HoldArgs {
            conninfo: conninfo.to_string(),
            prefix: format!("cost{leases}"),
            leases,
            lease_duration: LEASE,
            refresh_interval: REFRESH,
            schema: Edition::C.schema().into(),
        };
        let child = spawn_holder(exe, &args).await?;
        let pid = child.id().ok_or_else(|| anyhow::anyhow!("holder child already exited"))?;
        children.push((leases, pid, child));
    }
    tokio::time::sleep(SETTLE).await;
    let mut before = Vec::new();
    for (_, pid, _) in &children {
        before.push(read_cpu(*pid)?);
    }
    tokio::time::sleep(secs(plan.cost_window_s)).await;
    let mut rows: Vec<CostRow> = Vec::new();
    for ((leases, pid, _), start) in children.iter().zip(&before) {
        let end = read_cpu(*pid)?;
        let wall = (end.at - start.at).as_secs_f64();
        let cpu_s = (end.schedstat_ns - start.schedstat_ns) as f64 / 1e9;
        let tick_s = (end.ticks - start.ticks) as f64 / clock_ticks_per_second();
        let renewals = *leases as f64 * wall / REFRESH.as_secs_f64();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status_field(&status, "VmRSS:").unwrap_or(0);
        let row = CostRow {
            leases: *leases,
            window_s: wall,
            cpu_percent: cpu_s / wall * 100.0,
            cpu_percent_ticks: tick_s / wall * 100.0,
            cpu_us_per_renewal: cpu_s * 1e6 / renewals,
            rss_kib,
            rss_kib_per_extra_lease: rows
                .first()
                .filter(|_| *leases > 1)
                .map(|one| (rss_kib as f64 - one.rss_kib as f64) / (*leases - 1) as f64),
            threads: status_field(&status, "Threads:").unwrap_or(0),
        };
        info!(leases, cpu_percent = row.cpu_percent, rss_kib, "client cost");
        rows.push(row);
    }
    for (_, _, mut child) in children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ok(CostResult { lease_ms: super::ms(LEASE), refresh_ms: super::ms(REFRESH), rows })
}

fn read_cpu(pid: u32) -> Result<CpuReading, BenchError> {
    let at = Instant::now();
    let mut schedstat_ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that exits between listing and reading is skipped (its time is lost here,
        // not double counted).
        if let Ok(text) = std::fs::read_to_string(path) {
            schedstat_ns += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces): state is
    // field 3, utime 14, stime 15.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let ticks = match (field(11), field(12)) {
        (Some(utime), Some(stime)) => utime + stime,
        _ => return Err(anyhow::anyhow!(format!("could not parse /proc/{pid}/stat"))),
    };
    Ok(CpuReading { at, schedstat_ns, ticks })
}

/// A `Name:   value kB` field of `/proc/<pid>/status`.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}
