-- lease_lock, portable edition: the lease API in SQL and PL/pgSQL only, for PostgreSQL where no C
-- extension can be installed (RDS, Aurora, Cloud SQL, Azure, Supabase, Neon, ...).
--
-- This file is the one source of the edition. scripts/portable.sh generates from it
--   - portable/dist/lease_lock_portable.sql: `psql -v schema=NAME -f` installs it into schema NAME
--     (default lease_lock), run by a role that owns that schema (no superuser needed);
--   - portable/dist/lease_lock_pgtle.sql: a pg_tle package, so `CREATE EXTENSION lease_lock`
--     works where pg_tle is available.
-- @extschema@ stands for the schema; nothing else is substituted.
--
-- Same functions, signatures, results, SQLSTATEs, view and notifications as the C edition
-- (extension/src/protocol.rs explains the protocol; the statements below are its statements).
-- Where SQL cannot do what the C code does, this edition does something safe instead; README,
-- "Which edition?", lists each difference:
--   - a tenure is bound to the caller's role as seen from a SECURITY DEFINER function: the role
--     set with SET ROLE, else the session user (the C edition: current_user);
--   - the start of a timeline (for the failover hold) is when this edition first saw the
--     server on it, recorded in @extschema@.timelines, not the history file's time: later,
--     so the hold only gets longer;
--   - lease_fence in REPEATABLE READ or SERIALIZABLE reads the transaction's snapshot: a tenure
--     that changed after it gives 40001 (retry), where the C edition gives LL001, and the fence
--     takes FOR SHARE, so the holder's renewals wait for such a fenced transaction to end;
--   - while the first transaction that sees a new timeline has not committed, other callers
--     take "now" as the start of the failover hold (later than the promotion: a longer hold);
--   - lease_lock.max_lease_names is the column max_lease_names of @extschema@.settings, which
--     only the owner may change; the parameter of that name may only lower it for a session;
--   - plans follow the table's statistics (the C edition plans index scans whatever they say):
--     a table that grew a lot since its last ANALYZE may be scanned until autovacuum analyses it.
--
-- Security without C: the lease functions are SECURITY DEFINER (the tables are private to the
-- owner) with search_path pinned to pg_catalog, pg_temp; and every table, function, type and
-- operator is spelled with its schema besides, so that neither a caller's search_path nor
-- pg_temp can change what they call. What the SET clause costs was within the noise of
-- scripts/bench-editions.sh on 15 to 18: renewals per second with it were 9% higher to 7% lower
-- than without it, with no consistent sign.

-- One row per lease name, never deleted (see the C edition's extension/src/lib.rs).
CREATE TABLE @extschema@.leases (
    lease_name      pg_catalog.text        PRIMARY KEY,
    fencing_token   pg_catalog.int8        NOT NULL,
    holder          pg_catalog.uuid,
    holder_role     pg_catalog.regrole,
    acquired_at     pg_catalog.timestamptz NOT NULL,
    renewed_at      pg_catalog.timestamptz NOT NULL,
    expires_at      pg_catalog.timestamptz NOT NULL,
    timeline        pg_catalog.int4        NOT NULL,
    max_duration_us pg_catalog.int8        NOT NULL,
    CONSTRAINT leases_tenure_key UNIQUE (lease_name, fencing_token)
) WITH (fillfactor = 50);
COMMENT ON TABLE @extschema@.leases IS 'lease_lock: one row per lease name; write it only through the lease_* functions';

-- When this edition first saw the server on each WAL timeline: the start of the failover hold.
CREATE TABLE @extschema@.timelines (
    timeline   pg_catalog.int4        PRIMARY KEY,
    first_seen pg_catalog.timestamptz NOT NULL
);
COMMENT ON TABLE @extschema@.timelines IS 'lease_lock: when each WAL timeline was first seen (start of the failover hold)';

-- Settings only the owner may change (a GUC could be set by any caller).
CREATE TABLE @extschema@.settings (
    only_row        pg_catalog.bool PRIMARY KEY DEFAULT true CHECK (only_row),
    max_lease_names pg_catalog.int8 NOT NULL DEFAULT 1000000
);
INSERT INTO @extschema@.settings DEFAULT VALUES;
COMMENT ON TABLE @extschema@.settings IS 'lease_lock: max_lease_names (0: no bound)';

-- The server's current WAL timeline, as the first 8 hex digits of the current WAL file's name
-- (no superuser rights needed). Only on a primary: callers check pg_is_in_recovery() first.
CREATE FUNCTION @extschema@.current_timeline() RETURNS pg_catalog.int4
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT pg_catalog.int4(('x' OPERATOR(pg_catalog.||)
    pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::pg_catalog.bit(32))
$$;

-- The start of the failover hold on timeline t: when this edition first saw it, recorded by the
-- first transaction that looked. Never waits: while another transaction is recording it (and has
-- not committed), the answer is now, which is later than the promotion and so only makes the
-- hold longer (and keeps lease_refresh from continuing an old tenure). The advisory lock, keyed
-- by the table's OID and the timeline, lets only one transaction insert; the others do not wait
-- on its uncommitted row.
CREATE FUNCTION @extschema@.timeline_start(t pg_catalog.int4) RETURNS pg_catalog.timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    seen pg_catalog.timestamptz;
BEGIN
    SELECT first_seen INTO seen FROM @extschema@.timelines WHERE timeline OPERATOR(pg_catalog.=) t;
    IF seen IS NOT NULL THEN
        RETURN seen;
    END IF;
    seen := pg_catalog.clock_timestamp();
    IF pg_catalog.pg_try_advisory_xact_lock('@extschema@.timelines'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, t) THEN
        INSERT INTO @extschema@.timelines VALUES (t, seen) ON CONFLICT DO NOTHING;
    END IF;
    RETURN seen;
END
$$;

-- caller_role() found no role of this session (SET ROLE's role renamed meanwhile).
CREATE FUNCTION @extschema@.no_caller_role() RETURNS pg_catalog.regrole
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the role set with SET ROLE (%) is no longer a role of this session', pg_catalog.current_setting('role')
        USING ERRCODE = '42501', HINT = 'SET ROLE again, or RESET ROLE.';
END
$$;

-- The role a tenure is bound to: SET ROLE's, else the session user's.
-- The setting 'role' keeps the name SET ROLE was given: if that role has since been renamed,
-- the name finds no role, or another one; a tenure is then bound to nobody (42501), never to a
-- NULL role or to a role the session is not a member of.
CREATE FUNCTION @extschema@.caller_role() RETURNS pg_catalog.regrole
LANGUAGE sql STABLE AS $$
SELECT coalesce(
    CASE WHEN pg_catalog.pg_has_role(SESSION_USER, r::pg_catalog.oid, 'MEMBER') THEN r END,
    @extschema@.no_caller_role())
FROM (SELECT pg_catalog.to_regrole(pg_catalog.quote_ident(
        CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none'
             THEN SESSION_USER ELSE pg_catalog.current_setting('role') END)) AS r) named
$$;

-- Argument checks shared by the functions: 22004 and 22023 with the C edition's messages.
CREATE FUNCTION @extschema@.check_args(
    holder pg_catalog.uuid, holder_needed pg_catalog.bool,
    lease_duration pg_catalog.interval, duration_needed pg_catalog.bool,
    lease_name pg_catalog.text)
RETURNS pg_catalog.int8 LANGUAGE plpgsql AS $$
DECLARE
    micros pg_catalog.numeric;
    bytes pg_catalog.int4;
BEGIN
    IF holder_needed AND holder IS NULL THEN
        RAISE EXCEPTION 'holder must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF duration_needed THEN
        IF lease_duration IS NULL THEN
            RAISE EXCEPTION 'lease_duration must not be NULL' USING ERRCODE = '22004';
        END IF;
        IF pg_catalog.date_part('month', lease_duration) OPERATOR(pg_catalog.<>) 0
           OR pg_catalog.date_part('year', lease_duration) OPERATOR(pg_catalog.<>) 0 THEN
            RAISE EXCEPTION 'lease_duration must not contain months or years' USING ERRCODE = '22023',
                HINT = 'Use days, hours, minutes or seconds: a month has no fixed length.';
        END IF;
        -- Days count as 24 hours.
        micros := pg_catalog.extract('epoch', lease_duration) OPERATOR(pg_catalog.*) 1000000;
        IF micros OPERATOR(pg_catalog.<=) 0 THEN
            RAISE EXCEPTION 'lease_duration must be positive' USING ERRCODE = '22023';
        END IF;
        IF micros OPERATOR(pg_catalog.>) 86400000000 THEN
            RAISE EXCEPTION 'lease_duration must be at most 1 day' USING ERRCODE = '22023';
        END IF;
    END IF;
    IF lease_name IS NULL THEN
        RAISE EXCEPTION 'lease_name must not be NULL' USING ERRCODE = '22004';
    END IF;
    bytes := pg_catalog.octet_length(lease_name);
    IF bytes OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION 'lease_name must not be empty' USING ERRCODE = '22023';
    END IF;
    IF bytes OPERATOR(pg_catalog.>) 255 THEN
        RAISE EXCEPTION 'lease_name must be at most 255 bytes, not %', bytes USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE EXCEPTION 'leases cannot be taken on a standby server' USING ERRCODE = '25006',
            HINT = 'Connect to the primary (libpq: target_session_attrs=read-write).';
    END IF;
    RETURN micros::pg_catalog.int8;
END
$$;

-- A holder id acts only for the role that took the tenure: 42501 for anyone else presenting it.
CREATE FUNCTION @extschema@.refuse_other_role(
    row_holder pg_catalog.uuid, row_role pg_catalog.regrole, row_expires pg_catalog.timestamptz,
    row_timeline pg_catalog.int4, holder pg_catalog.uuid, role pg_catalog.regrole,
    now pg_catalog.timestamptz, timeline pg_catalog.int4, lease_name pg_catalog.text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (row_expires OPERATOR(pg_catalog.>) now OR row_timeline OPERATOR(pg_catalog.<>) timeline)
       AND row_holder OPERATOR(pg_catalog.=) holder
       AND row_role IS DISTINCT FROM role THEN
        RAISE EXCEPTION 'lease "%" is held by this holder id under another role', lease_name
            USING ERRCODE = '42501',
                  DETAIL = pg_catalog.format('The tenure was taken by role %s; a holder id only acts for the role that took it.',
                                             coalesce(row_role::pg_catalog.text, '(none)'));
    END IF;
END
$$;

-- Bounds the lock waits of one call by lease_lock.lock_timeout (default 1000 ms; 0: no bound),
-- unless the session's own lock_timeout is already at or below it: the same rule as the C
-- edition. Returns the session's setting to put back at the end of the call (with
-- set_config(..., true), which an error also undoes with the (sub)transaction), or NULL when
-- nothing was changed (the Rust client sets lock_timeout for its session: no cost then).
CREATE FUNCTION @extschema@.bound_lock_waits() RETURNS pg_catalog.text
LANGUAGE plpgsql AS $$
DECLARE
    setting pg_catalog.text := pg_catalog.current_setting('lease_lock.lock_timeout', true);
    bound_ms pg_catalog.numeric;
    session pg_catalog.text := pg_catalog.current_setting('lock_timeout');
    session_ms pg_catalog.numeric;
BEGIN
    IF setting IS NULL OR setting OPERATOR(pg_catalog.=) '' THEN
        bound_ms := 1000;
    ELSIF setting OPERATOR(pg_catalog.~) '^\s*[0-9]{1,10}\s*$' THEN
        bound_ms := setting::pg_catalog.numeric;          -- milliseconds, like the C GUC
    ELSIF setting OPERATOR(pg_catalog.~) '^\s*[0-9]{1,10}(\.[0-9]+)?\s*(us|ms|s|min|h|d)\s*$' THEN
        bound_ms := pg_catalog.extract('epoch', setting::pg_catalog.interval) OPERATOR(pg_catalog.*) 1000;
    ELSE
        bound_ms := -1;
    END IF;
    -- The C parameter's range: 0 to INT_MAX milliseconds. Anyone may set a placeholder
    -- parameter to anything, so a bad value is reported here, by its name.
    IF bound_ms OPERATOR(pg_catalog.<) 0 OR bound_ms OPERATOR(pg_catalog.>) 2147483647 THEN
        RAISE EXCEPTION 'invalid value for parameter "lease_lock.lock_timeout": "%"', setting USING ERRCODE = '22023',
            HINT = 'Milliseconds from 0 to 2147483647, or a number with a unit (ms, s, min, h, d).';
    END IF;
    IF bound_ms OPERATOR(pg_catalog.<=) 0 THEN
        RETURN NULL;
    END IF;
    session_ms := CASE WHEN session OPERATOR(pg_catalog.~) '^[0-9]+$' THEN session::pg_catalog.numeric
                       ELSE pg_catalog.extract('epoch', session::pg_catalog.interval) OPERATOR(pg_catalog.*) 1000 END;
    IF session_ms OPERATOR(pg_catalog.>) 0 AND session_ms OPERATOR(pg_catalog.<=) bound_ms THEN
        RETURN NULL;
    END IF;
    PERFORM pg_catalog.set_config('lock_timeout', pg_catalog.ceil(bound_ms)::pg_catalog.text, true);
    RETURN session;
END
$$;

-- A session's lease_lock.max_lease_names that is not a count (it may only lower the owner's).
CREATE FUNCTION @extschema@.invalid_max_lease_names(setting pg_catalog.text) RETURNS pg_catalog.int8
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invalid value for parameter "lease_lock.max_lease_names": "%"', setting USING ERRCODE = '22023',
        HINT = 'A count of lease names; it can only lower the bound in lease_lock.settings.';
END
$$;

-- When a new tenure may start, if not now (NULL): see busy_until in protocol.rs.
CREATE FUNCTION @extschema@.busy_until(
    has_row pg_catalog.bool, row_holder pg_catalog.uuid, row_expires pg_catalog.timestamptz,
    row_timeline pg_catalog.int4, row_max_duration_us pg_catalog.int8,
    now pg_catalog.timestamptz, timeline pg_catalog.int4, duration_us pg_catalog.int8)
RETURNS pg_catalog.timestamptz LANGUAGE plpgsql AS $$
DECLARE
    until pg_catalog.timestamptz;
BEGIN
    IF has_row AND row_timeline OPERATOR(pg_catalog.=) timeline THEN
        until := CASE WHEN row_holder IS NULL THEN NULL ELSE row_expires END;
    ELSIF has_row THEN
        until := GREATEST(row_expires, @extschema@.timeline_start(timeline)
            OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => GREATEST(row_max_duration_us, duration_us)
                                                              OPERATOR(pg_catalog./) 1000000.0));
    ELSIF timeline OPERATOR(pg_catalog.>) 1 THEN
        until := @extschema@.timeline_start(timeline)
            OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => duration_us OPERATOR(pg_catalog./) 1000000.0);
    END IF;
    IF until OPERATOR(pg_catalog.>) now THEN
        RETURN until;
    END IF;
    RETURN NULL;
END
$$;

-- Tells watchers that a lease's tenure changed: NOTIFY lease_lock_events (at commit) with
-- {"event", "lease_name", "fencing_token", "holder_role"}; see the README's SQL API. Never on
-- a renewal.
CREATE FUNCTION @extschema@.notify_event(
    event pg_catalog.text, lease_name pg_catalog.text, fencing_token pg_catalog.int8, role pg_catalog.regrole)
RETURNS void LANGUAGE sql AS $$
    SELECT pg_catalog.pg_notify('lease_lock_events', pg_catalog.json_build_object(
        'event', event, 'lease_name', lease_name, 'fencing_token', fencing_token,
        'holder_role', role::pg_catalog.text)::pg_catalog.text)
$$;

CREATE FUNCTION @extschema@.lease_acquire(
    holder pg_catalog.uuid, lease_duration pg_catalog.interval, lease_name pg_catalog.text DEFAULT 'default',
    OUT acquired pg_catalog.bool, OUT fencing_token pg_catalog.int8, OUT expires_at pg_catalog.timestamptz)
RETURNS record LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    duration_us pg_catalog.int8 := @extschema@.check_args(holder, true, lease_duration, true, lease_name);
    now pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    until pg_catalog.timestamptz := now OPERATOR(pg_catalog.+) lease_duration;
    role pg_catalog.regrole := @extschema@.caller_role();
    tl pg_catalog.int4 := @extschema@.current_timeline();
    st record;
    has_row pg_catalog.bool;
    locked record;
    busy pg_catalog.timestamptz;
    names pg_catalog.int8;
    limit_names pg_catalog.int8;
    saved pg_catalog.text := @extschema@.bound_lock_waits();
BEGIN
    <<body>>
    BEGIN
    -- The holder renews its own unexpired tenure of this timeline.
    UPDATE @extschema@.leases l SET renewed_at = now, expires_at = until,
           max_duration_us = GREATEST(l.max_duration_us, duration_us)
    WHERE l.lease_name OPERATOR(pg_catalog.=) lease_acquire.lease_name
      AND l.holder OPERATOR(pg_catalog.=) lease_acquire.holder AND l.holder_role OPERATOR(pg_catalog.=) role
      AND l.expires_at OPERATOR(pg_catalog.>) now AND l.timeline OPERATOR(pg_catalog.=) tl
    RETURNING true, l.fencing_token, l.expires_at INTO acquired, fencing_token, expires_at;
    IF FOUND THEN
        EXIT body;
    END IF;

    SELECT l.fencing_token, l.holder, l.holder_role, l.expires_at, l.timeline, l.max_duration_us INTO st
    FROM @extschema@.leases l WHERE l.lease_name OPERATOR(pg_catalog.=) lease_acquire.lease_name;
    has_row := FOUND;
    busy := @extschema@.busy_until(has_row, st.holder, st.expires_at, st.timeline, st.max_duration_us, now, tl, duration_us);
    IF busy IS NOT NULL THEN
        IF has_row THEN
            PERFORM @extschema@.refuse_other_role(st.holder, st.holder_role, st.expires_at, st.timeline,
                                                  holder, role, now, tl, lease_name);
        END IF;
        acquired := false;
        expires_at := busy;
        EXIT body;
    END IF;

    IF NOT has_row THEN
        -- The first tenure of a new name. No conflict target: a concurrent first acquire of the
        -- same name makes this insert nothing instead of failing with 23505.
        INSERT INTO @extschema@.leases AS l (lease_name, fencing_token, holder, holder_role, acquired_at,
                renewed_at, expires_at, timeline, max_duration_us)
        VALUES (lease_name, GREATEST(1, (tl OPERATOR(pg_catalog.-) 1)::pg_catalog.int8 OPERATOR(pg_catalog.<<) 40),
                holder, role, now, now, until, tl, duration_us)
        ON CONFLICT DO NOTHING
        RETURNING true, l.fencing_token, l.expires_at INTO acquired, fencing_token, expires_at;
        IF NOT FOUND THEN
            acquired := false;
            SELECT l.expires_at INTO expires_at FROM @extschema@.leases l
            WHERE l.lease_name OPERATOR(pg_catalog.=) lease_acquire.lease_name;
            EXIT body;
        END IF;
        PERFORM @extschema@.notify_event('acquired', lease_name, fencing_token, role);
        -- The owner's bound, or a session's lower one (SET lease_lock.max_lease_names): any
        -- role may set that parameter here, so it may only lower the bound (0 is no bound).
        SELECT CASE WHEN g.v IS NULL OR g.v OPERATOR(pg_catalog.<=) 0 THEN s.max_lease_names
                    WHEN s.max_lease_names OPERATOR(pg_catalog.=) 0 THEN g.v
                    ELSE LEAST(s.max_lease_names, g.v) END
        INTO limit_names
        FROM @extschema@.settings s,
             (SELECT CASE WHEN c IS NULL OR c OPERATOR(pg_catalog.=) '' THEN NULL
                          WHEN c OPERATOR(pg_catalog.~) '^\s*[0-9]{1,18}\s*$' THEN c::pg_catalog.int8
                          ELSE @extschema@.invalid_max_lease_names(c) END AS v
              FROM pg_catalog.current_setting('lease_lock.max_lease_names', true) c) g;
        -- The statistics' estimate first (no lock, no scan); an exact count only near the bound.
        -- OPERATOR(...) has one precedence for all operators: hence the parentheses.
        IF limit_names OPERATOR(pg_catalog.>) 0 AND
           (pg_catalog.pg_stat_get_live_tuples('@extschema@.leases'::pg_catalog.regclass)
            OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_inserted('@extschema@.leases'::pg_catalog.regclass))
           OPERATOR(pg_catalog.>=) (limit_names OPERATOR(pg_catalog./) 2) THEN
            SELECT pg_catalog.count(*) INTO names FROM @extschema@.leases;
            IF names OPERATOR(pg_catalog.>) limit_names THEN
                RAISE EXCEPTION 'too many lease names: lease "%" would be name % of at most %', lease_name, names, limit_names
                    USING ERRCODE = '53400',
                          HINT = 'Reuse lease names, or ask an administrator to raise lease_lock.max_lease_names.';
            END IF;
        END IF;
        EXIT body;
    END IF;

    -- Free, expired or released: lock it without waiting, in a subtransaction (the exception
    -- block) so that a refused caller keeps no lock.
    BEGIN
        SELECT l.fencing_token, l.holder, l.holder_role, l.expires_at, l.timeline, l.max_duration_us INTO locked
        FROM @extschema@.leases l WHERE l.lease_name OPERATOR(pg_catalog.=) lease_acquire.lease_name
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            -- Locked by a fenced transaction of the last tenure, or by another taker.
            acquired := false;
            expires_at := st.expires_at;
            EXIT body;
        END IF;
        busy := @extschema@.busy_until(true, locked.holder, locked.expires_at, locked.timeline, locked.max_duration_us,
                                       now, tl, duration_us);
        IF busy IS NOT NULL THEN
            -- Taken between our read and our lock: give the lock back.
            RAISE EXCEPTION USING ERRCODE = 'LLR01';
        END IF;
        UPDATE @extschema@.leases l
        SET fencing_token = GREATEST(l.fencing_token OPERATOR(pg_catalog.+) 1,
                                                (tl OPERATOR(pg_catalog.-) 1)::pg_catalog.int8 OPERATOR(pg_catalog.<<) 40),
            holder = lease_acquire.holder, holder_role = role, acquired_at = now, renewed_at = now,
            expires_at = until, timeline = tl, max_duration_us = GREATEST(l.max_duration_us, duration_us)
        WHERE l.lease_name OPERATOR(pg_catalog.=) lease_acquire.lease_name
        RETURNING true, l.fencing_token, l.expires_at INTO acquired, fencing_token, expires_at;
        PERFORM @extschema@.notify_event('acquired', lease_name, fencing_token, role);
    EXCEPTION WHEN SQLSTATE 'LLR01' THEN
        PERFORM @extschema@.refuse_other_role(locked.holder, locked.holder_role, locked.expires_at, locked.timeline,
                                              holder, role, now, tl, lease_name);
        acquired := false;
        fencing_token := NULL;
        expires_at := busy;
    END;
    END body;
    -- Put the session's lock_timeout back (bound_lock_waits).
    IF saved IS NOT NULL THEN
        PERFORM pg_catalog.set_config('lock_timeout', saved, true);
    END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.lease_acquire(pg_catalog.uuid, pg_catalog.interval, pg_catalog.text) IS
    'Take the lease if it is free, expired or released (new token), or renew it if holder holds it';

CREATE FUNCTION @extschema@.lease_refresh(
    holder pg_catalog.uuid, lease_duration pg_catalog.interval, lease_name pg_catalog.text DEFAULT 'default',
    OUT acquired pg_catalog.bool, OUT fencing_token pg_catalog.int8, OUT expires_at pg_catalog.timestamptz)
RETURNS record LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    duration_us pg_catalog.int8 := @extschema@.check_args(holder, true, lease_duration, true, lease_name);
    now pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    role pg_catalog.regrole := @extschema@.caller_role();
    tl pg_catalog.int4 := @extschema@.current_timeline();
    st record;
    saved pg_catalog.text := @extschema@.bound_lock_waits();
BEGIN
    <<body>>
    BEGIN
    -- The holder's unexpired tenure of this timeline (the hot path: one UPDATE).
    UPDATE @extschema@.leases l
    SET renewed_at = now, expires_at = now OPERATOR(pg_catalog.+) lease_duration,
        max_duration_us = GREATEST(l.max_duration_us, duration_us)
    WHERE l.lease_name OPERATOR(pg_catalog.=) lease_refresh.lease_name
      AND l.holder OPERATOR(pg_catalog.=) lease_refresh.holder AND l.holder_role OPERATOR(pg_catalog.=) role
      AND l.expires_at OPERATOR(pg_catalog.>) now AND l.timeline OPERATOR(pg_catalog.=) tl
    RETURNING true, l.fencing_token, l.expires_at INTO acquired, fencing_token, expires_at;
    IF FOUND THEN
        EXIT body;
    END IF;
    -- A tenure from another timeline, unexpired or with a replicated expiry after the
    -- promotion: renewing it here re-arms it on this timeline (and tells watchers).
    UPDATE @extschema@.leases l
    SET renewed_at = now, expires_at = now OPERATOR(pg_catalog.+) lease_duration, timeline = tl,
        max_duration_us = GREATEST(l.max_duration_us, duration_us)
    WHERE l.lease_name OPERATOR(pg_catalog.=) lease_refresh.lease_name
      AND l.holder OPERATOR(pg_catalog.=) lease_refresh.holder AND l.holder_role OPERATOR(pg_catalog.=) role
      AND l.timeline OPERATOR(pg_catalog.<>) tl
      AND (l.expires_at OPERATOR(pg_catalog.>) now
           OR l.expires_at OPERATOR(pg_catalog.>) @extschema@.timeline_start(tl))
    RETURNING true, l.fencing_token, l.expires_at INTO acquired, fencing_token, expires_at;
    IF FOUND THEN
        PERFORM @extschema@.notify_event('rearmed', lease_name, fencing_token, role);
        EXIT body;
    END IF;
    SELECT l.fencing_token, l.holder, l.holder_role, l.expires_at, l.timeline, l.max_duration_us INTO st
    FROM @extschema@.leases l WHERE l.lease_name OPERATOR(pg_catalog.=) lease_refresh.lease_name;
    acquired := false;
    IF NOT FOUND THEN
        EXIT body;
    END IF;
    PERFORM @extschema@.refuse_other_role(st.holder, st.holder_role, st.expires_at, st.timeline,
                                          holder, role, now, tl, lease_name);
    expires_at := coalesce(@extschema@.busy_until(true, st.holder, st.expires_at, st.timeline, st.max_duration_us,
                                                  now, tl, duration_us), st.expires_at);
    END body;
    -- Put the session's lock_timeout back (bound_lock_waits).
    IF saved IS NOT NULL THEN
        PERFORM pg_catalog.set_config('lock_timeout', saved, true);
    END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.lease_refresh(pg_catalog.uuid, pg_catalog.interval, pg_catalog.text) IS
    'Extend the lease holder holds; never takes a free or expired lease';

-- lease_refresh of each name, in one statement (one transaction, one WAL flush at commit).
-- The same checks and messages as the C edition's.
CREATE FUNCTION @extschema@.lease_refresh_many(
    holder pg_catalog.uuid, lease_duration pg_catalog.interval, lease_names pg_catalog.text[])
RETURNS TABLE (lease_name pg_catalog.text, acquired pg_catalog.bool, fencing_token pg_catalog.int8,
               expires_at pg_catalog.timestamptz)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER ROWS 100
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n pg_catalog.text;
BEGIN
    PERFORM @extschema@.check_args(holder, true, lease_duration, true, 'checked below');
    IF lease_names IS NULL THEN
        RAISE EXCEPTION 'lease_names must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.array_ndims(lease_names) OPERATOR(pg_catalog.>) 1 THEN
        RAISE EXCEPTION 'lease_names must be a one-dimensional array' USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.cardinality(lease_names) OPERATOR(pg_catalog.>) 100000 THEN
        RAISE EXCEPTION 'lease_names must have at most 100000 names, not %', pg_catalog.cardinality(lease_names)
            USING ERRCODE = '22023', HINT = 'Renew in several calls.';
    END IF;
    IF pg_catalog.array_position(lease_names, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'an element of lease_names must not be NULL' USING ERRCODE = '22004';
    END IF;
    FOREACH n IN ARRAY lease_names LOOP
        PERFORM @extschema@.check_args(holder, true, lease_duration, true, n);
    END LOOP;
    -- A name twice would renew one row twice in one transaction (quadratic in the repeats).
    IF (SELECT pg_catalog.count(DISTINCT u.x) FROM pg_catalog.unnest(lease_names) AS u(x))
       OPERATOR(pg_catalog.<>) pg_catalog.cardinality(lease_names) THEN
        RAISE EXCEPTION 'lease_names must not name a lease twice' USING ERRCODE = '22023';
    END IF;
    FOREACH n IN ARRAY lease_names LOOP
        SELECT r.acquired, r.fencing_token, r.expires_at INTO acquired, fencing_token, expires_at
        FROM @extschema@.lease_refresh(holder, lease_duration, n) r;
        lease_name := n;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.lease_refresh_many(pg_catalog.uuid, pg_catalog.interval, pg_catalog.text[]) IS
    'lease_refresh of each name in lease_names, in one statement: a row per name, in order';

CREATE FUNCTION @extschema@.lease_release(holder pg_catalog.uuid, lease_name pg_catalog.text DEFAULT 'default')
RETURNS pg_catalog.bool LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unused pg_catalog.int8 := @extschema@.check_args(holder, true, NULL, false, lease_name);
    now pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    role pg_catalog.regrole := @extschema@.caller_role();
    tl pg_catalog.int4 := @extschema@.current_timeline();
    st record;
    saved pg_catalog.text := @extschema@.bound_lock_waits();
    released pg_catalog.bool := false;
    token pg_catalog.int8;
BEGIN
    <<body>>
    BEGIN
    UPDATE @extschema@.leases l SET holder = NULL, holder_role = NULL, expires_at = now
    WHERE l.lease_name OPERATOR(pg_catalog.=) lease_release.lease_name
      AND l.holder OPERATOR(pg_catalog.=) lease_release.holder AND l.holder_role OPERATOR(pg_catalog.=) role
      AND (l.expires_at OPERATOR(pg_catalog.>) now OR l.timeline OPERATOR(pg_catalog.<>) tl)
    RETURNING l.fencing_token INTO token;
    IF FOUND THEN
        PERFORM pg_catalog.pg_notify('lease_lock_released', lease_name);
        PERFORM @extschema@.notify_event('released', lease_name, token, role);
        released := true;
        EXIT body;
    END IF;
    SELECT l.holder, l.holder_role, l.expires_at, l.timeline INTO st
    FROM @extschema@.leases l WHERE l.lease_name OPERATOR(pg_catalog.=) lease_release.lease_name;
    IF FOUND THEN
        PERFORM @extschema@.refuse_other_role(st.holder, st.holder_role, st.expires_at, st.timeline,
                                              holder, role, now, tl, lease_name);
    END IF;
    END body;
    -- Put the session's lock_timeout back (bound_lock_waits).
    IF saved IS NOT NULL THEN
        PERFORM pg_catalog.set_config('lock_timeout', saved, true);
    END IF;
    RETURN released;
END
$$;
COMMENT ON FUNCTION @extschema@.lease_release(pg_catalog.uuid, pg_catalog.text) IS
    'Free the lease holder holds and NOTIFY lease_lock_released with the lease name';

CREATE FUNCTION @extschema@.lease_fence(fencing_token pg_catalog.int8, lease_name pg_catalog.text DEFAULT 'default')
RETURNS void LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unused pg_catalog.int8;
    role pg_catalog.regrole := @extschema@.caller_role();
    st record;
    message pg_catalog.text;
    saved pg_catalog.text := @extschema@.bound_lock_waits();
BEGIN
    <<body>>
    BEGIN
    IF fencing_token IS NULL THEN
        RAISE EXCEPTION 'fencing_token must not be NULL' USING ERRCODE = '22004';
    END IF;
    unused := @extschema@.check_args(NULL, false, NULL, false, lease_name);
    message := pg_catalog.format('fencing token %s is not the current tenure of lease "%s"', fencing_token, lease_name);
    IF pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.=) 'read committed' THEN
        -- FOR KEY SHARE blocks a new tenure (a key change) until this transaction ends, not the
        -- holder's renewals; SKIP LOCKED: a tenure being taken is not current. The statement's
        -- snapshot is the latest.
        SELECT l.fencing_token, l.holder, l.holder_role, l.expires_at INTO st
        FROM @extschema@.leases l WHERE l.lease_name OPERATOR(pg_catalog.=) lease_fence.lease_name
        FOR KEY SHARE SKIP LOCKED;
    ELSE
        -- REPEATABLE READ and SERIALIZABLE read the transaction's snapshot, and FOR KEY SHARE
        -- would lock the row version it shows even after a release (a change of no key column)
        -- had committed. FOR SHARE conflicts with every later change, so a release, an eviction
        -- or a new tenure since the snapshot raises 40001 (retry the transaction) instead of
        -- passing. The price: the holder's renewals wait for such a fenced transaction.
        SELECT l.fencing_token, l.holder, l.holder_role, l.expires_at INTO st
        FROM @extschema@.leases l WHERE l.lease_name OPERATOR(pg_catalog.=) lease_fence.lease_name
        FOR SHARE;
    END IF;
    IF NOT FOUND THEN
        PERFORM FROM @extschema@.leases l WHERE l.lease_name OPERATOR(pg_catalog.=) lease_fence.lease_name;
        RAISE EXCEPTION '%', message USING ERRCODE = 'LL001',
            DETAIL = CASE WHEN FOUND THEN 'A new tenure of the lease is being taken.' ELSE 'The lease has never been taken.' END,
            HINT = 'Stop acting as the holder: acquire the lease again to get a new token.';
    END IF;
    IF st.fencing_token OPERATOR(pg_catalog.<>) lease_fence.fencing_token THEN
        RAISE EXCEPTION '%', message USING ERRCODE = 'LL001',
            DETAIL = pg_catalog.format('The current tenure has token %s.', st.fencing_token),
            HINT = 'Stop acting as the holder: acquire the lease again to get a new token.';
    END IF;
    IF st.holder IS NULL THEN
        RAISE EXCEPTION '%', message USING ERRCODE = 'LL001', DETAIL = 'The tenure was released.',
            HINT = 'Stop acting as the holder: acquire the lease again to get a new token.';
    END IF;
    IF NOT coalesce(pg_catalog.pg_has_role(role, st.holder_role::pg_catalog.oid, 'USAGE'), false) THEN
        RAISE EXCEPTION 'lease "%" is held by another role', lease_name USING ERRCODE = '42501',
            DETAIL = pg_catalog.format('The tenure was taken by role %s; only it, or a role that has its privileges, may fence with its token.',
                                       st.holder_role);
    END IF;
    -- Measured after the row lock, so a lock wait cannot let an expired tenure pass.
    IF st.expires_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() THEN
        RAISE EXCEPTION '%', message USING ERRCODE = 'LL001', DETAIL = 'The tenure has expired.',
            HINT = 'Stop acting as the holder: acquire the lease again to get a new token.';
    END IF;
    END body;
    -- Put the session's lock_timeout back (bound_lock_waits).
    IF saved IS NOT NULL THEN
        PERFORM pg_catalog.set_config('lock_timeout', saved, true);
    END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.lease_fence(pg_catalog.int8, pg_catalog.text) IS
    'Raise SQLSTATE LL001 unless fencing_token is the current unexpired tenure of the caller''s role; else block new tenures until this transaction ends';

CREATE FUNCTION @extschema@.lease_evict(lease_name pg_catalog.text)
RETURNS pg_catalog.bool LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unused pg_catalog.int8 := @extschema@.check_args(NULL, false, NULL, false, lease_name);
    now pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    tl pg_catalog.int4 := @extschema@.current_timeline();
    saved pg_catalog.text := @extschema@.bound_lock_waits();
    evicted pg_catalog.bool := false;
    token pg_catalog.int8;
BEGIN
    <<body>>
    BEGIN
    UPDATE @extschema@.leases l SET holder = NULL, holder_role = NULL, expires_at = now
    WHERE l.lease_name OPERATOR(pg_catalog.=) lease_evict.lease_name AND l.holder IS NOT NULL
      AND (l.expires_at OPERATOR(pg_catalog.>) now OR l.timeline OPERATOR(pg_catalog.<>) tl)
    RETURNING l.fencing_token INTO token;
    IF FOUND THEN
        PERFORM pg_catalog.pg_notify('lease_lock_released', lease_name);
        PERFORM @extschema@.notify_event('evicted', lease_name, token, NULL);
        evicted := true;
        EXIT body;
    END IF;
    END body;
    -- Put the session's lock_timeout back (bound_lock_waits).
    IF saved IS NOT NULL THEN
        PERFORM pg_catalog.set_config('lock_timeout', saved, true);
    END IF;
    RETURN evicted;
END
$$;
COMMENT ON FUNCTION @extschema@.lease_evict(pg_catalog.text) IS
    'Administrators: end the current tenure whoever holds it and NOTIFY lease_lock_released';

-- Holder ids show only to members of the tenure's role (see the C edition).
CREATE VIEW @extschema@.lease_status AS
SELECT lease_name,
       CASE WHEN pg_catalog.pg_has_role(holder_role::pg_catalog.oid, 'MEMBER') THEN holder END AS holder,
       fencing_token,
       expires_at,
       holder IS NOT NULL AND expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp() AS held,
       holder_role,
       acquired_at,
       renewed_at,
       timeline
FROM @extschema@.leases;
COMMENT ON VIEW @extschema@.lease_status IS 'lease_lock: every lease, its holder and whether it is held now';

-- Privileges: the tables are the owner's alone; using leases is granted by the owner (GRANT
-- EXECUTE ON FUNCTION ... TO app), as with the C edition; lease_evict to nobody.
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
-- pg_dump by the database owner (as with the C edition, whose table is a config table).
GRANT SELECT ON @extschema@.leases TO pg_database_owner;
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT SELECT ON @extschema@.lease_status TO PUBLIC;
