//! Database failover: a primary and a streaming standby; the primary is stopped and the standby
//! promoted (`pg_ctl promote`). Clients use a multi-host connection string with
//! `target_session_attrs=read-write`, so they follow whichever server accepts writes.

use lease_lock_client::{LeaseClient, LeaseState, LossReason};
use lease_lock_tests::init_tracing;
use lease_lock_tests::leases::{record_states, short_lease_client};
use lease_lock_tests::replication::{ReplicaSet, Replication};
use std::time::{Duration, Instant, SystemTime};
use tokio::time::{sleep, timeout};

/// The first token a new tenure gets on timeline 2 (the first after one promotion).
const TIMELINE_2_FLOOR: i64 = 1 << 40;

fn client(conninfo: &str, lease: Duration, refresh: Duration) -> LeaseClient {
    short_lease_client(conninfo, "f", lease, refresh)
        .call_timeout(Duration::from_millis(500))
        .build()
        .expect("valid config")
}

/// `holder|fencing_token|held|timeline` of lease `f` on a server.
fn status(cluster: &lease_lock_tests::TestCluster, db: &str) -> String {
    cluster.psql(db, "SELECT holder, fencing_token, held, timeline FROM lease_lock.lease_status WHERE lease_name = 'f'")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

// 1. Synchronous replication: the holder keeps its lease through the promotion by reconnecting
//    within its renew deadline; same token; no standby client acquires meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn sync_holder_keeps_its_lease_through_promotion() {
    init_tracing();
    let set = std::sync::Arc::new(ReplicaSet::start(Replication::Sync).await);
    let (lease_d, refresh) = (Duration::from_secs(4), Duration::from_millis(250));
    let holder = client(&set.conninfo("holder"), lease_d, refresh).acquire().await.unwrap();
    assert_eq!(holder.fencing_token(), 1);
    let states = record_states(&holder);
    let standby = client(&set.conninfo("standby"), lease_d, refresh);
    let waiting = tokio::spawn(async move { standby.acquire().await });
    sleep(refresh * 3).await;

    let failover_started = Instant::now();
    let s = set.clone();
    blocking(move || {
        s.primary.stop_server("fast");
        s.standby.promote();
    })
    .await;
    // The holder renews on the new primary (timeline 2) with its old token.
    let holder_id = holder.holder_id().to_string();
    let s = set.clone();
    blocking(move || {
        s.wait_for("the holder to renew on the new primary", Duration::from_secs(4), || {
            s.standby.psql(
                &s.db,
                "SELECT holder, fencing_token, timeline FROM lease_lock.lease_status WHERE lease_name = 'f'",
            ) == format!("{holder_id}|1|2")
        })
    })
    .await;
    let renewed_after = failover_started.elapsed();
    sleep(refresh * 4).await;
    assert!(holder.is_held(), "renewed on the new primary after {renewed_after:?}");
    assert_eq!(holder.fencing_token(), 1);
    assert!(!waiting.is_finished(), "no standby may acquire while the holder keeps its lease");

    assert!(holder.release().await.unwrap());
    let next = timeout(Duration::from_secs(3), waiting).await.expect("standby acquired").unwrap().unwrap();
    assert_eq!(next.fencing_token(), TIMELINE_2_FLOOR, "first new tenure on timeline 2");
    let states = states.await.unwrap();
    assert!(states.iter().all(|(_, s)| !matches!(s, LeaseState::Lost(_))), "{states:?}");
    eprintln!("sync failover: holder renewed on the promoted standby {renewed_after:?} after the primary was stopped");
}

// 2. A holder that cannot reconnect within its renew deadline reports lost; a standby client then
//    acquires on the new primary with a larger token (after the lease the holder was granted
//    has run out from the moment the new primary was first asked).
#[tokio::test(flavor = "multi_thread")]
async fn holder_that_cannot_reconnect_in_time_loses_and_a_standby_takes_over() {
    init_tracing();
    let set = std::sync::Arc::new(ReplicaSet::start(Replication::Sync).await);
    let (lease_d, refresh) = (Duration::from_secs(2), Duration::from_millis(200));
    let holder = client(&set.conninfo("holder2"), lease_d, refresh).acquire().await.unwrap();
    sleep(refresh * 2).await;
    let s = set.clone();
    blocking(move || s.primary.stop_server("immediate")).await;
    let crashed = Instant::now();
    // No primary for longer than the lease: the holder cannot renew anywhere.
    let reason = timeout(lease_d * 2, holder.lost()).await.expect("loss reported");
    let lost_at = Instant::now();
    assert!(matches!(reason, LossReason::RenewDeadline { .. }), "{reason:?}");
    assert!(lost_at - crashed < lease_d, "lost {:?} after the crash", lost_at - crashed);
    sleep(lease_d - (lost_at - crashed)).await;

    let s = set.clone();
    blocking(move || s.standby.promote()).await;
    let standby = client(&set.conninfo("standby2"), lease_d, refresh);
    let next = timeout(lease_d * 3, standby.acquire()).await.expect("standby acquired").unwrap();
    let acquired_at = Instant::now();
    assert!(next.fencing_token() > holder.fencing_token());
    assert_eq!(next.fencing_token(), TIMELINE_2_FLOOR);
    assert!(acquired_at > lost_at);
    eprintln!(
        "holder lost {:?} after the crash; standby held {:?} after the crash",
        lost_at - crashed,
        acquired_at - crashed
    );
}

// 3. Asynchronous replication: renewals the old primary acknowledged but did not replicate are
//    lost, so the new primary's row expires earlier than the holder was promised. The holder
//    (cut off from both servers) still trusts its lease until its local deadline; the standby
//    client must not hold the lease before that. The extension makes sure of it: a row from an
//    older timeline starts no new tenure before the promotion plus its longest lease duration.
#[tokio::test(flavor = "multi_thread")]
async fn async_replication_loses_renewals_but_never_makes_two_holders() {
    init_tracing();
    let set = std::sync::Arc::new(ReplicaSet::start(Replication::Async).await);
    let (lease_d, refresh) = (Duration::from_secs(2), Duration::from_millis(200));
    // The holder reaches the primary through a proxy of its own, so it can be cut off.
    let holder_link =
        lease_lock_tests::proxy::Proxy::start(format!("127.0.0.1:{}", set.primary.port()).parse().unwrap())
            .await
            .unwrap();
    let holder_conninfo =
        format!("host=127.0.0.1 port={} user=postgres dbname={} application_name=holder3", holder_link.port(), set.db);
    let holder = client(&holder_conninfo, lease_d, refresh).acquire().await.unwrap();
    let states = record_states(&holder);
    sleep(refresh * 2).await;
    let s = set.clone();
    blocking(move || s.wait_for_replay()).await;

    // The standby stops receiving WAL; the primary keeps acknowledging renewals for 1.5 leases.
    set.link.set_stalled(true);
    sleep(lease_d * 3 / 2).await;
    let promised = holder.expires_at().expect("held");
    // Cut the holder off, crash the primary, promote the standby.
    holder_link.set_refusing(true);
    holder_link.cut();
    let s = set.clone();
    blocking(move || {
        s.primary.stop_server("immediate");
        s.standby.promote();
    })
    .await;
    let promoted = Instant::now();

    // What asynchronous replication lost: the new primary's expiry is older than the one the
    // holder's last acknowledged renewal promised, and already past.
    let rows = set
        .standby
        .query(
            &set.db,
            "SELECT expires_at, expires_at < clock_timestamp(), timeline FROM lease_lock.lease_status \
             WHERE lease_name = 'f'",
            &[],
        )
        .await;
    let (replicated, passed, timeline): (SystemTime, bool, i32) = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert!(
        replicated + Duration::from_secs(1) < promised,
        "replicated expiry {replicated:?} vs promised {promised:?}"
    );
    assert!(passed, "the replicated expiry has passed");
    assert_eq!(timeline, 1, "written on the old timeline");

    // A standby client asks the new primary at once; it must not hold before the holder's trust
    // has ended.
    let standby = client(&set.conninfo("standby3"), lease_d, refresh);
    let next = timeout(lease_d * 3, standby.acquire()).await.expect("standby acquired").unwrap();
    let standby_from = Instant::now();
    let lost = timeout(lease_d, holder.lost()).await.expect("holder reported the loss");
    assert!(matches!(lost, LossReason::RenewDeadline { .. }), "{lost:?}");
    let states = states.await.unwrap();
    let holder_trust_end = states
        .iter()
        .filter_map(|(_, s)| match s {
            LeaseState::Held { valid_until, .. } => Some(*valid_until),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        standby_from > holder_trust_end,
        "the standby held {:?} after promotion, before the old holder's trust ended ({:?} after promotion)",
        standby_from - promoted,
        holder_trust_end.saturating_duration_since(promoted)
    );
    assert_eq!(next.fencing_token(), TIMELINE_2_FLOOR, "above every token of the old timeline");
    eprintln!(
        "async failover: replicated expiry was {:.1} s older than promised; the standby held {:?} after promotion, \
         {:?} after the old holder stopped trusting its lease",
        promised.duration_since(replicated).unwrap_or_default().as_secs_f64(),
        standby_from - promoted,
        standby_from - holder_trust_end
    );
}

// 4. With synchronous replication no acknowledged tenure is lost: the new primary has the last
//    acknowledged token, and later tokens are larger still.
#[tokio::test(flavor = "multi_thread")]
async fn sync_tokens_never_go_backwards_across_promotion() {
    init_tracing();
    let set = std::sync::Arc::new(ReplicaSet::start(Replication::Sync).await);
    let (lease_d, refresh) = (Duration::from_secs(2), Duration::from_millis(200));
    let clients: Vec<LeaseClient> =
        (0..3).map(|i| client(&set.conninfo(&format!("churn{i}")), lease_d, refresh)).collect();
    // Hand the lease around as fast as possible while the primary crashes.
    let churn = {
        let clients = clients.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for round in 0.. {
                match timeout(Duration::from_millis(300), clients[round % 3].try_acquire()).await {
                    Ok(Ok(Some(lease))) => {
                        acknowledged.push((round % 3, lease.fencing_token()));
                        let _ = lease.release().await;
                    }
                    Ok(Ok(None)) => continue, // the last release has not reached the server yet
                    _ => return acknowledged, // the primary is gone
                }
            }
            acknowledged
        })
    };
    sleep(Duration::from_millis(500)).await;
    let s = set.clone();
    blocking(move || s.primary.stop_server("immediate")).await;
    let acknowledged = churn.await.unwrap();
    let &(last_holder, max_acknowledged) =
        acknowledged.iter().max_by_key(|(_, t)| *t).expect("some tenures before the crash");
    assert!(acknowledged.len() >= 5, "only {} tenures before the crash", acknowledged.len());
    let s = set.clone();
    blocking(move || s.standby.promote()).await;
    let on_new_primary: i64 = set
        .standby
        .psql(&set.db, "SELECT fencing_token FROM lease_lock.lease_status WHERE lease_name = 'f'")
        .parse()
        .unwrap();
    assert!(on_new_primary >= max_acknowledged, "{on_new_primary} < acknowledged {max_acknowledged}");
    let mut after = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let lease = timeout(lease_d * 3, c.acquire()).await.expect("acquired after promotion").unwrap();
        after.push((i, lease.fencing_token()));
        lease.release().await.unwrap();
    }
    // Each tenure is newer than every acknowledged one: acquire never continues a tenure from
    // the old timeline, not even for its own holder (whose release the crash may have cut short).
    for &(_, token) in &after {
        assert!(token > max_acknowledged, "{after:?} vs acknowledged {max_acknowledged} of client {last_holder}");
    }
    assert!(after.windows(2).all(|w| w[0].1 < w[1].1), "{after:?}");
    eprintln!(
        "{} tenures before the crash, last acknowledged token {max_acknowledged}; after promotion: {after:?}",
        acknowledged.len()
    );
}

// 5. Asynchronous replication loses a handover: H held token 1 (replicated), then, with
//    replication stalled, H released and O took token 2 and renewed it, all acknowledged by the
//    old primary only. The promoted standby has H's tenure. H (which believes it released) must
//    not get the lease back with lease_acquire, O's renewal is refused, and nobody holds it
//    before O's trust has surely ended (promotion + the lease duration); then with a token above
//    every token of the old timeline. The old code let H's acquire continue tenure 1 at once.
#[tokio::test(flavor = "multi_thread")]
async fn async_lost_handover_never_makes_two_holders() {
    init_tracing();
    let set = std::sync::Arc::new(ReplicaSet::start(Replication::Async).await);
    const H: &str = "00000000-0000-0000-0000-0000000000a1";
    const O: &str = "00000000-0000-0000-0000-0000000000b2";
    const X: &str = "00000000-0000-0000-0000-0000000000c3";
    let lease_d = Duration::from_secs(3);
    let call = |on: &lease_lock_tests::TestCluster, f: &str, who: &str| {
        on.psql(&set.db, &format!("SELECT acquired, fencing_token FROM lease_lock.{f}('{who}', '3 s', 'handover')"))
    };
    assert_eq!(call(&set.primary, "lease_acquire", H), "t|1");
    let s = set.clone();
    blocking(move || s.wait_for_replay()).await;

    set.link.set_stalled(true);
    assert_eq!(set.primary.psql(&set.db, &format!("SELECT lease_lock.lease_release('{H}', 'handover')")), "t");
    assert_eq!(call(&set.primary, "lease_acquire", O), "t|2");
    assert_eq!(call(&set.primary, "lease_refresh", O), "t|2");
    let o_renewed = Instant::now(); // O trusts its lease until at most this + lease_d
    let s = set.clone();
    blocking(move || {
        s.primary.stop_server("immediate");
        s.standby.promote();
    })
    .await;
    // The hold runs from the promotion (the history file's time), so the bound on getting the
    // lease back counts from here: stopping and promoting took seconds once on a loaded machine.
    let promoted = Instant::now();
    let new_primary = &set.standby;
    assert_eq!(
        new_primary.psql(
            &set.db,
            "SELECT holder, fencing_token, timeline FROM lease_lock.lease_status WHERE lease_name = 'handover'"
        ),
        format!("{H}|1|1"),
        "the handover was lost with the old primary"
    );
    assert_eq!(call(new_primary, "lease_acquire", H), "f|", "H's acquire must not continue tenure 1");
    assert_eq!(call(new_primary, "lease_refresh", O), "f|", "O's tenure does not exist here");
    let got_at = loop {
        let answer = call(new_primary, "lease_acquire", X);
        if answer.starts_with('t') {
            assert_eq!(answer, format!("t|{TIMELINE_2_FLOOR}"));
            break Instant::now();
        }
        assert!(
            promoted.elapsed() < lease_d * 4,
            "nobody got the lease back {:?} after the promotion ({:?} after O's renewal)",
            promoted.elapsed(),
            o_renewed.elapsed()
        );
        sleep(Duration::from_millis(100)).await;
    };
    assert!(
        got_at >= o_renewed + lease_d,
        "a new holder {:?} after O's last renewal, before O's trust (at most {lease_d:?}) had ended",
        got_at - o_renewed
    );
    eprintln!("lost handover: a new tenure began {:?} after O's last acknowledged renewal", got_at - o_renewed);
}

// The holder's first renewal on the promoted server re-arms its tenure there and tells watchers
// (LISTEN lease_lock_events); its next renewal is an ordinary one and tells nobody.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenure_renewed_after_a_failover_is_announced_as_rearmed() {
    init_tracing();
    let set = std::sync::Arc::new(ReplicaSet::start(Replication::Async).await);
    const H: &str = "00000000-0000-0000-0000-0000000000a1";
    let call = |on: &lease_lock_tests::TestCluster, f: &str| {
        on.psql(&set.db, &format!("SELECT acquired, fencing_token FROM lease_lock.{f}('{H}', '1 hour', 'rearm')"))
    };
    assert_eq!(call(&set.primary, "lease_acquire"), "t|1");
    let s = set.clone();
    blocking(move || {
        s.wait_for_replay();
        s.primary.stop_server("fast");
        s.standby.promote();
    })
    .await;
    let (_watcher, mut events) = set.standby.listen(&set.db, "lease_lock_events").await;
    assert_eq!(call(&set.standby, "lease_refresh"), "t|1", "the holder continues its tenure");
    let event = timeout(Duration::from_secs(5), events.recv()).await.expect("an event").expect("open");
    assert!(
        event.contains(r#""event" : "rearmed""#)
            && event.contains(r#""lease_name" : "rearm""#)
            && event.contains(r#""fencing_token" : 1"#),
        "{event}"
    );
    assert_eq!(call(&set.standby, "lease_refresh"), "t|1");
    assert_eq!(call(&set.standby, "lease_acquire"), "t|1");
    assert!(
        timeout(Duration::from_millis(500), events.recv()).await.is_err(),
        "renewals on the same timeline tell nobody"
    );
}

// A standby (read-only) server is "not connected", never "lease held": the extension refuses with
// 25006 and the client keeps waiting.
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_is_not_connected_for_leases() {
    init_tracing();
    let set = ReplicaSet::start(Replication::Async).await;
    let on_standby = format!("host=127.0.0.1 port={} user=postgres dbname={}", set.standby.port(), set.db);
    let output = std::process::Command::new(format!("{}/psql", lease_lock_tests::cluster::pg_bin()))
        .args(["-X", "-q", "-d", &on_standby, "-v", "VERBOSITY=sqlstate"])
        .args([
            "-c",
            "\\set VERBOSITY sqlstate",
            "-c",
            "SELECT * FROM lease_lock.lease_acquire(gen_random_uuid(), '1 s')",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("25006"), "{output:?}");
    let waiting = client(&on_standby, Duration::from_secs(2), Duration::from_millis(200));
    let result = waiting.acquire_timeout(Duration::from_millis(1500)).await;
    assert!(matches!(result, Err(lease_lock_client::Error::AcquireTimeout(_))), "{result:?}");
    assert_eq!(status(&set.primary, &set.db), "", "nothing taken anywhere");
}

// A release commits without waiting for a synchronous standby (or its own WAL flush): losing it
// would only keep the lease held until it expires. The next tenure does wait, and its commit
// comes after the release's in the WAL. With the standby's link stalled, the release returns
// at once; the waiting client's new tenure is confirmed only once the link is back, and then
// without waiting for the released lease to expire.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_does_not_wait_for_the_synchronous_standby_but_the_next_tenure_does() {
    init_tracing();
    let set = ReplicaSet::start(Replication::Sync).await;
    let (lease_d, refresh) = (Duration::from_secs(60), Duration::from_secs(20));
    let holder = client(&set.conninfo("holder"), lease_d, refresh).acquire().await.unwrap();
    let next = client(&set.conninfo("next"), lease_d, refresh);
    let waiting = tokio::spawn(async move { next.acquire().await });
    sleep(Duration::from_millis(300)).await;

    set.link.set_stalled(true);
    let started = Instant::now();
    // Within the client's call timeout (500 ms): a release that waited for the standby would
    // fail with CallTimeout.
    assert!(holder.release().await.expect("released without the synchronous standby"));
    let released_in = started.elapsed();
    sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished(), "a new tenure is not confirmed before the synchronous standby has it");

    set.link.set_stalled(false);
    let next =
        timeout(Duration::from_secs(15), waiting).await.expect("acquired once the link is back").unwrap().unwrap();
    assert_eq!(next.fencing_token(), 2);
    assert!(started.elapsed() < lease_d, "taken over, not expired");
    eprintln!("release with the synchronous standby stalled returned in {released_in:?}");
}

// A server crash can lose a release (it does not wait for its WAL flush): the released tenure is
// back under the releaser's id until it expires. The same client acquiring again then gets a
// new tenure with a new token: it releases the one it had released again, instead of taking
// it back or reporting another process with its holder id (DuplicateHolderId).
#[tokio::test(flavor = "multi_thread")]
async fn a_release_lost_in_a_crash_gives_the_same_client_a_new_tenure() {
    init_tracing();
    // The WAL writer flushes an asynchronous commit within about three wal_writer_delay; at its
    // longest (10 s), the crash right after the release comes first.
    const SETTINGS: &[&str] = &["wal_writer_delay=10s", "autovacuum=off"];
    let cluster = std::sync::Arc::new(
        blocking(|| {
            let cluster = lease_lock_tests::TestCluster::start(SETTINGS);
            cluster.psql("postgres", "CREATE DATABASE crash");
            cluster.install_edition("crash");
            cluster
        })
        .await,
    );
    let client = client(&cluster.conninfo("crash"), Duration::from_secs(60), Duration::from_secs(20));
    let holder = client.holder_id().to_string();
    // Another flush (a checkpoint, say) could take the release to disk before the crash: then
    // there is nothing to see, and the round is repeated.
    for round in 1..=3 {
        let lease = client.acquire().await.unwrap();
        let token = lease.fencing_token();
        assert!(lease.release().await.unwrap());
        let c = cluster.clone();
        blocking(move || {
            c.stop_server("immediate");
            c.start_server(SETTINGS);
        })
        .await;
        if status(&cluster, "crash") != format!("{holder}|{token}|t|1") {
            eprintln!("round {round}: the release reached disk before the crash; again");
            continue;
        }
        // The release was lost: tenure `token` is held under our id again.
        let again = client.try_acquire().await.expect("no error").expect("the lease");
        assert_eq!(again.fencing_token(), token + 1, "a new tenure, not the released one");
        assert_eq!(status(&cluster, "crash"), format!("{holder}|{}|t|1", token + 1));
        return;
    }
    panic!("in 3 rounds, the release always reached disk before the crash");
}
