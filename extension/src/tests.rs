//! What the Rust tier checks: behaviour that needs the server's own state rewritten (a lease
//! row from another timeline, to simulate a failover) or a hostile schema set up around a call.
//! The single-session SQL contract (every function, every bad input, privileges) is in
//! `sql/regress`, two-session orderings in `sql/isolation`, multi-session and multi-server tests
//! in `tests/tests`.
//!
//! Function semantics, one session. Each `#[pg_test]` runs inside one transaction that is rolled
//! back, so `now()` is frozen there; the functions use `clock_timestamp()`, which is not, and short
//! leases really expire after `pg_sleep`. Two-session behaviour (fencing blocks a new tenure,
//! standbys do not block the holder, NOTIFY) is in `sql/isolation`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    const A: &str = "'00000000-0000-0000-0000-00000000000a'";
    const B: &str = "'00000000-0000-0000-0000-00000000000b'";

    /// `(acquired, fencing_token, expires_at is in the future)` of one call.
    fn call(sql: &str) -> (bool, Option<i64>, Option<bool>) {
        Spi::get_three::<bool, i64, bool>(&format!(
            "SELECT acquired, fencing_token, expires_at > clock_timestamp() FROM {sql}"
        ))
        .map(|(a, t, e)| (a.expect("acquired is never NULL"), t, e))
        .expect("query runs")
    }

    fn acquire(holder: &str, duration: &str, name: &str) -> (bool, Option<i64>, Option<bool>) {
        call(&format!("lease_lock.lease_acquire({holder}, interval '{duration}', '{name}')"))
    }

    fn refresh(holder: &str, duration: &str, name: &str) -> (bool, Option<i64>, Option<bool>) {
        call(&format!("lease_lock.lease_refresh({holder}, interval '{duration}', '{name}')"))
    }

    fn release(holder: &str, name: &str) -> bool {
        Spi::get_one::<bool>(&format!("SELECT lease_lock.lease_release({holder}, '{name}')"))
            .expect("query runs")
            .expect("never NULL")
    }

    fn sleep(seconds: f64) {
        Spi::run(&format!("SELECT pg_sleep({seconds})")).expect("pg_sleep");
    }

    #[pg_test]
    fn a_hostile_search_path_changes_nothing() {
        // An operator "=" on (text, text) in a schema searched before pg_catalog would hijack any
        // unqualified comparison in a function running with its owner's rights.
        Spi::run(
            "CREATE SCHEMA evil;
             CREATE FUNCTION evil.always(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
             CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.always);
             SET LOCAL search_path = evil, pg_catalog, public",
        )
        .expect("hostile search_path");
        acquire(A, "10 s", "a_hostile_search_path_changes_nothing");
        assert_eq!(acquire(B, "10 s", "other").1, Some(1), "a different name is a different lease");
        assert!(!acquire(B, "10 s", "a_hostile_search_path_changes_nothing").0);
    }

    #[pg_test]
    fn tokens_grow_across_many_tenures() {
        let mut last = 0;
        for _ in 0..20 {
            let token = acquire(A, "10 s", "tokens_grow_across_many_tenures").1.unwrap();
            assert!(token > last);
            last = token;
            assert!(release(A, "tokens_grow_across_many_tenures"));
        }
        assert_eq!(last, 20);
    }

    /// Simulates a failover: the row was last written on another timeline, and its expiry misses
    /// renewals the old primary acknowledged (it is already past). On timeline 1 there is no
    /// history file, so the failover hold counts from the server's start (protocol.rs).
    fn from_older_timeline(name: &str) {
        Spi::run(&format!(
            "UPDATE lease_lock.leases SET timeline = timeline - 1, expires_at = clock_timestamp() - interval '10 ms',
                 renewed_at = clock_timestamp() - interval '1.3 s' WHERE lease_name = '{name}'"
        ))
        .expect("rewrite row");
    }

    /// `expires_at` as reported equals the end of the failover hold for `duration`.
    fn hold_ends(sql: &str, duration: &str) -> bool {
        Spi::get_one::<bool>(&format!(
            "SELECT expires_at = pg_postmaster_start_time() + interval '{duration}' FROM {sql}"
        ))
        .expect("query runs")
        .expect("not NULL")
    }

    #[pg_test]
    fn after_a_failover_the_holder_keeps_its_tenure_by_refreshing() {
        let name = "after_a_failover_the_holder_keeps_its_tenure";
        assert_eq!(acquire(A, "1 hour", name).1, Some(1));
        from_older_timeline(name);
        // The holder renews although the replicated expiry has passed: it still believes it
        // holds the lease, and nobody can have taken it while it did.
        assert_eq!(refresh(A, "1 hour", name), (true, Some(1), Some(true)));
        let timeline = Spi::get_one::<bool>(&format!(
            "SELECT timeline = (SELECT timeline_id FROM pg_control_checkpoint()) FROM lease_lock.lease_status WHERE lease_name = '{name}'"
        ));
        assert_eq!(timeline, Ok(Some(true)));
        // Back on this timeline, acquire renews it as usual.
        assert_eq!(acquire(A, "1 hour", name).1, Some(1));
    }

    #[pg_test]
    fn after_a_failover_refresh_does_not_revive_a_tenure_that_ended_before_the_promotion() {
        // As far as the new primary knows, the tenure had run out before the promotion (here:
        // the server's start): someone else may have taken the lease on the lost timeline.
        let name = "after_a_failover_refresh_does_not_revive";
        assert_eq!(acquire(A, "1 hour", name).1, Some(1));
        Spi::run(&format!(
            "UPDATE lease_lock.leases SET timeline = timeline - 1,
                 expires_at = pg_postmaster_start_time() - interval '1 s' WHERE lease_name = '{name}'"
        ))
        .expect("rewrite row");
        assert!(!refresh(A, "1 hour", name).0);
        assert_eq!(acquire(B, "1 hour", name), (false, None, Some(true)));
    }

    #[pg_test]
    fn after_a_failover_acquire_never_continues_an_old_tenure() {
        // The holder may have released the lease on the lost timeline and another taken it:
        // lease_acquire (the caller does not claim to hold it) waits out the hold like anyone.
        let name = "after_a_failover_acquire_never_continues";
        assert_eq!(acquire(A, "1 hour", name).1, Some(1));
        from_older_timeline(name);
        assert_eq!(acquire(A, "1 hour", name), (false, None, Some(true)));
        assert!(hold_ends(&format!("lease_lock.lease_acquire({A}, interval '1 hour', '{name}')"), "1 hour"));
        assert_eq!(acquire(B, "1 hour", name), (false, None, Some(true)));
    }

    #[pg_test]
    fn after_a_failover_others_wait_until_the_hold_ends() {
        let name = "after_a_failover_others_wait_until_the_hold";
        assert_eq!(acquire(A, "1 hour", name).1, Some(1));
        from_older_timeline(name);
        // The hold lasts the longest duration the name was ever granted, or the caller's.
        assert!(hold_ends(&format!("lease_lock.lease_acquire({B}, interval '10 s', '{name}')"), "1 hour"));
        assert!(hold_ends(&format!("lease_lock.lease_acquire({B}, interval '2 hours', '{name}')"), "2 hours"));
        // Refused callers wrote nothing: the row is still the old timeline's.
        let old = Spi::get_one::<bool>(&format!(
            "SELECT timeline <> (SELECT timeline_id FROM pg_control_checkpoint()) FROM lease_lock.leases WHERE lease_name = '{name}'"
        ));
        assert_eq!(old, Ok(Some(true)));
    }

    #[pg_test]
    fn after_a_failover_a_short_hold_that_has_passed_frees_the_lease() {
        let name = "after_a_failover_a_short_hold_has_passed";
        assert_eq!(acquire(A, "200 ms", name).1, Some(1));
        from_older_timeline(name);
        sleep(0.25); // the server started at least this long ago now
        assert_eq!(acquire(B, "200 ms", name), (true, Some(2), Some(true)));
    }

    #[pg_test]
    fn after_a_failover_a_released_lease_is_still_held_off() {
        // The release may be a retry of one the old primary had already done, after which
        // another holder may have started a tenure that was lost.
        let name = "after_a_failover_a_released_lease_is_held_off";
        acquire(A, "1 hour", name);
        assert!(release(A, name));
        from_older_timeline(name);
        assert!(hold_ends(&format!("lease_lock.lease_acquire({B}, interval '1 s', '{name}')"), "1 hour"));
    }

    #[pg_test]
    fn after_a_failover_the_holders_release_keeps_the_hold() {
        let name = "after_a_failover_the_holders_release_keeps";
        acquire(A, "1 hour", name);
        from_older_timeline(name);
        assert!(release(A, name));
        assert!(!refresh(A, "1 hour", name).0);
        assert!(hold_ends(&format!("lease_lock.lease_acquire({B}, interval '1 s', '{name}')"), "1 hour"));
    }

    #[pg_test]
    fn after_a_failover_evict_ends_the_old_tenure() {
        let name = "after_a_failover_evict_ends_the_old_tenure";
        acquire(A, "200 ms", name);
        from_older_timeline(name);
        assert_eq!(Spi::get_one::<bool>(&format!("SELECT lease_lock.lease_evict('{name}')")), Ok(Some(true)));
        assert!(!refresh(A, "200 ms", name).0);
        sleep(0.25); // the hold (server start + 200 ms) has surely passed
        assert_eq!(acquire(B, "200 ms", name), (true, Some(2), Some(true)));
    }
}
