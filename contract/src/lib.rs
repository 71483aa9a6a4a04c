//! The SQL contract of `lease_lock`, in one place for the extension (which enforces it) and the
//! Rust client (which relies on it). No dependencies: both crates use these constants, so they
//! cannot disagree. The README's SQL API and SQLSTATE tables document the same values.
#![no_std]
#![forbid(unsafe_code)]

use core::time::Duration;

/// The schema every object of the extension lives in (fixed by the control file).
pub const SCHEMA: &str = "lease_lock";

/// The channel `lease_release` and `lease_evict` notify at commit, with the lease name as the
/// payload. Anyone may notify it: a notification is a hint to call `lease_acquire` again, never
/// a grant.
pub const RELEASE_CHANNEL: &str = "lease_lock_released";

/// The channel every change of a lease's holder is notified on at commit, for watchers: a
/// JSON object `{"event": ..., "lease_name": ..., "fencing_token": ..., "holder_role": ...}`,
/// `event` one of [`events`]. `holder_role` is the role of the tenure (null for an eviction);
/// the holder id is not sent, since every role that can connect may `LISTEN` (`lease_status`
/// shows it to members of the holder's role). Renewals notify nothing. As with
/// [`RELEASE_CHANNEL`], anyone may notify this channel: a notification is a hint to read
/// `lease_status`, never proof.
pub const EVENTS_CHANNEL: &str = "lease_lock_events";

/// The `event` values of [`EVENTS_CHANNEL`]'s payloads.
pub mod events {
    /// A new tenure started (`lease_acquire` took a free, expired or released lease): a new
    /// fencing token.
    pub const ACQUIRED: &str = "acquired";
    /// The holder released its tenure (`lease_release`).
    pub const RELEASED: &str = "released";
    /// An administrator ended the tenure (`lease_evict`).
    pub const EVICTED: &str = "evicted";
    /// The holder renewed a tenure written on an earlier WAL timeline, its first renewal after a
    /// failover (`lease_refresh`): the same token, held again on the new primary.
    pub const REARMED: &str = "rearmed";
}

/// The longest lease name, in bytes (names are 1 to this many bytes).
pub const MAX_NAME_BYTES: usize = 255;

/// The longest lease duration: one day (days count as 24 hours; months are refused).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// [`MAX_DURATION`] in microseconds, as the extension compares it.
pub const MAX_DURATION_MICROS: i64 = MAX_DURATION.as_micros() as i64;

/// The SQLSTATEs the lease functions raise, by what they mean.
pub mod sqlstate {
    /// A NULL argument.
    pub const NULL_VALUE_NOT_ALLOWED: &str = "22004";
    /// A bad duration or lease name.
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    /// Called on a standby (read-only) server: not connected, for leases.
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    /// Another role's holder id; `lease_fence` by a role that does not hold the tenure; no
    /// `EXECUTE`; schema `lease_lock` not owned by a superuser.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// The extension's schema is missing.
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// A new lease name beyond `lease_lock.max_lease_names`.
    pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
    /// A lock wait passed `lease_lock.lock_timeout`.
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    /// The extension's tables were altered.
    pub const DATA_CORRUPTED: &str = "XX001";
    /// `lease_fence`: the token is not the current, unexpired tenure. The holder must stop.
    pub const FENCE_REJECTED: &str = "LL001";
}

#[cfg(test)]
mod tests {
    #[test]
    fn max_duration_is_one_day_in_microseconds() {
        assert_eq!(super::MAX_DURATION_MICROS, 86_400_000_000);
    }
}
