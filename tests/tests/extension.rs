//! The extension against real servers where one session is not enough: many sessions racing on
//! new lease names, and backups (`pg_dump` by the database owner, restore into another cluster).
//! Single-session contract: `sql/regress`; two-session orderings: `sql/isolation`.

use lease_lock_tests::cluster::{pg_bin, pg_command};
use lease_lock_tests::{shared_cluster, TestCluster};
use std::process::Stdio;
use uuid::Uuid;

/// Many fresh sessions take the first tenure of new lease names at once: exactly one wins each
/// name, and every other gets `acquired = false`, never an error (the old code raised 23505 when
/// two inserts of one name met on the (name, token) unique index, which its ON CONFLICT did not
/// cover).
#[tokio::test(flavor = "multi_thread")]
async fn sessions_racing_on_new_names_get_one_winner_and_no_error() {
    const SESSIONS: usize = 8;
    const ROUNDS: usize = 50;
    let db = shared_cluster().fresh_database();
    let mut clients = Vec::new();
    for _ in 0..SESSIONS {
        clients.push(db.connect().await);
    }
    let clients: Vec<_> = clients.into_iter().map(std::sync::Arc::new).collect();
    for round in 0..ROUNDS {
        let name = format!("race-{round}");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(SESSIONS));
        let mut calls = Vec::new();
        for client in &clients {
            let (client, barrier, name) = (client.clone(), barrier.clone(), name.clone());
            calls.push(tokio::spawn(async move {
                let statement = client
                    .prepare("SELECT acquired FROM lease_lock.lease_acquire($1, '1 hour', $2)")
                    .await
                    .expect("prepare");
                barrier.wait().await;
                client.query_one(&statement, &[&Uuid::new_v4(), &name]).await.map(|row| row.get::<_, bool>(0))
            }));
        }
        let mut winners = 0;
        for call in calls {
            match call.await.expect("task") {
                Ok(true) => winners += 1,
                Ok(false) => {}
                Err(e) => panic!("round {round}: a racing first acquire failed: {e:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    assert_eq!(db.psql("SELECT count(*) FROM lease_lock.leases"), ROUNDS.to_string());
}

/// `pg_dump` as the database owner (not a superuser), the role that usually runs backups: it
/// succeeds and keeps the lease rows (the old code failed with "permission denied for table
/// leases").
#[test]
fn the_database_owner_can_dump_the_lease_rows() {
    let cluster = shared_cluster();
    let db = cluster.fresh_database();
    db.psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'll_backup_owner') THEN
             CREATE ROLE ll_backup_owner LOGIN; END IF; END $$",
    );
    db.psql(&format!("ALTER DATABASE {} OWNER TO ll_backup_owner", db.name));
    db.psql("SELECT acquired FROM lease_lock.lease_acquire(gen_random_uuid(), '1 hour', 'dumped')");
    let output = pg_command(&format!("{}/pg_dump", pg_bin()))
        .args(["-h", cluster.socket_dir().to_str().unwrap(), "-p", &cluster.port().to_string()])
        .args(["-U", "ll_backup_owner", &db.name])
        .stdin(Stdio::null())
        .output()
        .expect("pg_dump runs");
    assert!(output.status.success(), "pg_dump as the database owner: {}", String::from_utf8_lossy(&output.stderr));
    let dump = String::from_utf8_lossy(&output.stdout);
    assert!(dump.contains("CREATE EXTENSION IF NOT EXISTS lease_lock"), "{dump}");
    assert!(dump.contains("dumped\t1\t"), "the lease row is in the dump: {dump}");
}

/// A dump restored into another cluster binds each tenure to the role of the same name there,
/// whatever its OID (the old code stored the raw OID: the tenure went to whichever role had it).
#[test]
fn a_restored_tenure_belongs_to_the_role_of_the_same_name() {
    let source = shared_cluster();
    let db = source.fresh_database();
    db.psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'll_restored_app') THEN
             CREATE ROLE ll_restored_app; END IF; END $$;
         GRANT EXECUTE ON FUNCTION lease_lock.lease_refresh(uuid, interval, text),
             lease_lock.lease_acquire(uuid, interval, text) TO ll_restored_app",
    );
    let holder = Uuid::new_v4();
    db.psql(&format!(
        "SET ROLE ll_restored_app; SELECT acquired FROM lease_lock.lease_acquire('{holder}', '1 hour', 'moved')"
    ));
    let dump = pg_command(&format!("{}/pg_dump", pg_bin()))
        .args(["-d", &db.conninfo(), "--no-owner", "--no-privileges"])
        .stdin(Stdio::null())
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));

    // The other cluster has other roles first, so the same name gets another OID there.
    let target = TestCluster::start(&[]);
    target.psql("postgres", "CREATE ROLE ll_filler_1; CREATE ROLE ll_filler_2; CREATE ROLE ll_restored_app");
    target.psql("postgres", "CREATE DATABASE restored");
    let restore = std::process::Command::new(format!("{}/psql", pg_bin()))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &target.conninfo("restored")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(&dump.stdout)?;
            child.wait_with_output()
        })
        .expect("psql runs");
    assert!(restore.status.success(), "restore: {}", String::from_utf8_lossy(&restore.stderr));
    let oids = (
        source.psql("postgres", "SELECT oid FROM pg_roles WHERE rolname = 'll_restored_app'"),
        target.psql("postgres", "SELECT oid FROM pg_roles WHERE rolname = 'll_restored_app'"),
    );
    assert_ne!(oids.0, oids.1, "the test needs different OIDs");
    assert_eq!(
        target.psql(
            "restored",
            "SELECT holder_role::text, fencing_token FROM lease_lock.lease_status WHERE lease_name = 'moved'"
        ),
        "ll_restored_app|1"
    );
    target.psql(
        "restored",
        "GRANT EXECUTE ON FUNCTION lease_lock.lease_refresh(uuid, interval, text) TO ll_restored_app",
    );
    assert_eq!(
        target.psql(
            "restored",
            &format!("SET ROLE ll_restored_app; SELECT acquired, fencing_token FROM lease_lock.lease_refresh('{holder}', '1 hour', 'moved')")
        ),
        "t|1",
        "the holder keeps its tenure under its role"
    );
}

/// A refused `lease_acquire` inside an open transaction holds no lock on the lease row, even
/// when it lost the race for a free lease between its read and its lock (the old code kept the
/// `FOR UPDATE` lock it had taken, and the holder's renewals then failed with 55P03 behind it).
/// Holders take, renew and release the lease in a loop while other sessions try to take it
/// inside transactions. A refused try that was given a transaction id took a row lock on the
/// way (the race): that session then keeps its transaction open for longer than
/// `lease_lock.lock_timeout`, and the holders' renewals must not fail meanwhile. Bounded: 8 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_acquire_keeps_no_lock_even_when_it_lost_a_race() {
    let db = shared_cluster().fresh_database();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    let mut holders = Vec::new();
    for _ in 0..2 {
        let client = db.connect().await;
        holders.push(tokio::spawn(async move {
            let holder = Uuid::new_v4();
            let mut renewals = 0u64;
            while std::time::Instant::now() < deadline {
                let row = client
                    .query_one("SELECT acquired FROM lease_lock.lease_acquire($1, '10 s', 'contested')", &[&holder])
                    .await
                    .expect("holder's acquire");
                if row.get::<_, bool>(0) {
                    client
                        .query_one("SELECT acquired FROM lease_lock.lease_refresh($1, '10 s', 'contested')", &[&holder])
                        .await
                        .expect("the holder's renewal never waits on a refused caller");
                    renewals += 1;
                    client
                        .execute("SELECT lease_lock.lease_release($1, 'contested')", &[&holder])
                        .await
                        .expect("release");
                }
            }
            renewals
        }));
    }
    let mut contenders = Vec::new();
    for _ in 0..2 {
        let client = db.connect().await;
        contenders.push(tokio::spawn(async move {
            let holder = Uuid::new_v4();
            let mut raced = 0u64;
            while std::time::Instant::now() < deadline {
                client.batch_execute("BEGIN").await.expect("begin");
                let row = client
                    .query_one(
                        "SELECT acquired, txid_current_if_assigned() IS NOT NULL \
                         FROM lease_lock.lease_acquire($1, '10 s', 'contested')",
                        &[&holder],
                    )
                    .await
                    .expect("contender's acquire");
                let (acquired, has_xid): (bool, bool) = (row.get(0), row.get(1));
                if !acquired && has_xid {
                    raced += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                }
                client.batch_execute("ROLLBACK").await.expect("rollback");
            }
            raced
        }));
    }
    let renewals: u64 = futures_sum(holders).await;
    let raced: u64 = futures_sum(contenders).await;
    assert!(renewals > 50, "the holders renewed ({renewals} times)");
    eprintln!("{raced} refused tries had locked the row; {renewals} renewals, none failed");
}

async fn futures_sum(tasks: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
    let mut sum = 0;
    for task in tasks {
        sum += task.await.expect("task");
    }
    sum
}
