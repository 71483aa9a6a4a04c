//! Connections and the SQL the benchmarks send: lease_lock's calls, the reference
//! implementation's (verbatim, on its own table in the schema `reference`), and the floors.

use super::BenchError;
use anyhow::Context;
use std::time::Duration;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

/// Lease duration of every timed scenario: long enough that no lease expires between the rounds
/// of a scenario (an expired lease would turn a renewal into a new tenure or a refusal). The
/// duration does not change what a renewal costs.
pub const BENCH_LEASE: Duration = Duration::from_secs(3600);

/// Which lease_lock a call goes to. The runner installs both in its database: the C extension
/// (`CREATE EXTENSION`, schema `lease_lock`) and the portable edition's psql script in schema
/// `lease_portable`, as a role without superuser rights that owns the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Edition {
    C,
    Portable,
}

/// The statements the benchmarks send to one edition, each written once ([`edition_sql!`]).
pub struct EditionSql {
    /// The schema of the edition's functions.
    pub schema: &'static str,
    /// `lease_refresh` as the holder sends it, the duration a literal (folded when prepared).
    pub refresh: &'static str,
    /// `lease_acquire` by the holder (a renewal) or by a standby (a refusal).
    pub acquire: &'static str,
    /// `lease_refresh_many` of the names `$2` for holder `$1`: how many it renewed.
    pub refresh_many: &'static str,
    /// Takes the leases `$3 || 1` to `$3 || $2` for holder `$1` in one statement: how many it
    /// took.
    pub acquire_series: &'static str,
}

/// The statements for the functions in schema `$schema` (a literal: no SQL is built at run
/// time).
macro_rules! edition_sql {
    ($schema:literal) => {
        EditionSql {
            schema: $schema,
            refresh: concat!("SELECT acquired FROM ", $schema, ".lease_refresh($1, interval '1 hour', $2)"),
            acquire: concat!("SELECT acquired FROM ", $schema, ".lease_acquire($1, interval '1 hour', $2)"),
            refresh_many: concat!(
                "SELECT count(*) FILTER (WHERE acquired) FROM ",
                $schema,
                ".lease_refresh_many($1, interval '1 hour', $2)"
            ),
            acquire_series: concat!(
                "SELECT count(*) FROM generate_series(1, $2::int) AS i, LATERAL ",
                $schema,
                ".lease_acquire($1, interval '1 hour', $3 || i) AS a WHERE a.acquired"
            ),
        }
    };
}

const C_SQL: EditionSql = edition_sql!("lease_lock");
const PORTABLE_SQL: EditionSql = edition_sql!("lease_portable");

impl Edition {
    const fn sql(self) -> &'static EditionSql {
        match self {
            Edition::C => &C_SQL,
            Edition::Portable => &PORTABLE_SQL,
        }
    }

    /// The schema of the edition's functions.
    pub const fn schema(self) -> &'static str {
        self.sql().schema
    }

    /// See [`EditionSql::refresh`].
    pub const fn refresh_sql(self) -> &'static str {
        self.sql().refresh
    }

    /// See [`EditionSql::refresh_many`].
    pub const fn refresh_many_sql(self) -> &'static str {
        self.sql().refresh_many
    }

    /// See [`EditionSql::acquire_series`].
    pub const fn acquire_series_sql(self) -> &'static str {
        self.sql().acquire_series
    }

    /// See [`EditionSql::acquire`].
    pub const fn acquire_sql(self) -> &'static str {
        self.sql().acquire
    }

    /// The edition's name in tables.
    pub const fn label(self) -> &'static str {
        match self {
            Edition::C => "C extension",
            Edition::Portable => "portable edition",
        }
    }
}

/// The reference's table and unique index: its `initialSQL`, verbatim.
pub const REFERENCE_INITIAL_SQL: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS lease_lock (client_id uuid NOT NULL, expires_at timestamptz NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS only_one_lease_lock ON lease_lock ((client_id IS NOT NULL))",
];

/// The reference's `getLease` upsert, verbatim. `$2` is a text such as `10.000000 seconds`
/// (the Go code formats it with `%f seconds`).
pub const REFERENCE_UPSERT: &str = "
INSERT INTO lease_lock (client_id, expires_at) VALUES ($1, NOW()+$2::interval) ON CONFLICT ((client_id IS NOT NULL)) DO UPDATE SET
client_id = EXCLUDED.client_id,
expires_at = EXCLUDED.expires_at
WHERE
lease_lock.client_id = $1
OR
lease_lock.expires_at < NOW()
";

/// The reference's release (its `loop` on a cancelled context), verbatim.
pub const REFERENCE_RELEASE: &str =
    "UPDATE lease_lock SET expires_at=NOW() WHERE client_id = $1 AND expires_at > NOW()";

/// Opens a connection, its driver spawned on the current runtime.
///
/// # Errors
/// The connection failed.
pub async fn connect(conninfo: &str) -> Result<Client, BenchError> {
    let (client, connection) =
        tokio_postgres::connect(conninfo, NoTls).await.with_context(|| format!("connecting to {conninfo}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "benchmark connection ended");
        }
    });
    Ok(client)
}

/// Creates the reference's table (in schema `reference`, so its names cannot clash with the
/// extension's) and the floor tables.
///
/// # Errors
/// A failed statement.
pub async fn create_schema(control: &Client, conninfo: &str) -> Result<(), BenchError> {
    control.batch_execute("CREATE SCHEMA reference").await?;
    let reference = connect(&reference_conninfo(conninfo)).await?;
    for statement in REFERENCE_INITIAL_SQL {
        reference.batch_execute(statement).await?;
    }
    // The durable-commit floor: a one-row UPDATE of a non-indexed column (a HOT update, as a
    // renewal is), on a table with the lease table's fillfactor.
    control
        .batch_execute(
            "CREATE TABLE floor_small (id int PRIMARY KEY, v bigint NOT NULL DEFAULT 0) WITH (fillfactor = 50);
             INSERT INTO floor_small (id) SELECT generate_series(1, 10);
             CREATE TABLE floor_many (id int PRIMARY KEY, v bigint NOT NULL DEFAULT 0) WITH (fillfactor = 50);
             INSERT INTO floor_many (id) SELECT generate_series(1, 10000)",
        )
        .await?;
    // Outside the batch: VACUUM cannot run in the batch's implicit transaction.
    control.batch_execute("VACUUM ANALYZE floor_small, floor_many").await?;
    Ok(())
}

/// The connection string of a reference connection: its unqualified `lease_lock` is the table
/// in schema `reference`.
pub fn reference_conninfo(conninfo: &str) -> String {
    format!("{conninfo} options='-c search_path=reference'")
}

/// Empties the reference's table (it holds one lease per database: one row at most), so the
/// next holder starts from a free lease.
///
/// # Errors
/// A failed statement.
pub async fn reset_reference(control: &Client) -> Result<(), BenchError> {
    control.batch_execute("TRUNCATE reference.lease_lock").await?;
    Ok(())
}

/// One client of the reference implementation: its dedicated connection with its session
/// timeouts, its upsert prepared, its client id.
pub struct Reference {
    client: Client,
    upsert: Statement,
    release: Statement,
    client_id: Uuid,
    duration: String,
}

impl Reference {
    /// Connects as the reference's `checkoutConn` does (`SET SESSION lock_timeout` and
    /// `idle_in_transaction_session_timeout` to the lease duration).
    ///
    /// # Errors
    /// Connecting or preparing failed.
    pub async fn connect(conninfo: &str, client_id: Uuid, lease: Duration) -> Result<Reference, BenchError> {
        let client = connect(&reference_conninfo(conninfo)).await?;
        let lease_ms = lease.as_millis();
        client
            .batch_execute(&format!(
                "SET SESSION lock_timeout = {lease_ms}; SET SESSION idle_in_transaction_session_timeout = {lease_ms}"
            ))
            .await?;
        let upsert = client.prepare_typed(REFERENCE_UPSERT, &[Type::UUID, Type::TEXT]).await?;
        let release = client.prepare_typed(REFERENCE_RELEASE, &[Type::UUID]).await?;
        Ok(Reference { client, upsert, release, client_id, duration: format!("{:.6} seconds", lease.as_secs_f64()) })
    }

    /// The reference's `getLease`: `BEGIN`, the upsert, `COMMIT` (three round trips). True if
    /// the lease was taken or renewed (a row was affected).
    ///
    /// # Errors
    /// A failed statement (the transaction is rolled back).
    pub async fn get_lease(&self) -> Result<bool, BenchError> {
        self.client.batch_execute("BEGIN").await?;
        match self.client.execute(&self.upsert, &[&self.client_id, &self.duration]).await {
            Ok(rows) => {
                self.client.batch_execute("COMMIT").await?;
                Ok(rows > 0)
            }
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(e.into())
            }
        }
    }

    /// The same upsert as one autocommit statement (one round trip).
    ///
    /// # Errors
    /// A failed statement.
    pub async fn upsert_autocommit(&self) -> Result<bool, BenchError> {
        Ok(self.client.execute(&self.upsert, &[&self.client_id, &self.duration]).await? > 0)
    }

    /// The reference's release: expires its lease now.
    ///
    /// # Errors
    /// A failed statement.
    pub async fn release(&self) -> Result<(), BenchError> {
        self.client.execute(&self.release, &[&self.client_id]).await?;
        Ok(())
    }
}

/// A connection with one edition's calls prepared, for one holder id.
pub struct LeaseCalls {
    client: Client,
    refresh: Statement,
    acquire: Statement,
    holder: Uuid,
}

impl LeaseCalls {
    /// # Errors
    /// Connecting or preparing failed.
    pub async fn connect(conninfo: &str, edition: Edition, holder: Uuid) -> Result<LeaseCalls, BenchError> {
        let client = connect(conninfo).await?;
        let refresh = client.prepare(edition.refresh_sql()).await?;
        let acquire = client.prepare(edition.acquire_sql()).await?;
        Ok(LeaseCalls { client, refresh, acquire, holder })
    }

    /// `lease_lock.lease_refresh`: whether the lease was renewed.
    ///
    /// # Errors
    /// A failed call.
    pub async fn refresh(&self, lease_name: &str) -> Result<bool, BenchError> {
        Ok(self.client.query_one(&self.refresh, &[&self.holder, &lease_name]).await?.get(0))
    }

    /// `lease_lock.lease_acquire`: whether the lease is held (taken or renewed) by this holder.
    ///
    /// # Errors
    /// A failed call.
    pub async fn acquire(&self, lease_name: &str) -> Result<bool, BenchError> {
        Ok(self.client.query_one(&self.acquire, &[&self.holder, &lease_name]).await?.get(0))
    }
}

/// Fails with a message saying which call answered what, for answers that mean the benchmark
/// is no longer measuring what it claims (a renewal that did not renew).
pub fn expect(ok: bool, what: &str) -> Result<(), BenchError> {
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!(format!("unexpected answer: {what}")))
    }
}

/// A random number in [0, 1), from a v4 UUID (no extra dependency for a few random phases).
/// The low 53 bits are random (the version and variant bits are higher up).
pub fn random_unit() -> f64 {
    (Uuid::new_v4().as_u128() & ((1u128 << 53) - 1)) as f64 / (1u64 << 53) as f64
}
