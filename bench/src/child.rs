//! The `bench hold` child process: holds leases with the Rust client until it is killed, so that
//! scenario 5 can SIGKILL a real holder process and scenario 6 can measure one from outside.
//!
//! Protocol: the child prints one line, `held`, on stdout once every lease is held, then holds
//! (renewing in the background) until killed.

use super::BenchError;
use lease_lock_client::{Lease, LeaseClient};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The line a child prints once it holds every lease.
pub const HELD_LINE: &str = "held";
/// Longest wait for a child to hold its leases.
const HOLD_TIMEOUT: Duration = Duration::from_secs(60);

/// What a `bench hold` child holds: the arguments of `bench hold`.
#[derive(Clone, Debug, clap::Args)]
pub struct HoldArgs {
    #[arg(long)]
    pub conninfo: String,
    /// Lease names are `{prefix}-0` to `{prefix}-{leases-1}`.
    #[arg(long)]
    pub prefix: String,
    #[arg(long)]
    pub leases: usize,
    /// For example `10s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
    /// The schema of lease_lock's functions (the C extension's or the portable edition's).
    #[arg(long, default_value = "lease_lock")]
    pub schema: String,
}

impl HoldArgs {
    pub fn lease_name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            "hold".into(),
            "--conninfo".into(),
            self.conninfo.clone(),
            "--prefix".into(),
            self.prefix.clone(),
            "--leases".into(),
            self.leases.to_string(),
            "--lease-duration".into(),
            humantime::format_duration(self.lease_duration).to_string(),
            "--refresh-interval".into(),
            humantime::format_duration(self.refresh_interval).to_string(),
            "--schema".into(),
            self.schema.clone(),
        ]
    }
}

/// In the child: takes every lease (one client, `for_lease` for the others: one connection,
/// renewals sent together) and returns the handles, which renew until dropped.
///
/// # Errors
/// Invalid settings or a failed acquire.
pub async fn hold_leases(args: &HoldArgs) -> Result<Vec<Lease>, BenchError> {
    let client = LeaseClient::builder(&args.conninfo)
        .lease_name(args.lease_name(0))
        .lease_duration(args.lease_duration)
        .refresh_interval(args.refresh_interval)
        .schema(&args.schema)
        .build()?;
    let mut leases = Vec::with_capacity(args.leases);
    for i in 0..args.leases {
        let lease_client = if i == 0 { client.clone() } else { client.for_lease(&args.lease_name(i))? };
        leases.push(lease_client.acquire().await?);
    }
    Ok(leases)
}

/// In the runner: starts `exe hold ...` and waits until it says it holds its leases. The child
/// is killed if the handle is dropped.
///
/// # Errors
/// The child could not start, or exited or went silent before holding.
pub async fn spawn_holder(exe: &Path, args: &HoldArgs) -> Result<Child, BenchError> {
    spawn_child(exe, &args.to_args()).await
}

/// In the runner: starts `exe args...` (`bench hold ...` or `bench etcd-hold ...`) and waits
/// until it prints [`HELD_LINE`]. The child is killed if the handle is dropped.
///
/// # Errors
/// The child could not start, or exited or went silent before holding.
pub async fn spawn_child(exe: &Path, args: &[String]) -> Result<Child, BenchError> {
    let mut child =
        Command::new(exe).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("child has no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(HOLD_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) if line == HELD_LINE => Ok(child),
        Ok(Ok(Some(line))) => Err(anyhow::anyhow!(format!("holder child said {line:?} instead of {HELD_LINE:?}"))),
        Ok(Ok(None)) => Err(anyhow::anyhow!("holder child exited before holding its leases (see its stderr above)")),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(anyhow::anyhow!(format!("holder child did not hold its leases within {HOLD_TIMEOUT:?}"))),
    }
}
