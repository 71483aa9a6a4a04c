//! `status`, `watch`, `release` and `evict`.

use crate::connect::DbArgs;
use crate::{exit, fail};
use clap::Args;
use lease_lock_client::Leader;
use std::io::Write;
use uuid::Uuid;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The lease (default: every lease of the database).
    name: Option<String>,
    /// One JSON object per lease, one per line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The lease.
    #[arg(default_value = "default")]
    name: String,
    /// One JSON object per change, one per line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// The holder id of the tenure to end (LEASE_LOCK_HOLDER of the command that held it).
    #[arg(long)]
    holder: Uuid,
    /// The lease.
    name: String,
}

#[derive(Args, Debug)]
pub struct EvictArgs {
    /// The lease.
    name: String,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn json(leader: &Leader) -> serde_json::Value {
    serde_json::json!({
        "lease_name": leader.lease_name,
        "held": leader.held,
        "holder": leader.holder.map(|h| h.to_string()),
        "holder_role": leader.holder_role,
        "fencing_token": leader.fencing_token,
        "expires_at": rfc3339(leader.expires_at),
    })
}

fn line(leader: &Leader) -> String {
    let holder = leader.holder.map_or_else(|| "-".to_string(), |h| h.to_string());
    let role = leader.holder_role.as_deref().unwrap_or("-");
    format!(
        "{} {} token={} holder={holder} role={role} expires_at={}",
        leader.lease_name,
        if leader.held { "held" } else { "free" },
        leader.fencing_token,
        rfc3339(leader.expires_at)
    )
}

fn print(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
}

/// `lease-lock status [NAME]`: exits 0 if NAME is held (or, without NAME, always), 1 if not.
pub async fn status(db: &DbArgs, args: StatusArgs) -> u8 {
    let client = match db.builder(args.name.as_deref().unwrap_or("default")).build() {
        Ok(c) => c,
        Err(e) => return fail("invalid settings", &e),
    };
    let leaders = match &args.name {
        Some(_) => client.leader().await.map(|l| l.into_iter().collect::<Vec<_>>()),
        None => client.leaders().await,
    };
    let leaders = match leaders {
        Ok(l) => l,
        Err(e) => return fail("could not read lease_status", &e),
    };
    for leader in &leaders {
        print(&if args.json { json(leader).to_string() } else { line(leader) });
    }
    match &args.name {
        Some(name) if !leaders.iter().any(|l| l.held) => {
            if leaders.is_empty() && !args.json {
                print(&format!("{name} free (never used)"));
            }
            exit::NOT_HELD
        }
        _ => exit::OK,
    }
}

/// `lease-lock watch NAME`: a line per change until killed (or stdout closes).
pub async fn watch(db: &DbArgs, args: WatchArgs) -> u8 {
    let client = match db.builder(&args.name).build() {
        Ok(c) => c,
        Err(e) => return fail("invalid settings", &e),
    };
    let mut watch = client.watch();
    while let Some(reading) = watch.next().await {
        let now = rfc3339(std::time::SystemTime::now());
        let text = match reading {
            Ok(Some(leader)) if args.json => {
                let mut v = json(&leader);
                v["time"] = serde_json::Value::String(now);
                v.to_string()
            }
            Ok(Some(leader)) => format!("{now} {}", line(&leader)),
            Ok(None) if args.json => {
                serde_json::json!({"time": now, "lease_name": args.name, "held": false}).to_string()
            }
            Ok(None) => format!("{now} {} free (never used)", args.name),
            Err(e) => {
                // Keep watching: the watcher retries and reads again after reconnecting.
                eprintln!("lease-lock: watch: {e}; retrying");
                continue;
            }
        };
        if !print(&text) {
            return exit::OK;
        }
    }
    exit::OK
}

/// `lease-lock release --holder ID NAME`.
pub async fn release(db: &DbArgs, args: ReleaseArgs) -> u8 {
    let client = match db.builder(&args.name).holder_id(args.holder).build() {
        Ok(c) => c,
        Err(e) => return fail("invalid settings", &e),
    };
    match client.release_as_holder().await {
        Ok(true) => exit::OK,
        Ok(false) => {
            eprintln!("lease-lock: {} was not held by {}", args.name, args.holder);
            exit::NOT_HELD
        }
        Err(e) => fail("could not release", &e),
    }
}

/// `lease-lock evict NAME`.
pub async fn evict(db: &DbArgs, args: EvictArgs) -> u8 {
    let client = match db.builder(&args.name).build() {
        Ok(c) => c,
        Err(e) => return fail("invalid settings", &e),
    };
    match client.evict().await {
        Ok(true) => exit::OK,
        Ok(false) => {
            eprintln!("lease-lock: {} was not held", args.name);
            exit::NOT_HELD
        }
        Err(e) => fail("could not evict", &e),
    }
}
