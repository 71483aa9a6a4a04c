//! The goals check and the Markdown: `results/benchmarks.md` (the tables) and
//! `docs/benchmarks.md` (the tables inside the explanation template `benchmarks.md.j2`). Every figure comes
//! from [`Results`]; the template's text says only what each row is and how it was measured.

use super::batch::Way;
use super::contention::{ContentionResult, System, STANDBY_COUNTS};
use super::many::PLATEAU_GAIN;
use super::single::{Alternative, SingleResult, ALTERNATIVES};
use super::sql::Edition;
use super::stats::{LatencySummary, SmallSample, Spread};
use super::Results;
use serde::Serialize;
use std::fmt::Write;

/// One goal of issue 6, checked against this run (goals are reported, never enforced).
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// Checks the goals against the results.
pub fn goals(r: &Results) -> Vec<Goal> {
    let mut goals = Vec::new();
    let socket_refresh = r.single_socket.row(Alternative::LeaseRefresh);
    let socket_update = r.single_socket.row(Alternative::UpdateOneRow);
    let ratio = &socket_refresh.time_vs_update;
    goals.push(Goal {
        goal: "Renewal (lease_lock.lease_refresh) time per call at most 1.15x a one-row UPDATE, Unix socket \
               (time per call = 1 / calls per s, median of the per-round ratios)"
            .into(),
        measured: format!(
            "{}, the median of the rounds' {} (median calls/s: {} vs {} ms per call); p50 {} vs {} ms = {}",
            x_goal(ratio.median, 1.15),
            rounds_x(ratio),
            f_ms(1e3 / socket_refresh.rate.median),
            f_ms(1e3 / socket_update.rate.median),
            f_ms(socket_refresh.latency.p50_ms),
            f_ms(socket_update.latency.p50_ms),
            x(socket_refresh.latency.p50_ms / socket_update.latency.p50_ms)
        ),
        met: ratio.median <= 1.15,
    });
    for (result, at_least, link) in
        [(&r.single_socket, 1.5, "Unix socket"), (&r.single_delayed, 2.5, "TCP +0.5 ms each way")]
    {
        let vs = &result.row(Alternative::LeaseRefresh).throughput_vs_reference;
        goals.push(Goal {
            goal: format!("lease_lock.lease_refresh throughput at least {at_least}x the reference's BEGIN; upsert; COMMIT, {link}"),
            measured: format!("{}, the median of the rounds' {}", x_goal(vs.median, at_least), rounds_x(vs)),
            met: vs.median >= at_least,
        });
    }
    let most = STANDBY_COUNTS[STANDBY_COUNTS.len() - 1];
    if let (Some(none), Some(busy)) =
        (r.contention.row(System::LeaseLock, 0), r.contention.row(System::LeaseLock, most))
    {
        goals.push(Goal {
            goal: format!("Holder p99 with {most} polling standbys within 1.5x of its p99 with none, Unix socket"),
            measured: format!(
                "{} ({} vs {} ms)",
                x_goal(busy.p99_vs_none, 1.5),
                f_ms(busy.holder.p99_ms),
                f_ms(none.holder.p99_ms)
            ),
            met: busy.p99_vs_none <= 1.5,
        });
    }
    let f = &r.failover;
    goals.push(Goal {
        goal: "Graceful failover (release to a notified standby holding) p50 under 50 ms".into(),
        measured: format!(
            "p50 {} ms, max {} ms ({} runs)",
            f_ms(f.notified.p50_ms),
            f_ms(f.notified.max_ms),
            f.notified.count
        ),
        met: f.notified.count > 0 && f.notified.p50_ms < 50.0,
    });
    goals.push(Goal {
        goal: format!(
            "Crash failover within lease duration + one retry interval ({} + {} ms), every run",
            f_ms(f.crash_lease_ms),
            f_ms(f.crash_refresh_ms)
        ),
        measured: format!("p50 {} ms, max {} ms ({} runs)", f_ms(f.crash.p50_ms), f_ms(f.crash.max_ms), f.crash.count),
        met: f.crash.count > 0 && f.crash.max_ms <= f.crash_bound_ms,
    });
    for row in r.scale.rows.iter().skip(1) {
        goals.push(Goal {
            goal: format!(
                "Renewal time with {} lease names within 1.2x of one name (plans prepared while the table was tiny)",
                f_int(row.names as f64)
            ),
            measured: format!(
                "{}, the median of the rounds' {}",
                x_goal(row.time_vs_one_name.median, 1.2),
                rounds_x(&row.time_vs_one_name)
            ),
            met: row.time_vs_one_name.median <= 1.2,
        });
    }
    let b = &r.batch;
    if let Some(batch) = b.row(Edition::C, Way::Batch) {
        goals.push(Goal {
            goal: format!(
                "One holder keeps {} leases renewed every second on one connection (lease_refresh_many of all: p99 under 1 s)",
                f_int(b.leases as f64)
            ),
            measured: format!(
                "one call for {} leases: p50 {} ms, p99 {} ms, max {} ms",
                f_int(b.leases as f64),
                f_ms(batch.call_latency.p50_ms),
                f_ms(batch.call_latency.p99_ms),
                f_ms(batch.call_latency.max_ms)
            ),
            met: batch.call_latency.count > 0 && batch.call_latency.p99_ms < 1000.0,
        });
    }
    for (edition, ratio) in &b.batch_vs_per_lease {
        if *edition == Edition::C {
            goals.push(Goal {
                goal: "Renewals per second of lease_refresh_many at least 20x one lease_refresh call per lease, one connection"
                    .into(),
                measured: format!("{}, the median of the rounds' {}", x_goal(ratio.median, 20.0), rounds_x(ratio)),
                met: ratio.median >= 20.0,
            });
        }
    }
    for link in &r.etcd.links {
        let l = &link.link;
        goals.push(Goal {
            goal: format!(
                "Graceful handover (release or resign called -> the next leader leading) no slower than etcd's election, p50, {l}"
            ),
            measured: format!(
                "lease_lock {} ms vs etcd {} ms = {}",
                f_ms(link.graceful_lease_lock_from_call.p50_ms),
                f_ms(link.graceful_etcd_from_call.p50_ms),
                x(link.graceful_lease_lock_from_call.p50_ms / link.graceful_etcd_from_call.p50_ms)
            ),
            met: link.graceful_lease_lock_from_call.count > 0
                && link.graceful_lease_lock_from_call.p50_ms <= link.graceful_etcd_from_call.p50_ms,
        });
        goals.push(Goal {
            goal: format!("Crash failover no slower than etcd's with the same TTL and refresh interval, p50, {l}"),
            measured: format!(
                "lease_lock {} ms vs etcd {} ms = {} (max {} vs {} ms)",
                f_ms(link.crash_lease_lock.p50_ms),
                f_ms(link.crash_etcd.p50_ms),
                x(link.crash_lease_lock.p50_ms / link.crash_etcd.p50_ms),
                f_ms(link.crash_lease_lock.max_ms),
                f_ms(link.crash_etcd.max_ms)
            ),
            met: link.crash_lease_lock.count > 0 && link.crash_lease_lock.p50_ms <= link.crash_etcd.p50_ms,
        });
        goals.push(Goal {
            goal: format!(
                "lease_refresh_many of {} leases within 2x of etcd's one keepalive of a lease with {} keys, {l}",
                f_int(r.etcd.keys as f64),
                f_int(r.etcd.keys as f64)
            ),
            measured: format!(
                "{}, the median of the rounds' {}",
                x_goal(link.many_vs_keepalive.median, 2.0),
                rounds_x(&link.many_vs_keepalive)
            ),
            met: link.many_vs_keepalive.median <= 2.0,
        });
    }
    if let Some(per_lease) = r.cost.rows.iter().rev().find_map(|row| row.rss_kib_per_extra_lease) {
        goals.push(Goal {
            goal: "Client memory per extra held lease at most 10 KiB (RSS growth, scenario 6)".into(),
            measured: format!("{per_lease:.2} KiB per extra lease"),
            met: per_lease <= 10.0,
        });
    }
    goals
}

// ---- number formatting -------------------------------------------------------------------

/// Milliseconds with three significant figures (0.187, 2.31, 12.4, 2010).
fn f_ms(v: f64) -> String {
    let a = v.abs();
    if a < 1.0 {
        format!("{v:.3}")
    } else if a < 10.0 {
        format!("{v:.2}")
    } else if a < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A count with thousands separators (also the chart's axis labels).
pub(crate) fn f_int(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn x(v: f64) -> String {
    format!("{v:.2}x")
}

/// A ratio checked against a goal's `threshold`: three decimals, five if three would print the
/// threshold itself (1.15007 is not 1.15, and the goal says which side it is on).
fn x_goal(v: f64, threshold: f64) -> String {
    let three = format!("{v:.3}");
    if three == format!("{threshold:.3}") && v != threshold {
        format!("{v:.5}x")
    } else {
        format!("{three}x")
    }
}

/// Every round's ratio, in round order.
fn rounds_x(s: &Spread) -> String {
    s.rounds.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
}

/// `median/s (min-max)` of a per-round rate.
fn rate_cell(s: &Spread) -> String {
    format!("{} ({}-{})", f_int(s.median), f_int(s.min), f_int(s.max))
}

fn latency_cells(l: &LatencySummary) -> String {
    format!("{} | {} | {}", f_ms(l.p50_ms), f_ms(l.p99_ms), f_ms(l.max_ms))
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "not met"
    }
}

// ---- tables ------------------------------------------------------------------------------

fn machine_section(r: &Results) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let settings: Vec<String> = m.postgres_settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| date | {} |", m.date_utc);
    let _ = writeln!(
        s,
        "| machine | {} cores, {}, {:.1} GiB RAM, Linux {} |",
        m.cores, m.cpu_model, m.memory_gib, m.kernel
    );
    let _ = writeln!(s, "| load average at start (1/5/15 min) | {} |", m.load_average_at_start);
    let _ = writeln!(s, "| PostgreSQL | {} |", m.postgres_version);
    let _ = writeln!(s, "| server settings | {} |", settings.join(", "));
    let _ = writeln!(s, "| commit | {} |", m.git_commit.as_deref().unwrap_or("unknown"));
    let _ = writeln!(
        s,
        "| run | {} ({}), {:.0} s |",
        if r.plan.quick { "`--quick` smoke run: too short to quote" } else { "full run" },
        plan_line(r),
        r.run_seconds
    );
    s
}

fn plan_line(r: &Results) -> String {
    let p = &r.plan;
    format!(
        "scenario 1: {} rounds x {} s per alternative and link; 2: {} rounds x {} s; 3: {} rounds x {} s; \
         4: {} rounds x {} s; 5: {} graceful runs of each kind, {} crash runs; 6: {} s window",
        p.single_rounds,
        p.single_period_s,
        p.many_rounds,
        p.many_period_s,
        p.contention_rounds,
        p.contention_period_s,
        p.fence_rounds,
        p.fence_period_s,
        p.graceful_reps,
        p.crash_reps,
        p.cost_window_s
    )
}

fn goals_section(r: &Results) -> String {
    let mut s = String::from("| goal | measured | |\n|---|---|---|\n");
    for g in &r.goals {
        let _ = writeln!(s, "| {} | {} | **{}** |", g.goal, g.measured, yes_no(g.met));
    }
    s
}

fn single_table(result: &SingleResult) -> String {
    let mut s = String::from(
        "| alternative | calls/s, median (rounds) | p50 ms | p99 ms | max ms | time per call vs one-row UPDATE | p50 vs one-row UPDATE | throughput vs reference 3 round trips |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let update_p50 = result.row(Alternative::UpdateOneRow).latency.p50_ms;
    for row in &result.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            row.label,
            rate_cell(&row.rate),
            latency_cells(&row.latency),
            x(row.time_vs_update.median),
            x(row.latency.p50_ms / update_p50),
            x(row.throughput_vs_reference.median)
        );
    }
    s
}

/// What the delayed link adds per round trip, as `SELECT 1` measures it.
fn link_note(r: &Results) -> String {
    let socket = r.single_socket.row(Alternative::SelectOne);
    let delayed = r.single_delayed.row(Alternative::SelectOne);
    let (s, d) = (1e3 / socket.rate.median, 1e3 / delayed.rate.median);
    format!(
        "`SELECT 1` takes {} ms per call over the delayed link and {} ms over the socket: the link \
         adds {} ms per round trip (1.0 ms asked for: 0.5 ms each way, plus loopback TCP and the \
         relay's own hops).",
        f_ms(d),
        f_ms(s),
        f_ms(d - s)
    )
}

/// What the floors say about the socket figures: how much of a call the commit is, what the
/// reference's extra round trips cost, and the best ratio any one-call durable renewal could
/// reach against the reference on this machine.
fn socket_note(r: &Results) -> String {
    let t = |a: Alternative| 1e3 / r.single_socket.row(a).rate.median;
    let reference = t(Alternative::ReferenceTransaction);
    let upsert = t(Alternative::ReferenceUpsert);
    format!(
        "Over the socket a round trip costs {} ms (`SELECT 1`) and the one-row UPDATE {} ms: the \
         durable commit is most of a call. The reference's transaction takes {} ms against {} ms \
         for its upsert alone in autocommit, so its two extra round trips add {} ms here. No \
         one-call durable renewal can be cheaper than the UPDATE, which runs at {} the \
         reference's throughput in this run: the most any renewal could reach against it on this \
         machine.",
        f_ms(t(Alternative::SelectOne)),
        f_ms(t(Alternative::UpdateOneRow)),
        f_ms(reference),
        f_ms(upsert),
        f_ms(reference - upsert),
        x(r.single_socket.row(Alternative::UpdateOneRow).throughput_vs_reference.median)
    )
}

fn alternatives_explained() -> String {
    let mut s = String::from("| row | what one call is |\n|---|---|\n");
    for a in ALTERNATIVES {
        let _ = writeln!(s, "| {} | {} |", a.label(), a.explanation());
    }
    s
}

fn many_table(r: &Results) -> String {
    let mut s = String::from(
        "| connections | lease_lock.lease_refresh calls/s (rounds) | p50 / p99 ms | one-row UPDATE calls/s (rounds) | p50 / p99 ms | lease_lock.lease_refresh vs UPDATE | WAL syncs/s during lease_lock.lease_refresh | renewals per WAL sync |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in &r.many.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} | {} / {} | {} | {} | {} |",
            row.connections,
            rate_cell(&row.refresh_rate),
            f_ms(row.refresh_latency.p50_ms),
            f_ms(row.refresh_latency.p99_ms),
            rate_cell(&row.update_rate),
            f_ms(row.update_latency.p50_ms),
            f_ms(row.update_latency.p99_ms),
            x(row.refresh_vs_update.median),
            row.refresh_wal_syncs_per_s.map_or("n/a".into(), f_int),
            row.refresh_commits_per_sync().map_or("n/a".into(), |c| format!("{c:.2}")),
        );
    }
    s
}

/// Where throughput stops growing, from the rows.
fn many_note(r: &Results) -> String {
    let m = &r.many;
    let gain = (PLATEAU_GAIN - 1.0) * 100.0;
    let describe = |name: &str, plateau: Option<usize>, rate: fn(&super::many::ManyRow) -> f64| match plateau {
        Some(c) => {
            let row = m.rows.iter().find(|row| row.connections == c);
            let best = m.rows.iter().map(rate).fold(0.0, f64::max);
            format!(
                "{name} stops growing at {c} connections ({}/s; no larger count adds {gain:.0}% or more; \
                 the best of any count is {}/s)",
                row.map_or("?".into(), |row| f_int(rate(row))),
                f_int(best)
            )
        }
        None => format!("{name} is still growing at {} connections", m.rows.last().map_or(0, |row| row.connections)),
    };
    let refresh = describe("lease_lock.lease_refresh", m.refresh_plateau_connections, |row| row.refresh_rate.median);
    let update = describe("the one-row UPDATE", m.update_plateau_connections, |row| row.update_rate.median);
    let per_sync = |row: &super::many::ManyRow| row.refresh_commits_per_sync().map(|c| (row.connections, c));
    let first = m.rows.first().and_then(per_sync);
    let last = m.rows.last().and_then(per_sync);
    let one_line = match (first, last) {
        (Some((c1, k1)), Some((c2, k2))) => format!(
            " Renewals per WAL sync: {k1:.2} with {c1} connection(s), {k2:.2} with {c2} (above 1: commits share flushes)."
        ),
        _ => String::new(),
    };
    // The durability floor: the most WAL syncs per second any count reached, and the fewest
    // connections that came within 10% of it.
    let syncs: Vec<(usize, f64)> =
        m.rows.iter().filter_map(|row| row.refresh_wal_syncs_per_s.map(|w| (row.connections, w))).collect();
    let most = syncs.iter().map(|(_, w)| *w).fold(0.0, f64::max);
    let floor_line = match syncs.iter().find(|(_, w)| *w >= most * 0.9) {
        Some((c, _)) if most > 0.0 => format!(
            " The durability floor, the most WAL flushes per second this server did during lease_lock.lease_refresh \
             (about {}/s), is reached at {c} connection(s): beyond it renewals scale only by sharing \
             flushes.",
            f_int(most)
        ),
        _ => String::new(),
    };
    format!("In this run {refresh}; {update}.{floor_line}{one_line}")
}

fn contention_table(result: &ContentionResult) -> String {
    let mut s = String::from(
        "| system | standbys | holder renewals timed | holder p50 ms | p99 ms | max ms | p50 vs no standbys | p99 vs no standbys | standby polls/s | failed polls |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in &result.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.system.label(),
            row.standbys,
            f_int(row.holder.count as f64),
            latency_cells(&row.holder),
            x(row.p50_vs_none),
            x(row.p99_vs_none),
            f_int(row.standby_polls_per_s),
            row.standby_errors
        );
    }
    s
}

fn fence_table(r: &Results) -> String {
    let f = &r.fence;
    let mut s = String::from(
        "| transaction (one simple-query batch) | calls/s (rounds) | p50 ms | p99 ms | max ms | time per write vs unfenced |\n\
         |---|---|---|---|---|---|\n",
    );
    for (row, ratio) in [(&f.unfenced, 1.0), (&f.fenced, f.fenced_time_vs_unfenced.median)] {
        let _ = writeln!(
            s,
            "| {}: `{}` | {} | {} | {} |",
            row.label,
            row.sql,
            rate_cell(&row.rate),
            latency_cells(&row.latency),
            x(ratio)
        );
    }
    s
}

fn small_cells(s: &SmallSample) -> String {
    format!("{} | {} | {} | {}", s.count, f_ms(s.min_ms), f_ms(s.p50_ms), f_ms(s.max_ms))
}

fn failover_table(r: &Results) -> String {
    let f = &r.failover;
    let mut s = String::from("| failover | runs | min ms | p50 ms | max ms | expected |\n|---|---|---|---|---|---|\n");
    let _ = writeln!(
        s,
        "| graceful, lease_lock: `release()` returned -> notified standby's `acquire()` returned | {} | well under the {} ms refresh interval |",
        small_cells(&f.notified),
        f_ms(f.graceful_refresh_ms)
    );
    let _ = writeln!(
        s,
        "| graceful, lease_lock: `release()` called -> standby holding | {} | the same plus the release call itself |",
        small_cells(&f.notified_from_call)
    );
    let _ = writeln!(
        s,
        "| graceful, reference-style polling standby (every {} ms ±10%): release returned -> standby holding | {} | uniform over one polling interval |",
        f_ms(f.graceful_refresh_ms),
        small_cells(&f.polling)
    );
    let _ = writeln!(
        s,
        "| crash: holder process SIGKILLed -> standby holding (lease {} ms, refresh {} ms) | {} | at most {} ms (lease + one retry interval) |",
        f_ms(f.crash_lease_ms),
        f_ms(f.crash_refresh_ms),
        small_cells(&f.crash),
        f_ms(f.crash_bound_ms)
    );
    let _ = writeln!(
        s,
        "| graceful, portable edition: `release()` returned -> notified standby's `acquire()` returned | {} | as lease_lock's |",
        small_cells(&f.portable_notified)
    );
    let _ = writeln!(
        s,
        "| crash, portable edition: holder process SIGKILLed -> standby holding | {} | at most {} ms |",
        small_cells(&f.portable_crash),
        f_ms(f.crash_bound_ms)
    );
    s
}

fn cost_table(r: &Results) -> String {
    let mut s = String::from(
        "| leases held | CPU, % of one core | (from /proc/pid/stat ticks) | process CPU per renewal due, µs | RSS KiB | RSS per extra lease, KiB | threads |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for row in &r.cost.rows {
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.2} | {:.1} | {} | {} | {} |",
            f_int(row.leases as f64),
            row.cpu_percent,
            row.cpu_percent_ticks,
            row.cpu_us_per_renewal,
            f_int(row.rss_kib as f64),
            row.rss_kib_per_extra_lease.map_or("-".into(), |k| format!("{k:.2}")),
            row.threads
        );
    }
    s
}

fn scale_table(r: &Results) -> String {
    let mut s = String::from(
        "| lease names | renewals/s (median, range) | p50 ms | p99 ms | time vs 1 name | table + indexes, bytes per name |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in &r.scale.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            f_int(row.names as f64),
            rate_cell(&row.rate),
            f_ms(row.latency.p50_ms),
            f_ms(row.latency.p99_ms),
            rounds_x(&row.time_vs_one_name),
            if row.names >= 1000 { f_int(row.bytes_per_name) } else { "-".into() }
        );
    }
    s
}

fn batch_table(r: &Results) -> String {
    let b = &r.batch;
    let mut s = String::from(
        "| edition | how | leases renewed/s, median (rounds) | one call p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
    );
    for row in &b.rows {
        let how = match row.way {
            Way::PerLease => "`lease_refresh`, one call per lease".to_string(),
            Way::Batch => format!("`lease_refresh_many`, one call for {} leases", f_int(b.leases as f64)),
        };
        let _ = writeln!(
            s,
            "| {} | {how} | {} | {} |",
            row.edition.label(),
            rate_cell(&row.renewals),
            latency_cells(&row.call_latency)
        );
    }
    for (edition, ratio) in &b.batch_vs_per_lease {
        let _ = writeln!(
            s,
            "\n{}: the batch renews {} as many leases per second as one call per lease (rounds: {}).",
            edition.label(),
            x(ratio.median),
            rounds_x(ratio)
        );
    }
    s
}

fn etcd_table(r: &Results) -> String {
    let e = &r.etcd;
    let mut s = String::new();
    for link in &e.links {
        let _ = writeln!(
            s,
            "**{}**\n\n| call | calls/s, median (rounds) | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|",
            link.link
        );
        for row in link.renewal.iter().chain(&link.many) {
            let _ = writeln!(s, "| {} | {} | {} |", row.label, rate_cell(&row.rate), latency_cells(&row.latency));
        }
        let _ = writeln!(
            s,
            "\n| handover | runs | min ms | p50 ms | max ms |\n|---|---|---|---|---|\n\
             | graceful, etcd: `Resign` called -> the campaigning standby leads | {} |\n\
             | graceful, lease_lock: `release()` called -> the notified standby holds | {} |\n\
             | graceful, etcd: `Resign` returned -> the campaigning standby leads | {} |\n\
             | graceful, lease_lock: `release()` returned -> the notified standby holds | {} |\n\
             | crash, etcd: leader process SIGKILLed -> the standby leads | {} |\n\
             | crash, lease_lock: holder process SIGKILLed -> the standby holds | {} |\n",
            small_cells(&link.graceful_etcd_from_call),
            small_cells(&link.graceful_lease_lock_from_call),
            small_cells(&link.graceful_etcd),
            small_cells(&link.graceful_lease_lock),
            small_cells(&link.crash_etcd),
            small_cells(&link.crash_lease_lock)
        );
        let _ = writeln!(
            s,
            "| lease_lock vs etcd, time ({}) | ratio |\n|---|---|\n\
             | renewal: lease_refresh / keepalive | {} (rounds {}) |\n\
             | {} leases: lease_refresh_many / one keepalive | {} (rounds {}) |\n\
             | graceful handover (from the call), p50 | {} |\n\
             | crash failover, p50 | {} |\n",
            link.link,
            x(link.refresh_vs_keepalive.median),
            rounds_x(&link.refresh_vs_keepalive),
            f_int(e.keys as f64),
            x(link.many_vs_keepalive.median),
            rounds_x(&link.many_vs_keepalive),
            x(link.graceful_lease_lock_from_call.p50_ms / link.graceful_etcd_from_call.p50_ms),
            x(link.crash_lease_lock.p50_ms / link.crash_etcd.p50_ms)
        );
    }
    let _ = writeln!(
        s,
        "{}; graceful handover with TTL {} ms and keepalive/renewal every {} ms, crash failover with TTL {} ms and every {} ms, for both systems.",
        e.etcd_version,
        f_ms(e.graceful_ttl_ms),
        f_ms(e.graceful_refresh_ms),
        f_ms(e.crash_ttl_ms),
        f_ms(e.crash_refresh_ms)
    );
    s
}

// ---- documents ---------------------------------------------------------------------------

/// `results/benchmarks.md`: the machine, the goals and every table, without the explanations.
pub fn results_markdown(r: &Results) -> String {
    format!(
        "# lease_lock benchmark results\n\n\
         Written by `scripts/bench.sh` (see docs/benchmarks.md for what each row is).\n\n\
         {}\n## Goals\n\n{}\n\
         ## 1. One holder, one lease: {}\n\n{}\n{}\n\n\
         ## 1. One holder, one lease: {}\n\n{}\n{}\n\n\
         ## 2. {} leases, lease_lock.lease_refresh vs one-row UPDATE by connections\n\n{}\n{}\n\n\
         ## 3. Holder renewal latency with polling standbys: {}\n\n{}\n\
         ## 3. Holder renewal latency with polling standbys: {}\n\n{}\n\
         ## 4. Fenced writes\n\n{}\n\
         ## 5. Failover\n\n{}\n\
         ## 6. Client cost\n\n{}\n\
         ## 7. Renewal cost by the number of lease names\n\n{}\n\
         ## 8. Many leases, one call\n\n{}\n\
         ## 9. Side by side with etcd\n\n{}",
        machine_section(r),
        goals_section(r),
        r.single_socket.link,
        single_table(&r.single_socket),
        socket_note(r),
        r.single_delayed.link,
        single_table(&r.single_delayed),
        link_note(r),
        f_int(r.many.leases as f64),
        many_table(r),
        many_note(r),
        r.contention.link,
        contention_table(&r.contention),
        r.contention_delayed.link,
        contention_table(&r.contention_delayed),
        fence_table(r),
        failover_table(r),
        cost_table(r),
        scale_table(r),
        batch_table(r),
        etcd_table(r),
    )
}

/// `docs/benchmarks.md`: the template (`benchmarks.md.j2`, the explanation around the tables)
/// filled with this run's tables and sentences, each named `{{ name }}` there.
pub fn docs_markdown(r: &Results) -> String {
    let parts: [(&str, String); 17] = [
        ("machine", machine_section(r)),
        ("goals", goals_section(r)),
        ("single_socket", single_table(&r.single_socket)),
        ("socket_note", socket_note(r)),
        ("single_delayed", single_table(&r.single_delayed)),
        ("link_note", link_note(r)),
        ("alternatives", alternatives_explained()),
        ("many", many_table(r)),
        ("many_note", many_note(r)),
        ("contention", contention_table(&r.contention)),
        ("contention_delayed", contention_table(&r.contention_delayed)),
        ("fence", fence_table(r)),
        ("failover", failover_table(r)),
        ("cost", cost_table(r)),
        ("scale", scale_table(r)),
        ("batch", batch_table(r)),
        ("etcd", etcd_table(r)),
    ];
    let context: std::collections::BTreeMap<&str, String> =
        parts.into_iter().map(|(name, text)| (name, text.trim_end().to_string())).collect();
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // The template is compiled into the binary and names only these parts: it cannot fail.
    env.render_str(include_str!("benchmarks.md.j2"), context).expect("the benchmark report template renders")
}
