//! Streaming replication for failover tests: a primary and a standby cluster.
