//! Upgrading in place: a database created at the first release (0.1.0, its install script frozen
//! in `extension/sql/lease_lock--0.1.0.sql`) with live leases is taken to this version with
//! `ALTER EXTENSION lease_lock UPDATE` while a holder keeps renewing; nothing is lost, and the
//! upgraded catalog equals a fresh install's. The downgrade script takes it back to a catalog
//! equal to a fresh install of the first release.

use lease_lock_client::LeaseState;
use lease_lock_tests::leases::short_lease_client;
use lease_lock_tests::{init_tracing, shared_cluster, TestDb};
use std::time::Duration;
use tokio::time::sleep;
use uuid::Uuid;

/// The first release, whose install script is kept as it was shipped.
const FIRST_RELEASE: &str = "0.1.0";
/// The version this tree builds (the workspace's, which the control file takes).
const THIS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One line per property of every object of the extension: the members' definitions (functions
/// with `pg_get_functiondef`: arguments, result, volatility, strictness, parallel safety,
/// security, settings, C symbol), owners, privileges, initial privileges, comments; the tables'
/// columns, constraints, indexes, triggers and options; the view's query; the schema; the
/// extension's dump configuration. Sorted, so two installs compare line by line.
const CATALOG: &str = r#"
WITH ext AS (
    SELECT oid, extconfig, extcondition, extrelocatable, extnamespace
    FROM pg_catalog.pg_extension WHERE extname = 'lease_lock'
), member AS (
    SELECT d.classid, d.objid FROM pg_catalog.pg_depend d, ext
    WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), rel AS (
    SELECT c.* FROM pg_catalog.pg_class c JOIN member m ON m.classid = 'pg_catalog.pg_class'::regclass AND m.objid = c.oid
)
SELECT line FROM (
    SELECT 'member ' || pg_catalog.pg_describe_object(classid, objid, 0)
        || ' comment=' || coalesce(pg_catalog.obj_description(objid, classid::regclass::text), '-') AS line
    FROM member
  UNION ALL
    SELECT 'function ' || p.oid::regprocedure || ' owner=' || pg_catalog.pg_get_userbyid(p.proowner)
        || ' acl=' || coalesce(p.proacl::text, '-') || E'\n' || pg_catalog.pg_get_functiondef(p.oid)
    FROM pg_catalog.pg_proc p JOIN member m ON m.classid = 'pg_catalog.pg_proc'::regclass AND m.objid = p.oid
  UNION ALL
    SELECT 'relation ' || r.oid::regclass || ' kind=' || r.relkind::text || ' owner=' || pg_catalog.pg_get_userbyid(r.relowner)
        || ' acl=' || coalesce(r.relacl::text, '-') || ' options=' || coalesce(r.reloptions::text, '-')
        || ' persistence=' || r.relpersistence::text
    FROM rel r
  UNION ALL
    SELECT 'column ' || r.oid::regclass || '.' || a.attname || ' #' || a.attnum
        || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
        || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
        || ' default=' || coalesce(pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), '-')
        || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
        || ' collation=' || coalesce(a.attcollation::regcollation::text, '-')
        || ' acl=' || coalesce(a.attacl::text, '-')
        || ' comment=' || coalesce(pg_catalog.col_description(r.oid, a.attnum), '-')
    FROM rel r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
  UNION ALL
    SELECT 'constraint ' || r.oid::regclass || ' ' || c.conname || ' ' || pg_catalog.pg_get_constraintdef(c.oid)
    FROM rel r JOIN pg_catalog.pg_constraint c ON c.conrelid = r.oid
  UNION ALL
    SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid)
    FROM rel r JOIN pg_catalog.pg_index i ON i.indrelid = r.oid
  UNION ALL
    SELECT 'trigger ' || pg_catalog.pg_get_triggerdef(t.oid)
    FROM rel r JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.oid
  UNION ALL
    SELECT 'view ' || r.oid::regclass || E'\n' || pg_catalog.pg_get_viewdef(r.oid)
    FROM rel r WHERE r.relkind::text = 'v'
  UNION ALL
    SELECT 'init privileges ' || pg_catalog.pg_describe_object(i.classoid, i.objoid, i.objsubid)
        || ' ' || i.privtype::text || ' ' || i.initprivs::text
    FROM pg_catalog.pg_init_privs i JOIN member m ON m.classid = i.classoid AND m.objid = i.objoid
  UNION ALL
    SELECT 'schema ' || n.nspname || ' owner=' || pg_catalog.pg_get_userbyid(n.nspowner)
        || ' acl=' || coalesce(n.nspacl::text, '-')
        || ' comment=' || coalesce(pg_catalog.obj_description(n.oid, 'pg_namespace'), '-')
    FROM ext JOIN pg_catalog.pg_namespace n ON n.oid = ext.extnamespace
  UNION ALL
    SELECT 'extension relocatable=' || extrelocatable
        || ' config=' || coalesce(extconfig::regclass[]::text, '-')
        || ' condition=' || coalesce(extcondition::text, '-')
    FROM ext
) lines ORDER BY line
"#;

async fn catalog(db: &TestDb<'_>) -> Vec<String> {
    db.query(CATALOG, &[]).await.iter().map(|r| r.get(0)).collect()
}

/// Asserts that `db` (`what`: upgraded, downgraded) has the catalog of the fresh install `fresh`,
/// listing the lines only one of them has.
async fn assert_same_catalog(db: &TestDb<'_>, fresh: &TestDb<'_>, what: &str) {
    let (changed, fresh) = (catalog(db).await, catalog(fresh).await);
    assert!(changed.len() > 30, "the catalog query sees the extension's objects: {changed:#?}");
    let only_changed: Vec<_> = changed.iter().filter(|l| !fresh.contains(l)).collect();
    let only_fresh: Vec<_> = fresh.iter().filter(|l| !changed.contains(l)).collect();
    assert!(
        only_changed.is_empty() && only_fresh.is_empty(),
        "the {what} catalog differs from a fresh install:\nonly {what}: {only_changed:#?}\nonly fresh: {only_fresh:#?}"
    );
}

async fn extversion(db: &TestDb<'_>) -> String {
    db.query("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'lease_lock'", &[]).await[0].get(0)
}

/// `(fencing_token, held, holder)` of a lease, read as the superuser from the table.
async fn row(db: &TestDb<'_>, lease: &str) -> (i64, bool, Uuid) {
    let rows = db
        .query(
            "SELECT fencing_token, expires_at > clock_timestamp(), holder FROM lease_lock.leases WHERE lease_name = $1",
            &[&lease],
        )
        .await;
    (rows[0].get(0), rows[0].get(1), rows[0].get(2))
}

#[tokio::test]
async fn an_upgrade_from_the_first_release_keeps_holders_tokens_and_grants_and_equals_a_fresh_install() {
    init_tracing();
    let cluster = shared_cluster();
    let db = cluster.empty_database();
    db.psql(&format!("CREATE EXTENSION lease_lock VERSION '{FIRST_RELEASE}'"));
    assert_eq!(extversion(&db).await, FIRST_RELEASE);

    // An application role, with the grants a DBA gives it, holds the lease from a client.
    let role = format!("ll_upgrade_{}", std::process::id());
    db.psql(&format!(
        "CREATE ROLE {role} LOGIN; \
         GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text), \
             lease_lock.lease_refresh(uuid, interval, text), lease_lock.lease_release(uuid, text), \
             lease_lock.lease_fence(bigint, text) TO {role}"
    ));
    let conninfo = format!("{} user={role}", db.conninfo());
    let client = |name: &str| {
        short_lease_client(&conninfo, name, Duration::from_secs(3), Duration::from_millis(200))
            .build()
            .expect("valid config")
    };
    // `kept`: a tenure ended and a second one held (token 2); `freed`: held once, released.
    let first = client("kept").acquire().await.unwrap();
    assert!(first.release().await.unwrap());
    let holder_client = client("kept");
    let holder = holder_client.acquire().await.unwrap();
    assert_eq!(holder.fencing_token(), 2);
    // A second lease on the same connection: their renewals would go out in one
    // lease_refresh_many, which 0.1.0 lacks (and the role is not granted after the upgrade),
    // so the client renews them one by one.
    let also = holder_client.for_lease("also").unwrap().acquire().await.unwrap();
    let freed = client("freed").acquire().await.unwrap();
    assert!(freed.release().await.unwrap());

    // The upgrade, while the holder renews every 200 ms.
    sleep(Duration::from_millis(500)).await;
    db.psql("ALTER EXTENSION lease_lock UPDATE");
    assert_eq!(extversion(&db).await, THIS_VERSION);
    sleep(Duration::from_secs(1)).await;

    // The holder never noticed: still held, same token, renewals confirmed after the upgrade.
    let state = holder.state();
    assert!(matches!(state, LeaseState::Held { fencing_token: 2, .. }), "{state:?}");
    assert_eq!(row(&db, "kept").await, (2, true, holder.holder_id()));
    assert!(matches!(also.state(), LeaseState::Held { fencing_token: 1, .. }), "{:?}", also.state());
    assert_eq!(row(&db, "also").await, (1, true, holder.holder_id()));
    assert!(also.release().await.unwrap());
    // The grants survived: the role fences with its token, and keeps taking new tenures.
    db.psql(&format!("SET ROLE {role}; SELECT lease_lock.lease_fence(2, 'kept')"));
    assert!(holder.release().await.unwrap());
    let next = client("kept").acquire().await.unwrap();
    assert_eq!(next.fencing_token(), 3, "tokens keep growing across the upgrade");
    let again = client("freed").acquire().await.unwrap();
    assert_eq!(again.fencing_token(), 2);
    assert!(next.release().await.unwrap());
    assert!(again.release().await.unwrap());

    // The upgraded catalog is a fresh install's, property by property, once the grants to the
    // application role (which a fresh install does not have) are taken back.
    db.psql(&format!("DROP OWNED BY {role}"));
    let fresh = cluster.fresh_database();
    assert_eq!(extversion(&fresh).await, THIS_VERSION);
    assert_same_catalog(&db, &fresh, "upgraded").await;
    drop(db);
    cluster.psql("postgres", &format!("DROP ROLE {role}"));
}

#[tokio::test]
async fn a_downgrade_to_the_first_release_keeps_the_leases_and_equals_its_fresh_install() {
    init_tracing();
    let cluster = shared_cluster();
    let db = cluster.fresh_database();
    let taken =
        db.query("SELECT fencing_token FROM lease_lock.lease_acquire(gen_random_uuid(), '1 hour', 'kept')", &[]).await;
    assert_eq!(taken[0].get::<_, i64>(0), 1);
    db.psql(&format!("ALTER EXTENSION lease_lock UPDATE TO '{FIRST_RELEASE}'"));
    assert_eq!(extversion(&db).await, FIRST_RELEASE);
    let (token, held, _) = row(&db, "kept").await;
    assert_eq!((token, held), (1, true), "the downgrade keeps the lease rows");

    let first = cluster.empty_database();
    first.psql(&format!("CREATE EXTENSION lease_lock VERSION '{FIRST_RELEASE}'"));
    assert_same_catalog(&db, &first, "downgraded").await;
}
