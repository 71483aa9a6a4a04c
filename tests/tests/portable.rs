//! Installing the portable edition the way a managed service's user does: `psql -f` as a role
//! without superuser rights, into a schema it owns (any name), and what the script refuses.

use lease_lock_tests::cluster::pg_bin;
use lease_lock_tests::leases::short_lease_client;
use lease_lock_tests::{init_tracing, shared_cluster, TestDb};
use std::process::{Command, Stdio};
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../portable/dist/lease_lock_portable.sql");

/// Runs the install script as `role` into `schema`: its exit status and stderr.
fn install(db: &TestDb, role: &str, schema: &str) -> (bool, String) {
    let output = Command::new(format!("{}/psql", pg_bin()))
        .args(["-X", "-q", "-d", &format!("{} user={role}", db.conninfo())])
        .args(["-v", &format!("schema={schema}"), "-f", SCRIPT])
        .stdin(Stdio::null())
        .output()
        .expect("psql runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn a_role_without_superuser_installs_it_into_its_own_schema_and_the_client_uses_it() {
    init_tracing();
    let cluster = shared_cluster();
    let db = cluster.empty_database();
    let owner = format!("ll_portable_{}", std::process::id());
    db.psql(&format!("CREATE ROLE {owner} LOGIN; GRANT CREATE ON DATABASE {} TO {owner}", db.name));

    // A schema name that needs quoting, created by the script itself.
    let (ok, stderr) = install(&db, &owner, "My Leases");
    assert!(ok, "{stderr}");
    let owned = db.query("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'My Leases'", &[]).await;
    assert_eq!(owned[0].get::<_, String>(0), owner);
    let superuser = db
        .query(
            "SELECT rolsuper FROM pg_roles r JOIN pg_proc p ON p.proowner = r.oid WHERE p.proname = 'lease_acquire'",
            &[],
        )
        .await;
    assert!(!superuser[0].get::<_, bool>(0), "the functions belong to the installing role, not a superuser");

    // The owner grants an application role; its client, told the schema, holds a lease.
    let app = format!("{owner}_app");
    db.psql(&format!(
        "CREATE ROLE {app} LOGIN; SET ROLE {owner}; \
         GRANT EXECUTE ON FUNCTION \"My Leases\".lease_acquire(uuid, interval, text), \
         \"My Leases\".lease_refresh(uuid, interval, text), \"My Leases\".lease_release(uuid, text) TO {app}"
    ));
    let client = short_lease_client(
        &format!("{} user={app}", db.conninfo()),
        "p",
        Duration::from_secs(3),
        Duration::from_millis(300),
    )
    .schema("My Leases")
    .build()
    .unwrap();
    let lease = client.try_acquire().await.unwrap().expect("free");
    assert_eq!(lease.fencing_token(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(lease.is_held());
    assert!(lease.release().await.unwrap());

    // Installing again into the same schema is refused: it has lease functions already.
    let (ok, stderr) = install(&db, &owner, "My Leases");
    assert!(!ok && stderr.contains("already has lease functions"), "{stderr}");
    db.psql(&format!("DROP SCHEMA \"My Leases\" CASCADE; REVOKE CREATE ON DATABASE {} FROM {owner}", db.name));
    drop(db);
    cluster.psql("postgres", &format!("DROP ROLE {app}; DROP ROLE {owner}"));
}

#[tokio::test]
async fn the_script_refuses_a_schema_someone_else_owns_or_may_create_in() {
    init_tracing();
    let cluster = shared_cluster();
    let db = cluster.empty_database();
    let owner = format!("ll_portable_r_{}", std::process::id());
    let other = format!("{owner}_other");
    db.psql(&format!("CREATE ROLE {owner} LOGIN; CREATE ROLE {other}; CREATE SCHEMA theirs AUTHORIZATION {other}"));
    let (ok, stderr) = install(&db, &owner, "theirs");
    assert!(!ok && stderr.contains("is not owned by the installing role"), "{stderr}");

    db.psql(&format!("CREATE SCHEMA shared AUTHORIZATION {owner}; GRANT CREATE ON SCHEMA shared TO {other}"));
    let (ok, stderr) = install(&db, &owner, "shared");
    assert!(!ok && stderr.contains("may create objects in schema"), "{stderr}");
    // Nothing was left behind by the refused installs.
    let objects = db
        .query(
            "SELECT count(*) FROM pg_class WHERE relnamespace IN ('theirs'::regnamespace, 'shared'::regnamespace)",
            &[],
        )
        .await;
    assert_eq!(objects[0].get::<_, i64>(0), 0);
    db.psql("DROP SCHEMA theirs; DROP SCHEMA shared");
    drop(db);
    cluster.psql("postgres", &format!("DROP ROLE {other}; DROP ROLE {owner}"));
}
