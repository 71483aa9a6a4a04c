//! The client's `tls` feature against a server with `ssl = on` and a certificate chain made for
//! the test: libpq-style connection strings (`sslmode`, `sslrootcert`) in both forms, and a
//! certificate the client does not trust is an error returned at once, never retried.

use lease_lock_client::{Error, LeaseClient};
use lease_lock_tests::tls::TestCerts;
use lease_lock_tests::{init_tracing, TestCluster, TestDb};
use std::time::{Duration, Instant};
use tokio::time::timeout;

fn tls_server() -> (TestCerts, TestCluster) {
    let certs = TestCerts::generate();
    let settings = certs.server_settings();
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let cluster = TestCluster::start(&settings);
    (certs, cluster)
}

fn client(conninfo: &str) -> Result<LeaseClient, Error> {
    LeaseClient::builder(conninfo)
        .lease_name("tls")
        .lease_duration(Duration::from_secs(3))
        .refresh_interval(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .build()
}

/// Backends of `db` that use TLS.
async fn tls_backends(db: &TestDb<'_>) -> i64 {
    db.query(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.datname = current_database()",
        &[],
    )
    .await[0]
        .get(0)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_holds_a_lease_over_tls_in_both_string_forms() {
    init_tracing();
    let (certs, cluster) = tls_server();
    let db = cluster.fresh_database();
    let ca = certs.ca();
    let forms = [
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={} sslmode=verify-full sslrootcert='{}'",
            cluster.port(),
            db.name,
            ca.display()
        ),
        format!(
            "postgresql://postgres@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
            cluster.port(),
            db.name,
            ca.display()
        ),
    ];
    for conninfo in forms {
        let lease =
            client(&conninfo).unwrap().try_acquire().await.unwrap_or_else(|e| panic!("{conninfo}: {}", chain(&e)));
        let lease = lease.expect("the lease is free");
        assert!(tls_backends(&db).await >= 1, "the client's connection uses TLS");
        assert!(lease.release().await.unwrap());
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_an_error_at_once_not_a_retry() {
    init_tracing();
    let (certs, cluster) = tls_server();
    let db = cluster.fresh_database();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} sslmode=verify-full sslrootcert={}",
        cluster.port(),
        db.name,
        certs.other_ca().display()
    );
    let err = client(&conninfo).unwrap().try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    assert!(chain(&err).contains("certificate"), "the cause is named: {}", chain(&err));
    // acquire() retries what may pass (a server restarting), not a certificate it distrusts.
    let started = Instant::now();
    let err = timeout(Duration::from_secs(10), client(&conninfo).unwrap().acquire())
        .await
        .expect("acquire returns instead of retrying for ever")
        .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "returned after {:?}", started.elapsed());
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    init_tracing();
    let (certs, cluster) = tls_server();
    let db = cluster.fresh_database();
    // The certificate names localhost and 127.0.0.1, not db.invalid (hostaddr says where to go).
    let conninfo = |mode: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname={} sslmode={mode} sslrootcert={}",
            cluster.port(),
            db.name,
            certs.ca().display()
        )
    };
    let err = client(&conninfo("verify-full")).unwrap().try_acquire().await.unwrap_err();
    assert!(chain(&err).contains("certificate"), "{}", chain(&err));
    let lease = client(&conninfo("verify-ca")).unwrap().try_acquire().await.unwrap().expect("free");
    assert!(lease.release().await.unwrap());
}

#[tokio::test]
async fn require_encrypts_without_a_root_certificate_like_libpq() {
    init_tracing();
    let (_certs, cluster) = tls_server();
    let db = cluster.fresh_database();
    let conninfo = format!("host=127.0.0.1 port={} user=postgres dbname={} sslmode=require", cluster.port(), db.name);
    let lease = client(&conninfo).unwrap().try_acquire().await.unwrap().expect("free");
    assert!(tls_backends(&db).await >= 1);
    assert!(lease.release().await.unwrap());
}

#[test]
fn bad_tls_settings_are_config_errors_from_build() {
    for conninfo in [
        "host=h sslmode=verify-full",
        "host=h sslmode=verify-ca",
        "host=h sslmode=sometimes",
        "host=h sslmode=require sslrootcert=/nonexistent/ca.pem",
        "host=h sslcert=/nonexistent/c.pem",
    ] {
        let err = client(conninfo).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{conninfo}: {err:?}");
    }
    let err = client("host=h nonsense=1").unwrap_err();
    assert!(err.to_string().contains("nonsense"), "the cause is kept: {err}");
}
