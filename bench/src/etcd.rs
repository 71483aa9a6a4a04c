//! Scenario 9: side by side with etcd, what users pick instead for leader election.
//!
//! One etcd server (Debian's `etcd-server`, found as `etcd` on `PATH` or at `$ETCD_BIN`) runs
//! on the same machine as the PostgreSQL cluster, with its default settings (every raft entry
//! fsynced to its WAL), through the `etcd-client` crate (gRPC). Both systems are reached over
//! loopback TCP (etcd has no Unix-socket client listener by default) and over the link that
//! adds 0.5 ms each way ([`crate::link`]). Per link:
//!
//! - **renewal**: one etcd lease keepalive round trip (`LeaseKeepAlive` on its stream; etcd keeps
//!   lease expiry in the leader's memory and does not write keepalives to its log) against one
//!   `lease_refresh` (one durable commit), with an etcd `put` and PostgreSQL's one-row `UPDATE`
//!   as the two systems' durable-write floors, interleaved in rounds as scenario 1;
//! - **many**: one keepalive of an etcd lease with 10,000 keys attached against one
//!   `lease_refresh_many` of 10,000 leases (scenario 8's call);
//! - **graceful handover**: etcd's election (`Campaign` waiting on one candidate, `Resign` by
//!   the leader) against `release()` with a standby waiting in `acquire()` (scenario 5), timed
//!   from the resign or release returning to the standby leading;
//! - **crash failover**: a leader process SIGKILLed at a random phase of its renewals, the same
//!   TTL and refresh interval for both (etcd: a `bench etcd-hold` child campaigning on its own
//!   lease; lease_lock: scenario 5's `bench hold` child), timed from the kill to the standby
//!   leading.

use super::failover::{self, signed_ms, CRASH_LEASE, CRASH_REFRESH, GRACEFUL_LEASE, GRACEFUL_REFRESH, STANDBY_SETTLE};
use super::single::{Alternative, Caller};
use super::sql::{self, expect, random_unit, Edition};
use super::stats::{paired_ratio, round_order, run_for, LatencySummary, RoundLatencies, SmallSample, Spread};
use super::{batch, child, link, secs, BenchError, Plan};
use anyhow::Context;
use etcd_client::{
    Client, LeaderKey, LeaseKeepAliveStream, LeaseKeeper, LeaseTimeToLiveOptions, PutOptions, ResignOptions, Txn, TxnOp,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tracing::info;
use uuid::Uuid;

/// Keys attached to one etcd lease in the "many" comparison (scenario 8's lease count).
pub const MANY_KEYS: usize = batch::LEASES;
/// etcd's default `--max-txn-ops`: the keys are attached 128 per transaction.
const TXN_OPS: usize = 128;
/// The election both candidates campaign in.
const ELECTION: &str = "bench-election";
/// Longest wait for the server to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// TTL of the leases the renewal comparisons keep alive (a keepalive costs the same whatever
/// the TTL; long enough that none expires between rounds).
const RENEWAL_TTL_S: i64 = 3600;

/// A throwaway etcd server on free loopback ports, its data in a temporary directory; killed
/// and removed when dropped.
pub struct EtcdServer {
    child: std::process::Child,
    dir: PathBuf,
    addr: std::net::SocketAddr,
    pub version: String,
}

impl EtcdServer {
    /// Starts `etcd` with its defaults (only names, ports and the data directory given) and
    /// waits until it answers.
    ///
    /// # Errors
    /// No etcd binary, or a server that did not start (its log is in the error).
    pub async fn start() -> Result<EtcdServer, BenchError> {
        let bin = std::env::var_os("ETCD_BIN").unwrap_or_else(|| "etcd".into());
        let version = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .with_context(|| format!("running {bin:?} --version (scripts/bench.sh installs etcd-server)"))?;
        let version = String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or_default().to_string();
        let dir = std::env::temp_dir().join(format!("lease_lock-bench-etcd-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = std::process::Command::new(&bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin:?}"))?;
        let server = EtcdServer { child, dir, addr: ([127, 0, 0, 1], client_port).into(), version };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answered = async { Client::connect([server.endpoint()], None).await?.status().await };
            match answered.await {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(server.dir.join("etcd.log")).unwrap_or_default();
                    return Err(anyhow::anyhow!(format!(
                        "etcd did not answer within {START_TIMEOUT:?}: {e}; its log:\n{log}"
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free on 127.0.0.1 now (bound and let go; etcd binds it right after).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An etcd lease kept alive by a background task every `refresh` (as a session of etcd's
/// `concurrency` package does), for a candidate of the election. The task stops when dropped.
struct Candidate {
    client: Client,
    lease: i64,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Candidate {
    async fn new(endpoint: &str, ttl: Duration, refresh: Duration) -> Result<Candidate, BenchError> {
        let mut client = Client::connect([endpoint], None).await?;
        let lease = client.lease_grant(ttl.as_secs() as i64, None).await?.id();
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
        let keepalive = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() || !matches!(stream.message().await, Ok(Some(_))) {
                    return;
                }
                tokio::time::sleep(refresh).await;
            }
        });
        Ok(Candidate { client, lease, keepalive })
    }

    /// Campaigns until this candidate leads; its leader key.
    async fn campaign(mut client: Client, lease: i64) -> Result<LeaderKey, BenchError> {
        let mut won = client.campaign(ELECTION, lease.to_string(), lease).await?;
        won.take_leader().ok_or_else(|| anyhow::anyhow!("etcd's campaign answered without a leader key"))
    }

    /// A standby waiting in `Campaign`, reporting its leader key and when it began to lead
    /// (etcd's twin of scenario 5's `wait_in_acquire`).
    fn campaign_in_background(&self) -> tokio::task::JoinHandle<Result<(LeaderKey, Instant), BenchError>> {
        let (client, lease) = (self.client.clone(), self.lease);
        tokio::spawn(async move {
            let key = Candidate::campaign(client, lease).await?;
            Ok((key, Instant::now()))
        })
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// One keepalive round trip on a lease's stream, checked: an expired lease answers TTL 0.
struct KeepAlive {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl KeepAlive {
    async fn open(client: &mut Client, lease: i64) -> Result<KeepAlive, BenchError> {
        let (keeper, stream) = client.lease_keep_alive(lease).await?;
        Ok(KeepAlive { keeper, stream })
    }

    async fn call(&mut self) -> Result<(), BenchError> {
        self.keeper.keep_alive().await?;
        let answer = self.stream.message().await?.ok_or_else(|| anyhow::anyhow!("etcd ended the keepalive stream"))?;
        expect(answer.ttl() > 0, "etcd's keepalive found the lease expired")
    }
}

/// One way of renewing (or a floor), for the renewal and the many-leases comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Contender {
    EtcdKeepAlive,
    EtcdPut,
    LeaseRefresh,
    UpdateOneRow,
    EtcdKeepAliveManyKeys,
    LeaseRefreshMany,
}

impl Contender {
    pub fn label(self) -> &'static str {
        match self {
            Contender::EtcdKeepAlive => "etcd lease keepalive",
            Contender::EtcdPut => "etcd put (durable write floor)",
            Contender::LeaseRefresh => "lease_lock.lease_refresh",
            Contender::UpdateOneRow => "PostgreSQL one-row UPDATE (durable write floor)",
            Contender::EtcdKeepAliveManyKeys => "etcd keepalive, 10,000 keys on the lease",
            Contender::LeaseRefreshMany => "lease_lock.lease_refresh_many, 10,000 leases",
        }
    }
}

enum Call {
    KeepAlive(KeepAlive),
    Put { client: Box<Client>, lease: i64 },
    Postgres(Caller),
    Batch(batch::Renewer),
}

impl Call {
    async fn call(&mut self) -> Result<(), BenchError> {
        match self {
            Call::KeepAlive(k) => k.call().await,
            Call::Put { client, lease } => {
                client.put("bench/put", "x", Some(PutOptions::new().with_lease(*lease))).await?;
                Ok(())
            }
            Call::Postgres(caller) => caller.call().await,
            Call::Batch(renewer) => renewer.call(batch::Way::Batch, &mut 0).await,
        }
    }
}

/// One contender's figures over one link.
#[derive(Clone, Debug, Serialize)]
pub struct RateRow {
    pub contender: Contender,
    pub label: &'static str,
    /// Calls per second (median of the rounds and range).
    pub rate: Spread,
    pub latency: LatencySummary,
}

/// Everything scenario 9 measured over one link.
#[derive(Clone, Debug, Serialize)]
pub struct LinkResult {
    pub link: String,
    pub renewal: Vec<RateRow>,
    /// Time per `lease_refresh` over time per keepalive, per round.
    pub refresh_vs_keepalive: Spread,
    pub many: Vec<RateRow>,
    /// Time per `lease_refresh_many` of 10,000 leases over time per keepalive of the lease with
    /// 10,000 keys, per round. Goal: at most 2.
    pub many_vs_keepalive: Spread,
    /// From the resign (etcd) or release (lease_lock) returning to the standby leading.
    pub graceful_etcd: SmallSample,
    pub graceful_lease_lock: SmallSample,
    /// From the resign or release being called to the standby leading: the whole handover,
    /// the leader's own durable write included. The goal's comparison.
    pub graceful_etcd_from_call: SmallSample,
    pub graceful_lease_lock_from_call: SmallSample,
    /// From SIGKILL of the leader process to the standby leading.
    pub crash_etcd: SmallSample,
    pub crash_lease_lock: SmallSample,
}

impl LinkResult {
    pub fn renewal_row(&self, c: Contender) -> Option<&RateRow> {
        self.renewal.iter().chain(&self.many).find(|r| r.contender == c)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EtcdResult {
    pub etcd_version: String,
    pub keys: usize,
    pub graceful_ttl_ms: f64,
    pub graceful_refresh_ms: f64,
    pub crash_ttl_ms: f64,
    pub crash_refresh_ms: f64,
    pub links: Vec<LinkResult>,
}

/// Where scenario 9 reaches PostgreSQL: over loopback TCP and over the delayed link.
pub struct Targets<'a> {
    pub tcp: &'a str,
    pub delayed: &'a str,
}

/// Runs scenario 9.
///
/// # Errors
/// etcd missing or not starting, a failed call, a holder child that did not lead.
pub async fn run(postgres: Targets<'_>, exe: &Path, plan: &Plan) -> Result<EtcdResult, BenchError> {
    let server = EtcdServer::start().await?;
    info!(version = %server.version, endpoint = %server.endpoint(), "etcd started");
    let delay_link = link::DelayLink::start(server.addr(), super::LINK_DELAY_EACH_WAY)?;
    let delayed_endpoint = format!("http://127.0.0.1:{}", delay_link.port());
    let many_lease = attach_many_keys(&server.endpoint()).await?;
    let mut links = Vec::new();
    for (link_name, conninfo, endpoint) in
        [("loopback TCP", postgres.tcp, server.endpoint()), (super::DELAYED_LINK, postgres.delayed, delayed_endpoint)]
    {
        info!(link = link_name, "scenario 9: renewal against etcd's keepalive");
        let renewal = renewal(conninfo, &endpoint, link_name, plan).await?;
        info!(link = link_name, "scenario 9: 10,000 leases against one keepalive of 10,000 keys");
        let many = many(conninfo, &endpoint, many_lease, link_name, plan).await?;
        info!(link = link_name, "scenario 9: graceful handover");
        let (graceful_etcd, graceful_etcd_from_call) = etcd_graceful(&endpoint, plan.graceful_reps).await?;
        let (graceful_lease_lock, graceful_lease_lock_from_call) =
            failover::notified(conninfo, Edition::C, plan.graceful_reps).await?;
        info!(link = link_name, "scenario 9: crash failover");
        let crash_etcd = etcd_crash(&endpoint, exe, plan.crash_reps).await?;
        let crash_lease_lock = failover::crash(conninfo, Edition::C, exe, plan.crash_reps).await?;
        let pos = |c: Contender| renewal.0.iter().position(|&x| x == c).unwrap_or(0);
        let refresh_vs_keepalive =
            paired_ratio(&renewal.1[pos(Contender::EtcdKeepAlive)], &renewal.1[pos(Contender::LeaseRefresh)]);
        // Time ratio: the keepalive's calls per second over the batch's.
        let many_vs_keepalive = paired_ratio(&many.1[1], &many.1[0]);
        links.push(LinkResult {
            link: link_name.to_string(),
            renewal: renewal.2,
            refresh_vs_keepalive,
            many: many.2,
            many_vs_keepalive,
            graceful_etcd: SmallSample::of(graceful_etcd),
            graceful_lease_lock: SmallSample::of(graceful_lease_lock),
            graceful_etcd_from_call: SmallSample::of(graceful_etcd_from_call),
            graceful_lease_lock_from_call: SmallSample::of(graceful_lease_lock_from_call),
            crash_etcd: SmallSample::of(crash_etcd),
            crash_lease_lock: SmallSample::of(crash_lease_lock),
        });
    }
    Ok(EtcdResult {
        etcd_version: server.version.clone(),
        keys: MANY_KEYS,
        graceful_ttl_ms: super::ms(GRACEFUL_LEASE),
        graceful_refresh_ms: super::ms(GRACEFUL_REFRESH),
        crash_ttl_ms: super::ms(CRASH_LEASE),
        crash_refresh_ms: super::ms(CRASH_REFRESH),
        links,
    })
}

/// Per-round rates of each contender, and their rows.
type Measured = (Vec<Contender>, Vec<Vec<f64>>, Vec<RateRow>);

/// Runs `calls` back to back in rounds, the order changing each round (as scenario 1).
async fn measure(
    mut calls: Vec<(Contender, Call)>,
    link: &str,
    rounds: usize,
    period: Duration,
    warmup: u32,
) -> Result<Measured, BenchError> {
    let n = calls.len();
    let mut rates = vec![Vec::new(); n];
    let mut latencies = vec![RoundLatencies::default(); n];
    for round in 0..rounds {
        for i in round_order(n, round) {
            let (contender, call) = &mut calls[i];
            let sample = run_for(period, warmup, async || call.call().await).await?;
            info!(link, round, contender = contender.label(), calls_per_s = sample.rate() as u64, "measured");
            rates[i].push(sample.rate());
            latencies[i].push(sample.latencies);
        }
    }
    let contenders: Vec<Contender> = calls.iter().map(|(c, _)| *c).collect();
    let rows = contenders
        .iter()
        .enumerate()
        .map(|(i, &contender)| RateRow {
            contender,
            label: contender.label(),
            rate: Spread::of(rates[i].clone()),
            latency: latencies[i].summary(),
        })
        .collect();
    Ok((contenders, rates, rows))
}

async fn renewal(conninfo: &str, endpoint: &str, link: &str, plan: &Plan) -> Result<Measured, BenchError> {
    let mut client = Client::connect([endpoint], None).await?;
    let lease = client.lease_grant(RENEWAL_TTL_S, None).await?.id();
    let holder = Uuid::new_v4();
    let lease_name = format!("etcd-side-{}", Uuid::new_v4());
    let take = sql::LeaseCalls::connect(conninfo, Edition::C, holder).await?;
    expect(take.acquire(&lease_name).await?, "the holder could not take the lease")?;
    let calls = vec![
        (Contender::EtcdKeepAlive, Call::KeepAlive(KeepAlive::open(&mut client, lease).await?)),
        (Contender::EtcdPut, Call::Put { client: Box::new(client.clone()), lease }),
        (
            Contender::LeaseRefresh,
            Call::Postgres(Caller::open(Alternative::LeaseRefresh, conninfo, holder, &lease_name).await?),
        ),
        (
            Contender::UpdateOneRow,
            Call::Postgres(Caller::open(Alternative::UpdateOneRow, conninfo, holder, &lease_name).await?),
        ),
    ];
    measure(calls, link, plan.single_rounds, secs(plan.single_period_s), 20).await
}

/// Grants a lease and attaches [`MANY_KEYS`] keys to it (checked with `LeaseTimeToLive`).
async fn attach_many_keys(endpoint: &str) -> Result<i64, BenchError> {
    let mut client = Client::connect([endpoint], None).await?;
    let lease = client.lease_grant(RENEWAL_TTL_S, None).await?.id();
    let keys: Vec<usize> = (1..=MANY_KEYS).collect();
    for chunk in keys.chunks(TXN_OPS) {
        let puts: Vec<TxnOp> = chunk
            .iter()
            .map(|i| TxnOp::put(format!("bench/many/{i}"), "x", Some(PutOptions::new().with_lease(lease))))
            .collect();
        client.txn(Txn::new().and_then(puts)).await?;
    }
    let attached = client.lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys())).await?;
    expect(attached.keys().len() == MANY_KEYS, "etcd's lease does not hold every one of the 10,000 keys")?;
    Ok(lease)
}

/// Column 0: `lease_refresh_many`, column 1: the keepalive of the lease with the keys.
async fn many(conninfo: &str, endpoint: &str, lease: i64, link: &str, plan: &Plan) -> Result<Measured, BenchError> {
    let mut client = Client::connect([endpoint], None).await?;
    let prefix = format!("etcd-many-{}-", Uuid::new_v4());
    let calls = vec![
        (Contender::LeaseRefreshMany, Call::Batch(batch::Renewer::open(conninfo, Edition::C, &prefix).await?)),
        (Contender::EtcdKeepAliveManyKeys, Call::KeepAlive(KeepAlive::open(&mut client, lease).await?)),
    ];
    measure(calls, link, plan.batch_rounds, secs(plan.batch_period_s), 1).await
}

/// Two candidates take turns: the leader resigns, the other (waiting in `Campaign`) leads.
/// Times from the resign returning, and from it being called.
async fn etcd_graceful(endpoint: &str, reps: usize) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
    let candidates = [
        Candidate::new(endpoint, GRACEFUL_LEASE, GRACEFUL_REFRESH).await?,
        Candidate::new(endpoint, GRACEFUL_LEASE, GRACEFUL_REFRESH).await?,
    ];
    let mut leader = Candidate::campaign(candidates[0].client.clone(), candidates[0].lease).await?;
    let (mut from_return, mut from_call) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let (holder, standby) = (&candidates[rep % 2], &candidates[(rep + 1) % 2]);
        let waiting = standby.campaign_in_background();
        tokio::time::sleep(STANDBY_SETTLE).await;
        let mut client = holder.client.clone();
        let called = Instant::now();
        client.resign(Some(ResignOptions::new().with_leader(leader))).await?;
        let returned = Instant::now();
        let (key, led_at) = waiting.await??;
        from_return.push(signed_ms(led_at, returned));
        from_call.push(signed_ms(led_at, called));
        info!(rep, ms = signed_ms(led_at, returned), "etcd: the campaigning standby leads");
        leader = key;
    }
    candidates[reps % 2].client.clone().resign(Some(ResignOptions::new().with_leader(leader))).await?;
    Ok((from_return, from_call))
}

/// The arguments of `bench etcd-hold`: campaign on a lease of its own, keep it alive, say
/// [`child::HELD_LINE`] once leading, and lead until killed.
#[derive(Clone, Debug, clap::Args)]
pub struct EtcdHoldArgs {
    #[arg(long)]
    pub endpoint: String,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
}

/// In the `bench etcd-hold` child: leads the election until the process is killed.
///
/// # Errors
/// etcd could not be reached or the campaign failed.
pub async fn hold(args: &EtcdHoldArgs) -> Result<(), BenchError> {
    let candidate = Candidate::new(&args.endpoint, args.ttl, args.refresh_interval).await?;
    Candidate::campaign(candidate.client.clone(), candidate.lease).await?;
    println!("{}", child::HELD_LINE);
    std::future::pending::<()>().await;
    drop(candidate);
    Ok(())
}

/// A leader process is killed; a standby waiting in `Campaign` leads once etcd expires the
/// dead leader's lease (and with it its key).
async fn etcd_crash(endpoint: &str, exe: &Path, reps: usize) -> Result<Vec<f64>, BenchError> {
    let args = [
        "etcd-hold".to_string(),
        "--endpoint".into(),
        endpoint.to_string(),
        "--ttl".into(),
        humantime::format_duration(CRASH_LEASE).to_string(),
        "--refresh-interval".into(),
        humantime::format_duration(CRASH_REFRESH).to_string(),
    ];
    let standby = Candidate::new(endpoint, CRASH_LEASE, CRASH_REFRESH).await?;
    let mut times = Vec::new();
    for rep in 0..reps {
        let mut leader = child::spawn_child(exe, &args).await?;
        let waiting = standby.campaign_in_background();
        // Kill at a random phase of the leader's keepalives.
        tokio::time::sleep(STANDBY_SETTLE + CRASH_REFRESH.mul_f64(random_unit())).await;
        let killed = Instant::now();
        leader.start_kill()?;
        let (key, led_at) = waiting.await??;
        times.push(signed_ms(led_at, killed));
        info!(rep, ms = signed_ms(led_at, killed), "etcd: the standby leads after its leader was killed");
        let _ = leader.wait().await;
        // Step down at once, so the next repetition's child leads without waiting.
        standby.client.clone().resign(Some(ResignOptions::new().with_leader(key))).await?;
    }
    Ok(times)
}
