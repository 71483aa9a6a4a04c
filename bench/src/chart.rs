//! `docs/benchmarks.svg`: six small panels drawn as plain SVG (no plotting dependency), every
//! value taken from [`Results`]: time per call on the socket and on the delayed link,
//! throughput by connections, holder p99 by standbys, failover times, client CPU, and
//! lease_lock's times over etcd's per link.

use super::contention::{ContentionResult, System, STANDBY_COUNTS, SYSTEMS};
use super::report::f_int;
use super::single::{Alternative, SingleResult};
use super::Results;
use std::fmt::Write;

const WIDTH: f64 = 1100.0;
const PANEL_W: f64 = 530.0;
/// Panel heights of the rows (the last row has fewer bars).
const ROW_H: [f64; 5] = [270.0, 270.0, 270.0, 160.0, 160.0];
const GAP: f64 = 20.0;
const TOP: f64 = 50.0;
const LABEL_W: f64 = 190.0;

const OURS: &str = "#1f77b4";
const REFERENCE: &str = "#d62728";
const FLOOR: &str = "#7f7f7f";
const OTHER: &str = "#ff9f1c";

/// Picks one series' value out of a row of scenario 2.
type RateOf = fn(&super::many::ManyRow) -> f64;

/// Where a panel is on the page.
#[derive(Clone, Copy)]
struct Panel {
    x: f64,
    y: f64,
    h: f64,
}

/// One bar: label, value, colour, the text printed after the bar.
struct Bar {
    label: String,
    value: f64,
    color: &'static str,
    text: String,
}

/// The whole chart.
pub fn svg(r: &Results) -> String {
    let height = TOP + ROW_H.iter().map(|h| h + GAP).sum::<f64>() + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#);
    let title = format!(
        "lease_lock benchmarks: one run, {} cores ({}), {}{}",
        r.machine.cores,
        r.machine.cpu_model,
        r.machine.date_utc,
        if r.plan.quick { " - QUICK RUN, too short to quote" } else { "" }
    );
    let _ = writeln!(s, r#"<text x="20" y="28" font-size="15" font-weight="bold">{}</text>"#, esc(&title));
    let panel = |col: usize, row: usize| Panel {
        x: 20.0 + col as f64 * (PANEL_W + GAP),
        y: TOP + ROW_H[..row].iter().map(|h| h + GAP).sum::<f64>(),
        h: ROW_H[row],
    };
    hbars(&mut s, panel(0, 0), "Time per call, Unix socket (ms, lower is better)", &single_bars(&r.single_socket));
    hbars(&mut s, panel(1, 0), "Time per call, TCP +0.5 ms each way (ms)", &single_bars(&r.single_delayed));
    many_lines(&mut s, panel(0, 1), r);
    hbars(&mut s, panel(1, 1), "Fenced write: time per transaction (ms)", &fence_bars(r));
    hbars(&mut s, panel(0, 2), "Holder renewal p99 by polling standbys, socket (ms)", &contention_bars(&r.contention));
    hbars(
        &mut s,
        panel(1, 2),
        "Holder renewal p99 by polling standbys, TCP +0.5 ms (ms)",
        &contention_bars(&r.contention_delayed),
    );
    hbars(&mut s, panel(0, 3), "Failover: time until a standby holds, p50 (ms)", &failover_bars(r));
    hbars(&mut s, panel(1, 3), "Client process CPU, % of one core (1 s refresh)", &cost_bars(r));
    for (col, link) in r.etcd.links.iter().enumerate().take(2) {
        ratio_panel(&mut s, panel(col, 4), &format!("lease_lock time / etcd's, {} (log scale)", link.link), link);
    }
    s.push_str("</svg>\n");
    s
}

fn single_bars(result: &SingleResult) -> Vec<Bar> {
    result
        .rows
        .iter()
        .map(|row| {
            let (label, color) = match row.alternative {
                Alternative::LeaseRefresh => ("lease_lock.lease_refresh", OURS),
                Alternative::LeaseAcquire => ("lease_lock.lease_acquire (renewal)", OURS),
                Alternative::PortableRefresh => ("portable lease_refresh", OURS),
                Alternative::ReferenceTransaction => ("reference BEGIN;upsert;COMMIT", REFERENCE),
                Alternative::ReferenceUpsert => ("reference upsert, autocommit", REFERENCE),
                Alternative::AdvisoryLock => ("advisory lock + unlock", OTHER),
                Alternative::SelectOne => ("SELECT 1 (round trip)", FLOOR),
                Alternative::UpdateOneRow => ("one-row UPDATE (commit)", FLOOR),
            };
            let per_call = 1e3 / row.rate.median;
            Bar {
                label: label.into(),
                value: per_call,
                color,
                text: format!("{per_call:.3} ms  ({:.2}x UPDATE)", row.time_vs_update.median),
            }
        })
        .collect()
}

fn contention_bars(result: &ContentionResult) -> Vec<Bar> {
    let mut bars = Vec::new();
    for system in SYSTEMS {
        for n in STANDBY_COUNTS {
            if let Some(row) = result.row(system, n) {
                bars.push(Bar {
                    label: format!("{}, {n} standbys", system.label()),
                    value: row.holder.p99_ms,
                    color: if system == System::Reference { REFERENCE } else { OURS },
                    text: format!("{:.3} ms  ({:.2}x none)", row.holder.p99_ms, row.p99_vs_none),
                });
            }
        }
    }
    bars
}

fn fence_bars(r: &Results) -> Vec<Bar> {
    let f = &r.fence;
    [(&f.unfenced, 1.0, FLOOR), (&f.fenced, f.fenced_time_vs_unfenced.median, OURS)]
        .into_iter()
        .map(|(row, ratio, color)| {
            let per_call = 1e3 / row.rate.median;
            Bar { label: row.label.into(), value: per_call, color, text: format!("{per_call:.3} ms  ({ratio:.2}x)") }
        })
        .collect()
}

fn failover_bars(r: &Results) -> Vec<Bar> {
    let f = &r.failover;
    vec![
        Bar {
            label: "release, notified (lease_lock)".into(),
            value: f.notified.p50_ms,
            color: OURS,
            text: format!("{:.1} ms (max {:.1})", f.notified.p50_ms, f.notified.max_ms),
        },
        Bar {
            label: "release, polling (reference)".into(),
            value: f.polling.p50_ms,
            color: REFERENCE,
            text: format!("{:.0} ms (max {:.0})", f.polling.p50_ms, f.polling.max_ms),
        },
        Bar {
            label: "holder killed (lease_lock)".into(),
            value: f.crash.p50_ms,
            color: OURS,
            text: format!("{:.0} ms (max {:.0})", f.crash.p50_ms, f.crash.max_ms),
        },
        Bar {
            label: "lease duration + retry".into(),
            value: f.crash_bound_ms,
            color: FLOOR,
            text: format!("{:.0} ms (expected bound)", f.crash_bound_ms),
        },
    ]
}

fn cost_bars(r: &Results) -> Vec<Bar> {
    r.cost
        .rows
        .iter()
        .map(|row| Bar {
            label: format!("{} lease(s)", row.leases),
            value: row.cpu_percent,
            color: OURS,
            text: format!("{:.3}%  RSS {:.1} MiB", row.cpu_percent, row.rss_kib as f64 / 1024.0),
        })
        .collect()
}

/// Ratios of lease_lock's time to etcd's (below 1: lease_lock is faster), bars on a log scale
/// from 0.01x to 10,000x with 1x marked, since the ratios span orders of magnitude.
fn ratio_panel(s: &mut String, p: Panel, title: &str, link: &super::etcd::LinkResult) {
    panel_frame(s, p, title);
    let ratios = [
        ("renewal (refresh / keepalive)", link.refresh_vs_keepalive.median),
        ("10,000 leases (batch / keepalive)", link.many_vs_keepalive.median),
        ("graceful handover, p50", link.graceful_lease_lock_from_call.p50_ms / link.graceful_etcd_from_call.p50_ms),
        ("crash failover, p50", link.crash_lease_lock.p50_ms / link.crash_etcd.p50_ms),
    ];
    let (low, high) = (-2.0, 4.0); // log10 of 0.01x and 10,000x
    let scale_w = PANEL_W - LABEL_W - 110.0;
    let px = |ratio: f64| {
        let l = if ratio > 0.0 && ratio.is_finite() { ratio.log10().clamp(low, high) } else { low };
        p.x + LABEL_W + (l - low) / (high - low) * scale_w
    };
    let row_h = ((p.h - 40.0) / ratios.len() as f64).min(28.0);
    let one = px(1.0);
    let _ = writeln!(
        s,
        r##"<line x1="{one:.1}" y1="{:.1}" x2="{one:.1}" y2="{:.1}" stroke="#333333" stroke-dasharray="3,2"/><text x="{one:.1}" y="{:.1}" text-anchor="middle">1x</text>"##,
        p.y + 30.0,
        p.y + p.h - 8.0,
        p.y + p.h - 1.0
    );
    for (i, (label, ratio)) in ratios.iter().enumerate() {
        let top = p.y + 34.0 + i as f64 * row_h;
        let mid = top + row_h * 0.5;
        let (a, b) = if *ratio >= 1.0 { (one, px(*ratio)) } else { (px(*ratio), one) };
        let color = if *ratio <= 1.0 { OURS } else { OTHER };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{mid:.1}" text-anchor="end" dominant-baseline="middle">{}</text><rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{mid:.1}" dominant-baseline="middle">{}</text>"#,
            p.x + LABEL_W - 6.0,
            esc(label),
            top + row_h * 0.15,
            (b - a).max(1.0),
            row_h * 0.7,
            px(ratio.max(1.0)) + 5.0,
            esc(&format!("{ratio:.2}x"))
        );
    }
}

/// A panel of horizontal bars, scaled to the largest value.
fn hbars(s: &mut String, p: Panel, title: &str, bars: &[Bar]) {
    panel_frame(s, p, title);
    let (x, y) = (p.x, p.y);
    let max = bars.iter().map(|b| b.value).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let scale_w = PANEL_W - LABEL_W - 170.0;
    let row_h = ((p.h - 40.0) / bars.len().max(1) as f64).min(28.0);
    for (i, bar) in bars.iter().enumerate() {
        let top = y + 34.0 + i as f64 * row_h;
        let w = if max > 0.0 && bar.value.is_finite() { (bar.value / max * scale_w).max(1.0) } else { 1.0 };
        let mid = top + row_h * 0.5;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" dominant-baseline="middle">{}</text>"#,
            x + LABEL_W - 6.0,
            mid,
            esc(&bar.label)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}"/>"#,
            x + LABEL_W,
            top + row_h * 0.15,
            row_h * 0.7,
            bar.color
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" dominant-baseline="middle">{}</text>"#,
            x + LABEL_W + w + 5.0,
            mid,
            esc(&bar.text)
        );
    }
}

/// Throughput by connections: lease_lock.lease_refresh and the one-row UPDATE.
fn many_lines(s: &mut String, p: Panel, r: &Results) {
    panel_frame(s, p, &format!("{} leases: calls/s by connections", f_int(r.many.leases as f64)));
    let (x, y) = (p.x, p.y);
    let rows = &r.many.rows;
    if rows.is_empty() {
        return;
    }
    let (left, right, top, bottom) = (x + 70.0, x + PANEL_W - 20.0, y + 40.0, y + p.h - 40.0);
    let max = nice_ceiling(rows.iter().map(|r| r.refresh_rate.median.max(r.update_rate.median)).fold(0.0, f64::max));
    let px = |i: usize| left + (right - left) * i as f64 / (rows.len().max(2) - 1) as f64;
    let py = |v: f64| if max > 0.0 { bottom - (bottom - top) * v / max } else { bottom };
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left:.1}" y1="{0:.1}" x2="{right:.1}" y2="{0:.1}" stroke="#e0e0e0"/><text x="{1:.1}" y="{0:.1}" text-anchor="end" dominant-baseline="middle">{2}</text>"##,
            py(v),
            left - 6.0,
            f_int(v)
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            px(i),
            bottom + 16.0,
            row.connections
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">connections</text>"#,
        (left + right) / 2.0,
        bottom + 32.0
    );
    let series: [(&str, &str, RateOf); 2] = [
        ("lease_lock.lease_refresh", OURS, |r| r.refresh_rate.median),
        ("one-row UPDATE (durable-commit floor)", FLOOR, |r| r.update_rate.median),
    ];
    for (k, (name, color, value)) in series.iter().enumerate() {
        let points: Vec<String> =
            rows.iter().enumerate().map(|(i, r)| format!("{:.1},{:.1}", px(i), py(value(r)))).collect();
        let _ =
            writeln!(s, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, points.join(" "));
        for (i, r) in rows.iter().enumerate() {
            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, px(i), py(value(r)));
        }
        let ly = top + 4.0 + k as f64 * 16.0;
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}" dominant-baseline="middle">{}</text>"#,
            left + 10.0,
            ly - 2.0,
            left + 28.0,
            ly,
            esc(name)
        );
    }
}

fn panel_frame(s: &mut String, p: Panel, title: &str) {
    let _ = writeln!(
        s,
        r##"<rect x="{:.1}" y="{:.1}" width="{PANEL_W}" height="{:.1}" fill="none" stroke="#cccccc"/><text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"##,
        p.x,
        p.y,
        p.h,
        p.x + 10.0,
        p.y + 20.0,
        esc(title)
    );
}

/// The smallest 1, 2, 2.5 or 5 times a power of ten at or above `v` (an axis maximum with round
/// quarter ticks).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|c| *c >= v).unwrap_or(10.0 * magnitude)
}

/// Escapes text for SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
