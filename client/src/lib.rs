//! Leader election on PostgreSQL with the `lease_lock` extension: hold a lease on a dedicated
//! connection, renew it in the background, and learn the moment it can no longer be trusted.
//!
//! A [`LeaseClient`] takes a connection string (or a [`tokio_postgres::Config`]) and the lease
//! settings of [`LeaseConfig`]. [`LeaseClient::acquire`] waits until the lease is held (checking
//! again when the extension's release notification arrives, which is only a hint, or at the
//! holder's expiry) and returns a [`Lease`], whose background task renews it every
//! `refresh_interval`. The lease is trusted until
//! `renew_deadline` after the send time of the last renewal the database confirmed, which is
//! always before the database could hand it to anyone else; when that passes, or the database
//! says the lease is gone, [`Lease::lost`] resolves and the state turns
//! [`LeaseState::Lost`]. The process is never exited: what to do is the application's call.
//!
//! Ways to use it:
//! - **Hold**: `acquire`, work while [`Lease::is_held`], [`Lease::release`] at the end.
//! - **Run while held**: [`Lease::run_while_held`] cancels the work the moment the lease is lost.
//! - **Elect**: [`LeaseClient::run_elector`] competes, leads, and competes again after a loss.
//! - **Many leases**: [`LeaseClient::for_lease`] gives clients of other lease names that share
//!   one connection and one holder id; their renewals are aligned on a grid of refresh
//!   intervals and sent together, as one `lease_refresh_many` per interval (one `lease_refresh`
//!   per lease if the server lacks it or the role may not call it).
//!
//! Settings and their defaults (see [`LeaseConfig`]): lease name `default`, holder id a fresh
//! random UUID per built client, schema `lease_lock` (where the extension's functions and the
//! `lease_status` view are; every call is schema-qualified with it), lease duration 10 s,
//! refresh interval 1 s (at most half the lease), renew deadline 2/3 of the lease (below the
//! lease), call timeout 2 s, back-off cap 5 s, session settings and LISTEN on. Invalid
//! settings are an [`Error::Config`] from `build`, never a panic. TLS is the `tls` cargo
//! feature (rustls).
//!
//! # TLS
//! With the `tls` feature, a connection string takes libpq's TLS parameters, in `key=value` and
//! URL form, with libpq's meanings: `sslmode=verify-full sslrootcert=/path/ca.pem` checks the
//! server's chain against those CAs and its name against the host connected to (what managed
//! services document); `verify-ca` the chain only; `require` encrypts and checks the chain only
//! if `sslrootcert` is given; `prefer` and `allow` use TLS when the server offers it, unchecked;
//! `disable` never. `sslcert` and `sslkey` (PEM) authenticate the client.
//! `LeaseClientBuilder::tls` takes a whole rustls configuration instead. A certificate or TLS
//! configuration error is permanent: `acquire` returns it ([`Error::Connect`]) instead of
//! retrying.
//!
//! Every operation ends within its documented bound even when the server accepts connections
//! but never answers: opening the connection counts as one call of at most the call timeout.
//!
//! # Holder ids
//! The database knows a holder only by its id, so **a configured holder id must be unique per
//! process**: replicas that share one (from a common configuration file) all hold the lease at
//! once with one fencing token. Leave it unset unless each process gets its own. The client
//! refuses a tenure it did not start ([`Error::DuplicateHolderId`]) and warns when it sees
//! another session with its id (see [`LeaseClientBuilder::holder_id`]).
//!
//! # Fencing
//! A lease alone cannot stop a paused holder from writing after it lost the lease. Call
//! [`Lease::fence`] first in each transaction that writes protected data (on the application's
//! own connection): it runs `lease_fence(token, lease_name)`, which fails with
//! [`Error::Fenced`] (SQLSTATE `LL001`) unless the token is the current tenure, and holds off
//! the next tenure until the transaction ends. [`Lease::fencing`] hands a [`Fence`] to the
//! tasks that write.
//!
//! # Example
//! ```no_run
//! use lease_lock_client::LeaseClient;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), lease_lock_client::Error> {
//! let client = LeaseClient::builder("host=/var/run/postgresql dbname=app")
//!     .lease_name("orders-worker")
//!     .lease_duration(Duration::from_secs(10))
//!     .refresh_interval(Duration::from_secs(1))
//!     .build()?;
//! let lease = client.acquire().await?;
//! let fence = lease.fencing();
//! let outcome = lease
//!     .run_while_held(async move {
//!         // Work as the leader; in each write's transaction, `fence.check(&tx).await?` first.
//!         let _ = fence;
//!     })
//!     .await;
//! match outcome {
//!     Ok(()) => { lease.release().await?; }
//!     Err(reason) => eprintln!("lost the lease: {reason}"),
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod backoff;
mod claims;
mod client;
mod config;
mod conninfo;
mod error;
mod fence;
mod lease;
mod session;
mod watch;

pub use client::{LeaseClient, LeaseClientBuilder};
pub use config::{LeaseConfig, DEFAULT_SCHEMA, MAX_LEASE_DURATION, MAX_LEASE_NAME_BYTES, MAX_SCHEMA_BYTES};
pub use error::Error;
pub use fence::Fence;
pub use lease::{Lease, LeaseInfo, LeaseState, LossReason};
pub use session::{Leader, EVENTS_CHANNEL, RELEASE_CHANNEL};
pub use watch::LeaderWatch;

// The README's Rust example, compiled as a doctest so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
