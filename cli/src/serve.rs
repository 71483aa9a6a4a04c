//! `--http ADDR`: `GET /leader` (200 while this process holds the lease, 503 otherwise: for
//! load balancers and readiness probes) and `GET /metrics` (OpenMetrics text, which Prometheus
//! reads), from the lease's state as the renewal task reports it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lease_lock_client::{Lease, LeaseInfo};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// The metrics of one lease (prefix `lease_lock_`, label `lease`).
pub struct Metrics {
    registry: Registry,
    held: Gauge,
    token: Gauge,
    renewals: Counter,
    renewal_seconds: Histogram,
    acquisitions: Counter,
    losses: Counter,
    acquire_wait_seconds: Histogram,
}

impl Metrics {
    fn new(lease_name: &str) -> Metrics {
        // The text format's label escapes (prometheus-client writes label values as given): a
        // lease name may hold any character.
        let escaped = lease_name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let labels = [(Cow::Borrowed("lease"), Cow::Owned(escaped))];
        let mut registry = Registry::with_prefix_and_labels("lease_lock", labels.into_iter());
        let m = Metrics {
            registry: Registry::default(),
            held: Gauge::default(),
            token: Gauge::default(),
            renewals: Counter::default(),
            // 0.25 ms to about 8 s.
            renewal_seconds: Histogram::new(exponential_buckets(0.00025, 2.0, 16)),
            acquisitions: Counter::default(),
            losses: Counter::default(),
            // 1 ms to about 9 h.
            acquire_wait_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 13)),
        };
        registry.register("held", "1 while this process holds the lease, else 0", m.held.clone());
        registry.register("fencing_token", "The token of this process's current or last tenure", m.token.clone());
        registry.register("renewals", "Renewals the database confirmed", m.renewals.clone());
        registry.register(
            "renewal_latency_seconds",
            "From sending a renewal to its confirmation",
            m.renewal_seconds.clone(),
        );
        registry.register("acquisitions", "Tenures this process started", m.acquisitions.clone());
        registry.register("losses", "Tenures lost (not released)", m.losses.clone());
        registry.register(
            "acquire_wait_seconds",
            "From starting to compete to holding the lease",
            m.acquire_wait_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// What the endpoints read: the current tenure (if any) and the metrics.
pub struct Shared {
    tenure: Mutex<Option<LeaseInfo>>,
    pub metrics: Metrics,
}

impl Shared {
    pub fn new(lease_name: &str) -> Arc<Shared> {
        Arc::new(Shared { tenure: Mutex::new(None), metrics: Metrics::new(lease_name) })
    }

    /// A tenure began after `waited`: count it; the endpoints follow it from now on.
    pub fn acquired(&self, lease: &Lease, waited: Duration) {
        let info = lease.info();
        let m = &self.metrics;
        m.acquisitions.inc();
        m.acquire_wait_seconds.observe(waited.as_secs_f64());
        m.token.set(info.fencing_token());
        *self.tenure.lock().expect("tenure lock") = Some(info);
    }

    /// The database confirmed a renewal sent `latency` ago.
    pub fn renewed(&self, latency: Duration) {
        self.metrics.renewals.inc();
        self.metrics.renewal_seconds.observe(latency.as_secs_f64());
    }

    /// The tenure was lost (not released).
    pub fn lost(&self) {
        self.metrics.losses.inc();
    }

    /// Whether this process holds the lease now (its local deadline not passed).
    pub fn is_held(&self) -> bool {
        self.tenure.lock().expect("tenure lock").as_ref().is_some_and(LeaseInfo::is_held)
    }

    fn metrics_text(&self) -> String {
        self.metrics.held.set(i64::from(self.is_held()));
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.metrics.registry) {
            warn!(error = %e, "encoding metrics");
        }
        text
    }
}

fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/leader") => {
            if shared.is_held() {
                (StatusCode::OK, "text/plain", "leader\n".to_string())
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not leader\n".to_string())
            }
        }
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", shared.metrics_text())
        }
        (&Method::GET | &Method::HEAD, _) => (StatusCode::NOT_FOUND, "text/plain", "GET /leader or /metrics\n".into()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Longest life of one connection, and the wait for a request's headers: a probe or a scrape
/// needs milliseconds, and a client that trickles or idles must not hold a descriptor.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr` and serves the endpoints in the background, at most [`MAX_CONNECTIONS`]
/// connections at a time, each for at most [`CONNECTION_LIFETIME`].
///
/// # Errors
/// The address could not be bound.
pub async fn start(addr: std::net::SocketAddr, shared: Arc<Shared>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving /leader and /metrics");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, for instance: do not spin on the renewals' thread.
                    warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = respond(&shared, &request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                drop(slot);
            });
        }
    });
    Ok(())
}
