//! The crate's one error type.

use std::time::Duration;

/// What failed. Each variant keeps its cause as [`std::error::Error::source`]; messages do not
/// repeat it, so `{:#}`-style chain printers show each cause once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid (see [`LeaseConfig::validate`](crate::LeaseConfig::validate)).
    #[error("invalid lease configuration: {0}")]
    Config(String),
    /// Connecting to PostgreSQL, or preparing the dedicated connection, failed with an error
    /// (refused, authentication, a missing schema or function). An open that does not finish
    /// within the call timeout is [`Error::CallTimeout`].
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] tokio_postgres::Error),
    /// `lease_acquire` failed with an error that retrying will not fix (for example the
    /// extension is not installed: SQLSTATE 42883, or the role may not use it: 42501).
    #[error("lease_acquire failed")]
    Acquire(#[source] tokio_postgres::Error),
    /// `lease_release` failed.
    #[error("lease_release failed")]
    Release(#[source] tokio_postgres::Error),
    /// Reading `lease_status` failed (a missing schema or view: 42P01/3F000, no privilege).
    #[error("reading lease_status failed")]
    Status(#[source] tokio_postgres::Error),
    /// `lease_evict` failed (for example 42501: the role may not evict).
    #[error("lease_evict failed")]
    Evict(#[source] tokio_postgres::Error),
    /// `lease_fence` refused the token (SQLSTATE `LL001`): the tenure is no longer the current,
    /// unexpired one, and another holder may have begun. The write's transaction is aborted:
    /// roll it back and stop acting as the holder.
    #[error(
        "lease {lease_name:?}: tenure {fencing_token} is over (lease_fence refused it): stop acting as its holder"
    )]
    Fenced {
        /// The lease.
        lease_name: String,
        /// The token that was refused.
        fencing_token: i64,
        /// The database's error (`LL001`).
        source: tokio_postgres::Error,
    },
    /// `lease_fence` failed for another reason (privileges, a serialization failure, the
    /// connection): the transaction is aborted or gone, and whether the tenure is current is
    /// not known.
    #[error("lease_fence failed")]
    Fence(#[source] tokio_postgres::Error),
    /// A database call took longer than the call timeout. Opening the dedicated connection
    /// counts as one call: TCP connect, TLS, the startup exchange, LISTEN and the prepared
    /// statements together, so a server that accepts connections but never answers ends here.
    #[error("database call took longer than {0:?}")]
    CallTimeout(Duration),
    /// This client already has a handle on this lease, or an acquire of it is running: one
    /// handle per tenure. (An acquire after a handle was dropped waits for its release instead.)
    #[error("lease {0:?} is already held or being acquired by this client")]
    InUse(String),
    /// [`LeaseClient::acquire_timeout`](crate::LeaseClient::acquire_timeout) gave up.
    #[error("lease not acquired within {0:?}")]
    AcquireTimeout(Duration),
    /// `lease_acquire` renewed a tenure that was already held under this client's holder id,
    /// though this client never started it: another process (or another client built with the
    /// same [`holder_id`](crate::LeaseClientBuilder::holder_id)) presents the same id, or a
    /// predecessor with that id crashed and its tenure has not expired yet. The client does not
    /// treat it as held and does not release it (that would end the other process's tenure).
    /// Holder ids must be unique per process.
    #[error(
        "lease {lease_name:?} is already held under this holder id by another process (fencing token {fencing_token}): holder ids must be unique per process"
    )]
    DuplicateHolderId {
        /// The lease.
        lease_name: String,
        /// The token of the tenure the other process holds.
        fencing_token: i64,
    },
}

impl Error {
    /// The SQLSTATE of the database error behind this one, if any.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Connect(e)
            | Error::Acquire(e)
            | Error::Release(e)
            | Error::Status(e)
            | Error::Evict(e)
            | Error::Fence(e) => e.code(),
            Error::Fenced { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// Whether a database error is worth retrying: the connection broke, the server is shutting
/// down or read-only (a standby), or a lock or serialization conflict. Everything else (missing
/// extension, privileges, bad input, a certificate that is not trusted) will fail the same way
/// again.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    if crate::conninfo::is_tls_failure(e) {
        // A certificate the client does not trust, or a TLS setting the server refuses: the
        // next attempt meets the same certificate.
        return false;
    }
    match e.code() {
        Some(code) => is_transient_code(code.code()),
        // No SQLSTATE: an I/O error or a closed connection.
        None => true,
    }
}

fn is_transient_code(code: &str) -> bool {
    use lease_lock_contract::sqlstate;
    if code == sqlstate::CONFIGURATION_LIMIT_EXCEEDED {
        // Class 53, but not a passing shortage: the extension's cap on lease names, which stays
        // reached until an administrator acts.
        return false;
    }
    matches!(code.get(..2), Some("08" | "53" | "57" | "58" | "40"))
        || code == sqlstate::LOCK_NOT_AVAILABLE // lock_timeout
        || code == sqlstate::READ_ONLY_SQL_TRANSACTION // connected to a standby
}

#[cfg(test)]
mod tests {
    use super::is_transient_code;

    #[test]
    fn transient_sqlstates() {
        for code in ["08006", "57P01", "53300", "40001", "55P03", "25006"] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["42883", "42501", "3F000", "42704", "22023", "53400", "XX001", "LL001", ""] {
            assert!(!is_transient_code(code), "{code}");
        }
    }
}
