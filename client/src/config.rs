//! The client's own settings: which lease, for how long, how often to renew, when to give up.
//!
//! Connection settings stay in [`tokio_postgres::Config`]; nothing here repeats them.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// Longest lease name the extension accepts, in bytes.
pub const MAX_LEASE_NAME_BYTES: usize = lease_lock_contract::MAX_NAME_BYTES;
/// Longest lease duration the extension accepts.
pub const MAX_LEASE_DURATION: Duration = lease_lock_contract::MAX_DURATION;
/// Longest schema name PostgreSQL keeps, in bytes (`NAMEDATALEN - 1`); it truncates longer
/// identifiers, which would name another schema.
pub const MAX_SCHEMA_BYTES: usize = 63;
/// The schema the extension installs its functions and view into.
pub const DEFAULT_SCHEMA: &str = lease_lock_contract::SCHEMA;

/// Settings of a [`LeaseClient`](crate::LeaseClient), loadable with serde (durations in
/// [humantime](https://docs.rs/humantime) form such as `"10s"` or `"250ms"`).
///
/// | field | default | meaning |
/// |---|---|---|
/// | `lease_name` | `"default"` | the lease to hold (1 to 255 bytes) |
/// | `holder_id` | a new random v4 UUID per built client | this client's identity on the lease; **if set, it must be unique per process** (see below) |
/// | `schema` | `"lease_lock"` | the schema of the extension's functions and its `lease_status` view (read by each acquire), which the client names in every call; the exact name, not SQL (no quotes) |
/// | `lease_duration` | 10 s | how long each acquire or renewal holds the lease on the database clock |
/// | `refresh_interval` | 1 s | time between renewals; at most half the lease |
/// | `renew_deadline` | 2/3 of the lease | how long after the last confirmed renewal was sent the holder still trusts the lease; must be below the lease duration |
/// | `call_timeout` | 2 s, capped at the renew deadline | longest wait for one database call |
/// | `max_backoff` | 5 s | cap of the reconnect and retry back-off |
/// | `session_settings` | `true` | set `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout` on the dedicated connection; turn off behind a transaction pooler |
/// | `listen` | `true` | LISTEN for releases to wake waiters; turn off behind a transaction pooler (waiters then poll every refresh interval) |
///
/// # Holder ids
/// The database knows a holder only by its id: whoever presents the id of the current holder
/// (as the same role) *is* the holder, renews its tenure and gets its fencing token. So a
/// `holder_id` written into a configuration file that several replicas share makes them all the
/// holder at once, with one token, and fencing cannot tell them apart. Leave it unset (each
/// [`build`](crate::LeaseClientBuilder::build) draws a fresh v4 UUID) unless each process gets
/// its own, for example from its pod name. The client warns where it can tell (see
/// [`LeaseClientBuilder::holder_id`](crate::LeaseClientBuilder::holder_id)) but cannot prevent it.
///
/// # Example
/// ```
/// let config: lease_lock_client::LeaseConfig = serde_json::from_str(
///     r#"{ "lease_name": "orders", "lease_duration": "6s", "refresh_interval": "500ms" }"#,
/// ).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.renew_deadline(), std::time::Duration::from_secs(4));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    lease_name: String,
    holder_id: Option<Uuid>,
    schema: String,
    #[serde(with = "humantime_serde")]
    lease_duration: Duration,
    #[serde(with = "humantime_serde")]
    refresh_interval: Duration,
    #[serde(with = "humantime_serde")]
    renew_deadline: Option<Duration>,
    #[serde(with = "humantime_serde")]
    call_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    max_backoff: Duration,
    session_settings: bool,
    listen: bool,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            lease_name: "default".into(),
            holder_id: None,
            schema: DEFAULT_SCHEMA.into(),
            lease_duration: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(1),
            renew_deadline: None,
            call_timeout: None,
            max_backoff: Duration::from_secs(5),
            session_settings: true,
            listen: true,
        }
    }
}

impl LeaseConfig {
    /// The lease to hold.
    pub fn lease_name(&self) -> &str {
        &self.lease_name
    }

    /// The configured holder id, if one was set (otherwise each built client draws a random
    /// one).
    pub fn holder_id(&self) -> Option<Uuid> {
        self.holder_id
    }

    /// The schema of the extension's functions. Default `lease_lock`.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// How long an acquire or renewal holds the lease, on the database's clock.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// Time between renewals.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    /// How long after sending the last renewal the database confirmed the holder still trusts
    /// the lease. Default: two thirds of the lease duration.
    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline.unwrap_or(self.lease_duration * 2 / 3)
    }

    /// Longest wait for one database call. Default: 2 s, or the renew deadline if shorter.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout.unwrap_or_else(|| Duration::from_secs(2).min(self.renew_deadline()))
    }

    /// Cap of the reconnect and retry back-off.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// Whether the dedicated connection gets session-level safety timeouts.
    pub fn session_settings(&self) -> bool {
        self.session_settings
    }

    /// Whether waiters LISTEN for release notifications.
    pub fn listen(&self) -> bool {
        self.listen
    }

    /// Checks every setting and their relations.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad setting: an empty or overlong lease name, an
    /// empty or overlong schema name or one containing NUL, a zero duration, a lease over one
    /// day, a refresh interval above half the lease, a renew deadline not above the refresh
    /// interval or not below the lease duration.
    pub fn validate(&self) -> Result<(), Error> {
        validate_lease_name(&self.lease_name)?;
        validate_schema(&self.schema)?;
        let positive = [
            ("lease_duration", self.lease_duration),
            ("refresh_interval", self.refresh_interval),
            ("renew_deadline", self.renew_deadline()),
            ("call_timeout", self.call_timeout()),
            ("max_backoff", self.max_backoff),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        if self.lease_duration > MAX_LEASE_DURATION {
            return Err(Error::Config("lease_duration must be at most 1 day".into()));
        }
        if !self.lease_duration.subsec_nanos().is_multiple_of(1_000) {
            return Err(Error::Config("lease_duration must be whole microseconds".into()));
        }
        if self.refresh_interval > self.lease_duration / 2 {
            return Err(Error::Config(format!(
                "refresh_interval ({:?}) must be at most half of lease_duration ({:?})",
                self.refresh_interval, self.lease_duration
            )));
        }
        let deadline = self.renew_deadline();
        if deadline >= self.lease_duration {
            return Err(Error::Config(format!(
                "renew_deadline ({deadline:?}) must be below lease_duration ({:?}): the holder must \
                 stop trusting the lease before the database can give it to someone else",
                self.lease_duration
            )));
        }
        if deadline <= self.refresh_interval {
            return Err(Error::Config(format!(
                "renew_deadline ({deadline:?}) must be above refresh_interval ({:?}) to allow a retry",
                self.refresh_interval
            )));
        }
        Ok(())
    }
}

pub(crate) fn validate_lease_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_LEASE_NAME_BYTES {
        return Err(Error::Config(format!("lease name must be 1 to {MAX_LEASE_NAME_BYTES} bytes, not {}", name.len())));
    }
    Ok(())
}

fn validate_schema(schema: &str) -> Result<(), Error> {
    if schema.is_empty() || schema.len() > MAX_SCHEMA_BYTES {
        return Err(Error::Config(format!("schema name must be 1 to {MAX_SCHEMA_BYTES} bytes, not {}", schema.len())));
    }
    if schema.contains('\0') {
        return Err(Error::Config("schema name must not contain NUL".into()));
    }
    Ok(())
}

/// `name` as an SQL identifier: in double quotes, each `"` in it doubled. Quoted, the name is
/// taken exactly as given (case included) and cannot end the identifier early.
pub(crate) fn quote_identifier(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Builds a [`LeaseConfig`] field by field; [`LeaseClientBuilder`](crate::LeaseClientBuilder)
/// offers the same methods.
impl LeaseConfig {
    /// Sets the lease name.
    pub fn with_lease_name(mut self, name: impl Into<String>) -> Self {
        self.lease_name = name.into();
        self
    }

    /// Sets a stable holder id, instead of a fresh random one for each built client.
    ///
    /// **It must be unique per process** (and per built client): two processes with one holder
    /// id are one holder to the database, both "holding" the lease with the same fencing token.
    /// Never put a fixed id into a configuration file that replicas share. See
    /// [`LeaseClientBuilder::holder_id`](crate::LeaseClientBuilder::holder_id) for what the
    /// client detects.
    pub fn with_holder_id(mut self, id: Uuid) -> Self {
        self.holder_id = Some(id);
        self
    }

    /// Sets the schema the extension's functions are in (default `lease_lock`). The exact name
    /// as PostgreSQL stores it, case-sensitive and without quotes: the client quotes it.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the lease duration.
    pub fn with_lease_duration(mut self, d: Duration) -> Self {
        self.lease_duration = d;
        self
    }

    /// Sets the refresh interval.
    pub fn with_refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d;
        self
    }

    /// Sets the renew deadline.
    pub fn with_renew_deadline(mut self, d: Duration) -> Self {
        self.renew_deadline = Some(d);
        self
    }

    /// Sets the per-call timeout.
    pub fn with_call_timeout(mut self, d: Duration) -> Self {
        self.call_timeout = Some(d);
        self
    }

    /// Sets the back-off cap.
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Turns the session-level timeouts on the dedicated connection on or off.
    pub fn with_session_settings(mut self, on: bool) -> Self {
        self.session_settings = on;
        self
    }

    /// Turns LISTEN for release notifications on or off.
    pub fn with_listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(config: LeaseConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let c = LeaseConfig::default();
        c.validate().unwrap();
        assert_eq!(c.renew_deadline(), Duration::from_secs(10) * 2 / 3);
        assert_eq!(c.call_timeout(), Duration::from_secs(2));
        assert_eq!(c.schema(), "lease_lock");
        assert_eq!(c.holder_id(), None);
    }

    #[test]
    fn schema_names_are_validated_and_quoted_as_identifiers() {
        let d = LeaseConfig::default();
        assert!(err(d.clone().with_schema("")).contains("schema name"));
        assert!(err(d.clone().with_schema("a\0b")).contains("NUL"));
        assert!(err(d.clone().with_schema("s".repeat(64))).contains("schema name"));
        d.clone().with_schema("s".repeat(63)).validate().unwrap();
        d.clone().with_schema(r#"we"ird; DROP"#).validate().unwrap();
        assert_eq!(quote_identifier("lease_lock"), r#""lease_lock""#);
        assert_eq!(quote_identifier("Mixed Case"), r#""Mixed Case""#);
        assert_eq!(quote_identifier(r#"a"b""#), r#""a""b""""#);
        assert_eq!(quote_identifier(r#"x".lease_acquire(--"#), r#""x"".lease_acquire(--""#);
    }

    #[test]
    fn bad_settings_are_errors_not_panics() {
        let d = LeaseConfig::default();
        assert!(err(d.clone().with_lease_name("")).contains("lease name"));
        assert!(err(d.clone().with_lease_name("x".repeat(256))).contains("lease name"));
        assert!(err(d.clone().with_lease_duration(Duration::ZERO)).contains("lease_duration must be positive"));
        assert!(err(d.clone().with_refresh_interval(Duration::ZERO)).contains("refresh_interval"));
        assert!(err(d.clone().with_lease_duration(Duration::from_secs(90_000))).contains("1 day"));
        assert!(err(d.clone().with_refresh_interval(Duration::from_secs(6))).contains("half"));
        assert!(err(d.clone().with_renew_deadline(Duration::from_secs(10))).contains("below lease_duration"));
        assert!(err(d.clone().with_renew_deadline(Duration::from_secs(11))).contains("below lease_duration"));
        assert!(err(d.clone().with_renew_deadline(Duration::from_millis(900))).contains("above refresh_interval"));
        assert!(err(d.clone().with_call_timeout(Duration::ZERO)).contains("call_timeout"));
        assert!(err(d.clone().with_lease_duration(Duration::from_nanos(10_000_000_001))).contains("microseconds"));
    }

    #[test]
    fn loads_from_serde_with_humantime_durations() {
        let c: LeaseConfig = serde_json::from_str(
            r#"{"lease_name":"orders","holder_id":"00000000-0000-0000-0000-000000000001",
                "lease_duration":"3s","refresh_interval":"200ms","renew_deadline":"2s"}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.schema(), "lease_lock");
        let public: LeaseConfig = serde_json::from_str(r#"{"schema":"public"}"#).unwrap();
        assert_eq!(public.schema(), "public");
        assert_eq!(c.lease_name(), "orders");
        assert_eq!(c.refresh_interval(), Duration::from_millis(200));
        assert_eq!(c.renew_deadline(), Duration::from_secs(2));
        assert!(serde_json::from_str::<LeaseConfig>(r#"{"lease_durration":"3s"}"#).is_err());
        let round_trip: LeaseConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round_trip, c);
    }
}
