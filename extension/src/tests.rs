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

    /// The SQLSTATE `sql` raises, or `None`. Caught by PL/pgSQL, which keeps our own codes (pgrx
    /// would report them as XX000).
    fn sqlstate_of(sql: &str) -> Option<String> {
        install_sqlstate_of();
        let quoted = sql.replace('\'', "''");
        Spi::get_one::<String>(&format!("SELECT pg_temp.sqlstate_of('{quoted}')")).expect("query runs")
    }

    /// Creates `pg_temp.sqlstate_of` unless this session has it (roles other than its creator
    /// may call it but not replace it).
    fn install_sqlstate_of() {
        Spi::run(
            "DO $$ BEGIN IF to_regprocedure('pg_temp.sqlstate_of(text)') IS NULL THEN
               CREATE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS
               $f$ BEGIN EXECUTE q; RETURN NULL; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $f$;
             END IF; END $$",
        )
        .expect("helper created");
    }

    fn assert_sqlstate(sql: &str, expected: &str) {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(expected), "SQLSTATE of {sql}");
    }

    #[pg_test]
    fn acquire_takes_a_free_lease_and_renews_it_with_the_same_token() {
        assert_eq!(acquire(A, "10 s", "acquire_takes_a_free_lease_and_renews_it"), (true, Some(1), Some(true)));
        assert_eq!(acquire(A, "10 s", "acquire_takes_a_free_lease_and_renews_it"), (true, Some(1), Some(true)));
        assert_eq!(refresh(A, "10 s", "acquire_takes_a_free_lease_and_renews_it"), (true, Some(1), Some(true)));
    }

    #[pg_test]
    fn two_argument_calls_use_the_default_lease() {
        let (acquired, token, _) = call(&format!("lease_lock.lease_acquire({A}, interval '10 s')"));
        assert!(acquired);
        assert_eq!(token, Some(1));
        assert!(call(&format!("lease_lock.lease_refresh({A}, interval '10 s')")).0);
        let name = Spi::get_one::<String>("SELECT lease_name FROM lease_lock.lease_status WHERE held");
        assert_eq!(name, Ok(Some("default".into())));
        assert_eq!(Spi::get_one::<bool>(&format!("SELECT lease_lock.lease_release({A})")), Ok(Some(true)));
    }

    #[pg_test]
    fn a_held_lease_is_refused_with_the_holders_expiry() {
        acquire(A, "10 s", "a_held_lease_is_refused_with_the_holders");
        assert_eq!(acquire(B, "10 s", "a_held_lease_is_refused_with_the_holders"), (false, None, Some(true)));
        let same_expiry = Spi::get_one::<bool>(&format!(
            "SELECT (SELECT expires_at FROM lease_lock.lease_acquire({B}, interval '1 s', 'a_held_lease_is_refused_with_the_holders'))
                  = (SELECT expires_at FROM lease_lock.lease_status WHERE lease_name = 'a_held_lease_is_refused_with_the_holders')"
        ));
        assert_eq!(same_expiry, Ok(Some(true)));
        assert_eq!(refresh(B, "10 s", "a_held_lease_is_refused_with_the_holders"), (false, None, Some(true)));
        assert!(!release(B, "a_held_lease_is_refused_with_the_holders"));
    }

    #[pg_test]
    fn an_expired_lease_goes_to_the_next_caller_with_a_larger_token() {
        assert_eq!(acquire(A, "100 ms", "an_expired_lease_goes_to_the_next_caller").1, Some(1));
        sleep(0.2);
        assert_eq!(refresh(A, "10 s", "an_expired_lease_goes_to_the_next_caller"), (false, None, Some(false)));
        assert_eq!(acquire(B, "10 s", "an_expired_lease_goes_to_the_next_caller"), (true, Some(2), Some(true)));
    }

    #[pg_test]
    fn reacquiring_after_expiry_or_release_starts_a_new_tenure_even_for_the_same_holder() {
        assert_eq!(acquire(A, "100 ms", "reacquiring_after_expiry_or_release_star").1, Some(1));
        sleep(0.2);
        assert_eq!(acquire(A, "10 s", "reacquiring_after_expiry_or_release_star").1, Some(2));
        assert!(release(A, "reacquiring_after_expiry_or_release_star"));
        assert_eq!(acquire(A, "10 s", "reacquiring_after_expiry_or_release_star").1, Some(3));
    }

    #[pg_test]
    fn refresh_never_takes_a_free_lease() {
        assert_eq!(refresh(A, "10 s", "never-taken"), (false, None, None));
        acquire(A, "10 s", "refresh_never_takes_a_free_lease");
        assert!(release(A, "refresh_never_takes_a_free_lease"));
        assert_eq!(refresh(A, "10 s", "refresh_never_takes_a_free_lease"), (false, None, Some(false)));
    }

    #[pg_test]
    fn release_frees_the_lease_at_once_and_keeps_the_row() {
        acquire(A, "1 hour", "release_frees_the_lease_at_once_and_keep");
        assert!(release(A, "release_frees_the_lease_at_once_and_keep"));
        assert!(!release(A, "release_frees_the_lease_at_once_and_keep"), "a second release finds nothing to release");
        assert_eq!(acquire(B, "10 s", "release_frees_the_lease_at_once_and_keep"), (true, Some(2), Some(true)));
        let rows = Spi::get_one::<i64>("SELECT count(*) FROM lease_lock.lease_status WHERE lease_name = 'release_frees_the_lease_at_once_and_keep'");
        assert_eq!(rows, Ok(Some(1)));
    }

    #[pg_test]
    fn leases_are_independent_by_name() {
        assert_eq!(acquire(A, "10 s", "x").1, Some(1));
        assert_eq!(acquire(B, "10 s", "y").1, Some(1));
        assert!(!acquire(B, "10 s", "x").0);
        assert!(!acquire(A, "10 s", "y").0);
    }

    #[pg_test]
    fn fence_accepts_only_the_current_unexpired_tenure() {
        let token = acquire(A, "10 s", "fence_accepts_only_the_current_unexpired").1.unwrap();
        Spi::run(&format!("SELECT lease_lock.lease_fence({token}, 'fence_accepts_only_the_current_unexpired')")).expect("current token passes");
        assert_sqlstate(&format!("SELECT lease_lock.lease_fence({}, 'fence_accepts_only_the_current_unexpired')", token + 1), "LL001");
        assert_sqlstate(&format!("SELECT lease_lock.lease_fence({}, 'fence_accepts_only_the_current_unexpired')", token - 1), "LL001");
        assert_sqlstate("SELECT lease_lock.lease_fence(1, 'never-taken')", "LL001");
        assert!(release(A, "fence_accepts_only_the_current_unexpired"));
        assert_sqlstate(&format!("SELECT lease_lock.lease_fence({token}, 'fence_accepts_only_the_current_unexpired')"), "LL001");
    }

    #[pg_test]
    fn fence_rejects_an_expired_tenure() {
        let token = acquire(A, "100 ms", "fence_rejects_an_expired_tenure").1.unwrap();
        sleep(0.2);
        assert_sqlstate(&format!("SELECT lease_lock.lease_fence({token}, 'fence_rejects_an_expired_tenure')"), "LL001");
    }

    #[pg_test]
    fn evict_ends_any_tenure() {
        acquire(A, "1 hour", "evict_ends_any_tenure");
        assert_eq!(Spi::get_one::<bool>("SELECT lease_lock.lease_evict('evict_ends_any_tenure')"), Ok(Some(true)));
        assert_eq!(Spi::get_one::<bool>("SELECT lease_lock.lease_evict('evict_ends_any_tenure')"), Ok(Some(false)));
        assert!(!refresh(A, "10 s", "evict_ends_any_tenure").0);
        assert_eq!(acquire(B, "10 s", "evict_ends_any_tenure").1, Some(2));
    }

    #[pg_test]
    fn lease_status_shows_holder_token_and_held() {
        acquire(A, "10 s", "lease_status_shows_holder_token_and_held");
        let row = Spi::get_three::<String, i64, bool>(
            "SELECT holder::text, fencing_token, held FROM lease_lock.lease_status WHERE lease_name = 'lease_status_shows_holder_token_and_held'",
        );
        assert_eq!(
            row,
            Ok((Some("00000000-0000-0000-0000-00000000000a".into()), Some(1), Some(true)))
        );
        let role = Spi::get_one::<bool>(
            "SELECT holder_role::text = current_user FROM lease_lock.lease_status WHERE lease_name = 'lease_status_shows_holder_token_and_held'",
        );
        assert_eq!(role, Ok(Some(true)));
        release(A, "lease_status_shows_holder_token_and_held");
        let held = Spi::get_two::<bool, bool>(
            "SELECT held, holder IS NULL FROM lease_lock.lease_status WHERE lease_name = 'lease_status_shows_holder_token_and_held'",
        );
        assert_eq!(held, Ok((Some(false), Some(true))));
    }

    #[pg_test]
    fn null_arguments_are_rejected_with_22004() {
        for sql in [
            "SELECT * FROM lease_lock.lease_acquire(NULL, interval '1 s', 'null_arguments_are_rejected_with_22004')".to_string(),
            format!("SELECT * FROM lease_lock.lease_acquire({A}, NULL, 'null_arguments_are_rejected_with_22004')"),
            format!("SELECT * FROM lease_lock.lease_acquire({A}, interval '1 s', NULL)"),
            "SELECT * FROM lease_lock.lease_refresh(NULL, interval '1 s', 'null_arguments_are_rejected_with_22004')".to_string(),
            format!("SELECT * FROM lease_lock.lease_refresh({A}, NULL, 'null_arguments_are_rejected_with_22004')"),
            format!("SELECT * FROM lease_lock.lease_refresh({A}, interval '1 s', NULL)"),
            "SELECT lease_lock.lease_release(NULL, 'null_arguments_are_rejected_with_22004')".to_string(),
            format!("SELECT lease_lock.lease_release({A}, NULL)"),
            "SELECT lease_lock.lease_fence(NULL, 'null_arguments_are_rejected_with_22004')".to_string(),
            "SELECT lease_lock.lease_fence(1, NULL)".to_string(),
            "SELECT lease_lock.lease_evict(NULL)".to_string(),
        ] {
            assert_sqlstate(&sql, "22004");
        }
    }

    #[pg_test]
    fn bad_durations_are_rejected_with_22023() {
        for duration in ["0", "-1 s", "1 mon", "1 year", "1 day 1 second", "100 years", "1 mon -30 days"] {
            assert_sqlstate(
                &format!("SELECT * FROM lease_lock.lease_acquire({A}, interval '{duration}', 'bad_durations_are_rejected_with_22023')"),
                "22023",
            );
            assert_sqlstate(
                &format!("SELECT * FROM lease_lock.lease_refresh({A}, interval '{duration}', 'bad_durations_are_rejected_with_22023')"),
                "22023",
            );
        }
        // The longest allowed: one day, spelled in days or in hours.
        assert!(acquire(A, "1 day", "bad_durations_are_rejected_with_22023").0);
        assert!(acquire(A, "24 hours", "bad_durations_are_rejected_with_22023").0);
    }

    #[pg_test]
    fn bad_lease_names_are_rejected_with_22023() {
        let long = "x".repeat(256);
        for name in ["", long.as_str()] {
            assert_sqlstate(&format!("SELECT * FROM lease_lock.lease_acquire({A}, interval '1 s', '{name}')"), "22023");
            assert_sqlstate(&format!("SELECT lease_lock.lease_release({A}, '{name}')"), "22023");
            assert_sqlstate(&format!("SELECT lease_lock.lease_fence(1, '{name}')"), "22023");
        }
        assert!(acquire(A, "1 s", &"x".repeat(255)).0);
        assert!(acquire(A, "1 s", "ünïcödé lease/name with spaces").0);
    }

    #[pg_test]
    fn bad_input_changes_nothing() {
        acquire(A, "10 s", "bad_input_changes_nothing");
        assert_sqlstate(&format!("SELECT * FROM lease_lock.lease_acquire({A}, interval '-1 s', 'bad_input_changes_nothing')"), "22023");
        assert_sqlstate(&format!("SELECT * FROM lease_lock.lease_refresh({A}, interval '1 mon', 'bad_input_changes_nothing')"), "22023");
        let row = Spi::get_two::<i64, bool>("SELECT fencing_token, held FROM lease_lock.lease_status WHERE lease_name = 'bad_input_changes_nothing'");
        assert_eq!(row, Ok((Some(1), Some(true))));
    }

    /// Roles for the privilege tests, created inside the test's transaction (rolled back after).
    fn create_roles() {
        Spi::run(
            "CREATE ROLE lease_alice; CREATE ROLE lease_bob; CREATE ROLE lease_mallory;
             GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text),
                 lease_lock.lease_refresh(uuid, interval, text), lease_lock.lease_release(uuid, text),
                 lease_lock.lease_fence(bigint, text) TO lease_alice, lease_bob",
        )
        .expect("roles created");
    }

    fn as_role(role: &str, sql: &str) -> Option<String> {
        install_sqlstate_of();
        Spi::run(&format!("SET LOCAL ROLE {role}")).expect("set role");
        let state = sqlstate_of(sql);
        Spi::run("RESET ROLE").expect("reset role");
        state
    }

    #[pg_test]
    fn another_role_cannot_use_a_holders_id() {
        create_roles();
        assert_eq!(as_role("lease_alice", &format!("SELECT * FROM lease_lock.lease_acquire({A}, interval '10 s', 'another_role_cannot_use_a_holders_id')")), None);
        for sql in [
            format!("SELECT * FROM lease_lock.lease_refresh({A}, interval '10 s', 'another_role_cannot_use_a_holders_id')"),
            format!("SELECT * FROM lease_lock.lease_acquire({A}, interval '10 s', 'another_role_cannot_use_a_holders_id')"),
            format!("SELECT lease_lock.lease_release({A}, 'another_role_cannot_use_a_holders_id')"),
        ] {
            assert_eq!(as_role("lease_bob", &sql).as_deref(), Some("42501"), "{sql}");
        }
        // Alice still holds it, with the same token.
        assert_eq!(as_role("lease_alice", &format!("SELECT * FROM lease_lock.lease_refresh({A}, interval '10 s', 'another_role_cannot_use_a_holders_id')")), None);
        let row = Spi::get_two::<i64, String>(
            "SELECT fencing_token, holder_role::text FROM lease_lock.lease_status WHERE lease_name = 'another_role_cannot_use_a_holders_id'",
        );
        assert_eq!(row, Ok((Some(1), Some("lease_alice".into()))));
    }

    #[pg_test]
    fn roles_without_grants_cannot_call_or_write_the_table() {
        create_roles();
        assert_eq!(
            as_role("lease_mallory", &format!("SELECT * FROM lease_lock.lease_acquire({A}, interval '10 s', 'roles_without_grants_cannot_call_or_writ')")).as_deref(),
            Some("42501")
        );
        assert_eq!(as_role("lease_mallory", "SELECT lease_lock.lease_evict('roles_without_grants_cannot_call_or_writ')").as_deref(), Some("42501"));
        assert_eq!(as_role("lease_alice", "SELECT lease_lock.lease_evict('roles_without_grants_cannot_call_or_writ')").as_deref(), Some("42501"));
        for sql in [
            "UPDATE lease_lock.leases SET expires_at = now()",
            "DELETE FROM lease_lock.leases",
            "INSERT INTO lease_lock.leases VALUES ('x', 1, NULL, NULL, now(), now(), now())",
            "SELECT * FROM lease_lock.leases",
        ] {
            assert_eq!(as_role("lease_alice", sql).as_deref(), Some("42501"), "{sql}");
        }
        assert_eq!(as_role("lease_mallory", "SELECT count(*) FROM lease_lock.lease_status"), None);
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
            "UPDATE lease_lock.leases SET timeline = timeline - 1, expires_at = clock_timestamp() - interval '1 s',
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
