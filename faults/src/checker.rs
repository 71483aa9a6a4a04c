//! Reads what the clients believed and did, and what the database kept, and counts violations.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One worker process's log, parsed.
#[derive(Debug, Default)]
pub struct ProcessLog {
    pub name: String,
    /// `held` events: (time, token, valid_until).
    pub held: Vec<(i128, i64, i128)>,
    /// `lost`/`released` events: (time, token).
    pub ended: Vec<(i128, i64)>,
    /// (token, seq) -> (begin time, end time, acked, failure)
    pub actions: BTreeMap<(i64, u64), Action>,
    /// When the harness killed the process, if it did.
    pub killed_at: Option<i128>,
}

#[derive(Debug, Default, Clone)]
pub struct Action {
    pub begin: i128,
    pub end: Option<i128>,
    pub acked: bool,
    pub failure: Option<String>,
}

impl ProcessLog {
    /// Reads a worker's JSON-lines log (lines that do not parse, such as one cut short by a
    /// SIGKILL, are skipped).
    pub fn parse(name: &str, text: &str) -> ProcessLog {
        use crate::worker::{Event, LogLine};
        let mut log = ProcessLog { name: name.to_string(), ..Default::default() };
        for line in text.lines() {
            let Ok(LogLine { t, event }) = serde_json::from_str::<LogLine>(line) else { continue };
            let t = i128::from(t);
            match event {
                Event::Held { token, valid_until } => log.held.push((t, token, i128::from(valid_until))),
                Event::Lost { token } | Event::Released { token } => log.ended.push((t, token)),
                Event::Begin { token, seq } => {
                    log.actions.insert((token, seq), Action { begin: t, ..Default::default() });
                }
                Event::Ack { token, seq } => {
                    if let Some(a) = log.actions.get_mut(&(token, seq)) {
                        a.end = Some(t);
                        a.acked = true;
                    }
                }
                Event::Fail { token, seq, error } => {
                    if let Some(a) = log.actions.get_mut(&(token, seq)) {
                        a.end = Some(t);
                        a.failure = Some(error);
                    }
                }
                Event::Start { .. } | Event::Error { .. } => {}
            }
        }
        log
    }

    /// Belief intervals `[start, end]`, in time order: each opens at a `held` event, is extended
    /// by later `held` events of the same token to their last trusted instant, and closes at a
    /// `lost`/`released` event, the process's death or `run_end`, whichever is first.
    pub fn beliefs(&self, run_end: i128) -> Vec<Belief> {
        enum Ev {
            Held(i64, i128),
            Ended(i64),
        }
        let mut events: Vec<(i128, Ev)> = self.held.iter().map(|&(t, k, u)| (t, Ev::Held(k, u))).collect();
        events.extend(self.ended.iter().map(|&(t, k)| (t, Ev::Ended(k))));
        events.sort_by_key(|(t, _)| *t);
        let death = self.killed_at.unwrap_or(run_end).min(run_end);
        let mut out = Vec::new();
        let mut open: Option<Belief> = None;
        for (t, ev) in events {
            match ev {
                Ev::Held(token, until) => match &mut open {
                    Some(b) if b.token == token => b.end = b.end.max(until),
                    _ => {
                        out.extend(open.take());
                        open = Some(Belief { process: self.name.clone(), token, start: t, end: until });
                    }
                },
                Ev::Ended(token) => {
                    if let Some(mut b) = open.take() {
                        if b.token == token {
                            b.end = b.end.min(t);
                            out.push(b);
                        } else {
                            open = Some(b);
                        }
                    }
                }
            }
        }
        out.extend(open);
        for b in &mut out {
            b.end = b.end.min(death);
        }
        out.retain(|b| b.end >= b.start);
        out
    }
}

/// An interval in which a process believed it held the lease with `token`.
#[derive(Debug, Clone)]
pub struct Belief {
    pub process: String,
    pub token: i64,
    pub start: i128,
    pub end: i128,
}

/// A row of the `history` table, in commit order.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub client: String,
    pub token: i64,
    pub seq: u64,
}

/// An injected fault, for liveness and to classify overlaps during pauses.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub kind: crate::Fault,
    pub target: String,
    pub start: i128,
    pub end: i128,
}

/// Everything the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// Writes that committed after a write with a larger token.
    pub fenced_write_order: usize,
    /// Tokens claimed by more than one process, or tenures whose tokens went backwards.
    pub tenure_violations: usize,
    /// Overlapping beliefs of two processes where neither was paused.
    pub belief_overlaps: usize,
    /// Overlapping beliefs explained by a paused process (what fencing is for).
    pub paused_overlaps: usize,
    /// Acknowledged writes missing from the table.
    pub lost_writes: usize,
    /// Time from the end of each fault that left no other fault active until some process held
    /// the lease, in ns (and the slowest, with the fault's kind and end).
    pub recovery_ns: Vec<i128>,
    pub slowest_recoveries: Vec<(i128, crate::Fault, i128)>,
    pub acked_writes: usize,
    pub refused_writes: usize,
    pub tenures: usize,
    pub details: Vec<String>,
}

impl Report {
    pub fn safety_violations(&self) -> usize {
        self.fenced_write_order + self.tenure_violations + self.belief_overlaps + self.lost_writes
    }
}

/// `excuse_pauses`: an overlap of beliefs during a fault that stopped one of the processes is
/// not counted as a violation. Only for the negative control, whose clients believe without a
/// deadline: a lease_lock client's belief ends at its deadline whether or not it is stopped,
/// so any overlap of its beliefs is a violation.
pub fn check(
    logs: &[ProcessLog],
    history: &[HistoryRow],
    faults: &[FaultRecord],
    run_end: i128,
    excuse_pauses: bool,
) -> Report {
    let mut report = Report::default();

    // 1. Fenced writes: in commit order, tokens never go down.
    let mut max_token = i64::MIN;
    for row in history {
        if row.token < max_token {
            report.fenced_write_order += 1;
            if report.details.len() < 20 {
                report.details.push(format!(
                    "write ({}, token {}, seq {}) committed after a write with token {max_token}",
                    row.client, row.token, row.seq
                ));
            }
        }
        max_token = max_token.max(row.token);
    }

    // 2. Every tenure has one holder, and tenures start in token order.
    let mut beliefs: Vec<Belief> = logs.iter().flat_map(|l| l.beliefs(run_end)).collect();
    beliefs.sort_by_key(|b| (b.start, b.token));
    let mut holders: HashMap<i64, HashSet<&str>> = HashMap::new();
    for b in &beliefs {
        holders.entry(b.token).or_default().insert(&b.process);
    }
    for (token, procs) in &holders {
        if procs.len() > 1 {
            report.tenure_violations += 1;
            report.details.push(format!("token {token} held by {procs:?}"));
        }
    }
    let mut last: Option<&Belief> = None;
    for b in &beliefs {
        if let Some(prev) = last {
            if prev.process != b.process && b.token <= prev.token {
                report.tenure_violations += 1;
                report.details.push(format!(
                    "tenure {} of {} started after tenure {} of {}",
                    b.token, b.process, prev.token, prev.process
                ));
            }
        }
        last = Some(b);
    }
    let mut writers: HashMap<i64, HashSet<&str>> = HashMap::new();
    for row in history {
        writers.entry(row.token).or_default().insert(&row.client);
    }
    for (token, clients) in &writers {
        if clients.len() > 1 {
            report.tenure_violations += 1;
            report.details.push(format!("token {token} written by {clients:?}"));
        }
    }
    report.tenures = holders.len();

    // 3. Belief overlap between processes, separated by whether a pause explains it.
    for (i, a) in beliefs.iter().enumerate() {
        for b in beliefs.iter().skip(i + 1) {
            if b.start > a.end {
                break;
            }
            if a.process == b.process {
                continue;
            }
            let (from, to) = (a.start.max(b.start), a.end.min(b.end));
            if from >= to {
                continue;
            }
            let paused = excuse_pauses
                && faults.iter().any(|f| {
                    f.kind.stops_the_process()
                        && (f.target == a.process || f.target == b.process)
                        && f.start < to
                        && f.end > from
                });
            if paused {
                report.paused_overlaps += 1;
            } else {
                report.belief_overlaps += 1;
                if report.details.len() < 40 {
                    report.details.push(format!(
                        "{} (token {}) and {} (token {}) both believed they led for {:.1} ms, from {from} to {to}",
                        a.process,
                        a.token,
                        b.process,
                        b.token,
                        (to - from) as f64 / 1e6
                    ));
                }
            }
        }
    }

    // 4. Liveness: after a fault ends with no other fault active, how long until someone holds
    //    the lease (samples interrupted by the next fault are left out: faults overlap often).
    for f in faults {
        let others_active = |t: i128| faults.iter().any(|o| !std::ptr::eq(o, f) && o.start <= t && o.end > t);
        if others_active(f.end) {
            continue;
        }
        let covered = beliefs.iter().any(|b| b.start <= f.end && b.end >= f.end);
        let recovery =
            if covered { Some(0) } else { beliefs.iter().filter(|b| b.start > f.end).map(|b| b.start - f.end).min() };
        if let Some(r) = recovery {
            if faults.iter().any(|o| o.start > f.end && o.start < f.end + r) {
                continue;
            }
            report.recovery_ns.push(r);
            report.slowest_recoveries.push((r, f.kind, f.end));
        }
    }

    report.slowest_recoveries.sort_by_key(|(r, _, _)| std::cmp::Reverse(*r));
    report.slowest_recoveries.truncate(3);

    // 5. Every acknowledged write is in the table.
    let stored: HashSet<(&str, i64, u64)> = history.iter().map(|r| (r.client.as_str(), r.token, r.seq)).collect();
    for log in logs {
        for ((token, seq), action) in &log.actions {
            if action.acked {
                report.acked_writes += 1;
                if !stored.contains(&(log.name.as_str(), *token, *seq)) {
                    report.lost_writes += 1;
                    report.details.push(format!("acked write ({}, {token}, {seq}) is missing", log.name));
                }
            } else if action.failure.as_deref() == Some("LL001") {
                report.refused_writes += 1;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log from compact test lines (`t kind token [n]`), written as the worker writes them.
    fn belief_log(name: &str, lines: &str) -> ProcessLog {
        use crate::worker::{Event, LogLine};
        let json: Vec<String> = lines
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<i64> = l.split_whitespace().filter_map(|v| v.parse().ok()).collect();
                let kind = l.split_whitespace().nth(1).expect("a kind");
                let event = match kind {
                    "held" => Event::Held { token: f[1], valid_until: f[2] },
                    "lost" => Event::Lost { token: f[1] },
                    "begin" => Event::Begin { token: f[1], seq: f[2] as u64 },
                    "ack" => Event::Ack { token: f[1], seq: f[2] as u64 },
                    other => panic!("no such test event {other}"),
                };
                serde_json::to_string(&LogLine { t: f[0], event }).expect("serializes")
            })
            .collect();
        ProcessLog::parse(name, &json.join("\n"))
    }

    #[test]
    fn disjoint_tenures_pass() {
        let a = belief_log("a", "100 held 1 200\n150 held 1 300\n310 lost 1\n120 begin 1 1\n130 ack 1 1");
        let b = belief_log("b", "400 held 2 600\n");
        let history = vec![HistoryRow { client: "a".into(), token: 1, seq: 1 }];
        let r = check(&[a, b], &history, &[], 1000, false);
        assert_eq!(r.safety_violations(), 0, "{:?}", r.details);
        assert_eq!(r.tenures, 2);
    }

    #[test]
    fn overlaps_out_of_order_writes_and_lost_acks_are_caught() {
        let a = belief_log("a", "100 held 1 500\n120 begin 1 1\n130 ack 1 1\n140 begin 1 2\n150 ack 1 2");
        let b = belief_log("b", "300 held 2 600\n");
        let history = vec![
            HistoryRow { client: "b".into(), token: 2, seq: 1 },
            HistoryRow { client: "a".into(), token: 1, seq: 1 },
        ];
        let r = check(&[a, b], &history, &[], 1000, false);
        assert_eq!(r.belief_overlaps, 1);
        assert_eq!(r.fenced_write_order, 1);
        assert_eq!(r.lost_writes, 1);
    }

    #[test]
    fn overlap_during_a_pause_is_reported_separately() {
        let a = belief_log("a", &format!("100 held 1 {}\n", i64::MAX));
        let b = belief_log("b", "300 held 2 600\n");
        let pause = FaultRecord { kind: crate::Fault::Pause, target: "a".into(), start: 200, end: 700 };
        let r = check(&[a, b], &[], &[pause], 1000, true);
        assert_eq!((r.belief_overlaps, r.paused_overlaps), (0, 1));
    }

    #[test]
    fn two_holders_of_one_token_are_caught() {
        let a = belief_log("a", "100 held 3 200\n");
        let b = belief_log("b", "300 held 3 400\n");
        assert!(check(&[a, b], &[], &[], 1000, false).tenure_violations >= 1);
    }
}
