//! What the figures were measured on: cores, CPU model, memory, kernel, PostgreSQL version and
//! durability settings, the date, the load when the run started, the commit.

use super::BenchError;
use serde::Serialize;
use std::path::Path;
use std::time::SystemTime;
use tokio_postgres::Client;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub date_utc: String,
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// 1, 5 and 15 minute load averages when the run started (other work on the machine).
    pub load_average_at_start: String,
    pub postgres_version: String,
    /// Settings that decide what a commit costs, as the server reports them.
    pub postgres_settings: Vec<(String, String)>,
    pub git_commit: Option<String>,
}

/// Describes this machine and the server behind `client`.
///
/// # Errors
/// The server could not be asked.
pub async fn describe(client: &Client, repo: &Path) -> Result<Machine, BenchError> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let read_trimmed = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default();
    let load = read_trimmed("/proc/loadavg");
    let load_average_at_start = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");

    let postgres_version: String = client.query_one("SELECT version()", &[]).await?.get(0);
    let rows = client
        .query(
            "SELECT name, current_setting(name) FROM unnest(ARRAY['fsync', 'synchronous_commit', \
             'wal_sync_method', 'full_page_writes', 'wal_level', 'shared_buffers', 'max_connections']) AS name",
            &[],
        )
        .await?;
    let postgres_settings = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // The code measured is the extension's and the client's: say if it differs from the commit.
    let git_commit = git(&["rev-parse", "--short", "HEAD"]).map(|commit| {
        match git(&["status", "--porcelain", "--", "extension", "client"]) {
            Some(changes) if !changes.is_empty() => format!("{commit} + uncommitted changes in extension/ or client/"),
            _ => commit,
        }
    });
    Ok(Machine {
        date_utc: utc_now(),
        cores,
        cpu_model,
        memory_gib: memory_kib / 1024.0 / 1024.0,
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        load_average_at_start,
        postgres_version,
        postgres_settings,
        git_commit,
    })
}

/// The time of the run, RFC 3339 in UTC to the second.
fn utc_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
