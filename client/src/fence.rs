//! Fencing: the first statement of every transaction that writes protected data.
//!
//! A lease alone cannot stop a holder that was paused (GC, SIGSTOP, a stalled VM) between
//! deciding to write and writing: by the time its write arrives, another holder may have begun.
//! `lease_fence(token, lease_name)` in the same transaction as the write makes the database the
//! judge: it fails with SQLSTATE `LL001` unless the token is the current, unexpired tenure, and
//! from then on no new tenure can begin until the transaction ends. [`Fence`] sends it on the
//! application's own connection or transaction (any [`GenericClient`]): schema-qualified with
//! the client's schema, the token and the name bound as parameters, in one round trip.

use crate::config::quote_identifier;
use crate::error::Error;
use lease_lock_contract::sqlstate;
use std::sync::Arc;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

/// What a protected write calls first, for one tenure: its lease name, its fencing token and the
/// schema of the lease functions. Cheap to clone; send it to whatever task writes.
///
/// [`Lease::fence`](crate::Lease::fence) and [`LeaseInfo::fence`](crate::LeaseInfo::fence) run
/// it; [`Lease::fencing`](crate::Lease::fencing) and [`LeaseInfo::fencing`](crate::LeaseInfo::fencing)
/// hand it out; [`Fence::new`] builds one from a token handed over by another process.
#[derive(Clone, Debug)]
pub struct Fence {
    /// `SELECT "<schema>".lease_fence($1, $2)`: the schema is an identifier, so it is quoted into
    /// the text; the token and name are bound.
    sql: Arc<str>,
    lease_name: Arc<str>,
    fencing_token: i64,
}

impl Fence {
    /// The fence of tenure `fencing_token` of `lease_name`, whose functions are in `schema`
    /// (the exact name, as [`LeaseConfig::schema`](crate::LeaseConfig::schema)).
    pub fn new(schema: &str, lease_name: &str, fencing_token: i64) -> Fence {
        Fence::of(&fence_sql(schema), lease_name.into(), fencing_token)
    }

    pub(crate) fn of(sql: &Arc<str>, lease_name: Arc<str>, fencing_token: i64) -> Fence {
        Fence { sql: sql.clone(), lease_name, fencing_token }
    }

    /// The lease's name.
    pub fn lease_name(&self) -> &str {
        &self.lease_name
    }

    /// The tenure's fencing token.
    pub fn fencing_token(&self) -> i64 {
        self.fencing_token
    }

    /// Calls `lease_fence(token, lease_name)` on `client`: the application's connection, inside
    /// the transaction that then writes (a [`tokio_postgres::Transaction`]). On a bare
    /// [`tokio_postgres::Client`] in autocommit it only checks the tenure at that instant and
    /// protects nothing after it; call it in the transaction.
    ///
    /// One round trip: the statement is sent with its parameter types (no prepare), so it also
    /// works through a transaction-mode pooler.
    ///
    /// # Errors
    /// - [`Error::Fenced`] (SQLSTATE `LL001`): the tenure is over; another holder may have
    ///   begun. The transaction is aborted: roll it back and stop acting as the holder.
    /// - [`Error::Fence`]: any other failure, with the database error (for example `42501`: the
    ///   role does not hold the tenure; `40001` in `REPEATABLE READ` or `SERIALIZABLE` when the
    ///   lease changed after the snapshot; a broken connection). The transaction is aborted or
    ///   gone, and whether the tenure is still current is not known.
    ///
    /// # Cancel safety
    /// Cancelling it leaves the statement's outcome unknown, as for any statement: roll the
    /// transaction back. The lease and its renewals are not affected.
    pub async fn check<C: GenericClient + Sync>(&self, client: &C) -> Result<(), Error> {
        let lease_name: &str = &self.lease_name;
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
            [(&self.fencing_token, Type::INT8), (&lease_name, Type::TEXT)];
        match client.execute_typed(&self.sql, &params).await {
            Ok(_) => Ok(()),
            Err(e) if e.code().map(|c| c.code()) == Some(sqlstate::FENCE_REJECTED) => Err(Error::Fenced {
                lease_name: self.lease_name.to_string(),
                fencing_token: self.fencing_token,
                source: e,
            }),
            Err(e) => Err(Error::Fence(e)),
        }
    }
}

/// The fence statement for the lease functions in `schema`.
pub(crate) fn fence_sql(schema: &str) -> Arc<str> {
    format!("SELECT {}.lease_fence($1, $2)", quote_identifier(schema)).into()
}
