//! Where the database is: `--database-url`, else `DATABASE_URL`, else libpq's `PG*` variables
//! (tokio-postgres reads none of them itself), and the schema of lease_lock's functions.

use clap::Args;
use lease_lock_client::{LeaseClient, LeaseClientBuilder};

/// libpq's environment variables and the connection parameters they set.
const PG_VARS: [(&str, &str); 12] = [
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGDATABASE", "dbname"),
    ("PGAPPNAME", "application_name"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
];

#[derive(Args, Clone, Debug)]
pub struct DbArgs {
    /// A libpq connection string or postgresql:// URL (multi-host and sslmode as libpq).
    /// Default: $DATABASE_URL, else libpq's PG* variables.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The schema lease_lock's functions are in (the extension's is lease_lock; the portable
    /// edition's is the one it was installed into).
    #[arg(long, global = true, default_value = "lease_lock", env = "LEASE_LOCK_SCHEMA")]
    pub schema: String,
}

/// `value` as a libpq connection-string value: always single-quoted, `\` and `'` escaped, so
/// no whitespace of any kind in a variable can end it and start another `key=value`.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl DbArgs {
    /// The connection string: the given one, or one made of libpq's variables, with libpq's
    /// defaults for what they leave out (the Unix socket, the login name as user and database).
    pub fn conninfo(&self) -> String {
        if let Some(url) = &self.database_url {
            return url.clone();
        }
        let mut params: Vec<(&str, String)> =
            PG_VARS.iter().filter_map(|(var, key)| std::env::var(var).ok().map(|v| (*key, v))).collect();
        let has = |params: &[(&str, String)], key: &str| params.iter().any(|(k, _)| *k == key);
        if !has(&params, "host") && !has(&params, "hostaddr") {
            params.push(("host", "/var/run/postgresql,/tmp".into()));
        }
        if !has(&params, "user") {
            let login = std::env::var("USER").unwrap_or_else(|_| "postgres".into());
            params.push(("user", login));
        }
        params.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect::<Vec<_>>().join(" ")
    }

    /// A client builder for lease `name` with the schema set.
    pub fn builder(&self, name: &str) -> LeaseClientBuilder {
        LeaseClient::builder(&self.conninfo()).schema(&self.schema).lease_name(name)
    }
}
