//! The extension against real servers where one session is not enough: many sessions racing on
//! new lease names, and backups (`pg_dump` by the database owner, restore into another cluster).
//! Single-session contract: `sql/regress`; two-session orderings: `sql/isolation`.

use lease_lock_tests::cluster::{pg_command, PG_BIN};
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
    assert_eq!(db.psql("SELECT names FROM lease_lock.lease_count"), ROUNDS.to_string());
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
    let output = pg_command(&format!("{PG_BIN}/pg_dump"))
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
    let dump = pg_command(&format!("{PG_BIN}/pg_dump"))
        .args(["-d", &db.conninfo(), "--no-owner", "--no-privileges"])
        .stdin(Stdio::null())
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));

    // The other cluster has other roles first, so the same name gets another OID there.
    let target = TestCluster::start(&[]);
    target.psql("postgres", "CREATE ROLE ll_filler_1; CREATE ROLE ll_filler_2; CREATE ROLE ll_restored_app");
    target.psql("postgres", "CREATE DATABASE restored");
    let restore = std::process::Command::new(format!("{PG_BIN}/psql"))
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
