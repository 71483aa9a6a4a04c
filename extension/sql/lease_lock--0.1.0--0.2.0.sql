-- lease_lock 0.1.0 -> 0.2.0: ALTER EXTENSION lease_lock UPDATE TO '0.2.0'.
--
-- Every change to the extension's SQL objects between the two versions goes here, in the order
-- it landed, so that an upgraded database equals a fresh install of 0.2.0 (tests/tests/upgrade.rs
-- compares the two catalogs). The 0.2.0 library serves 0.1.0's SQL unchanged until this runs:
-- it keeps every C symbol 0.1.0's functions name, with the same arguments and results.
\echo Use "ALTER EXTENSION lease_lock UPDATE" to load this file. \quit
