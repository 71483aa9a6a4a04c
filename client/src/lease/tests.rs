//! The renewal state machine against a scripted fake of the session, on tokio's paused clock:
//! every instant below is exact virtual time, so deadlines are checked to the tick and the tests
//! take no wall-clock time. What the database does is covered by the integration tests.

use super::*;
use crate::config::LeaseConfig;
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::sleep;

const TOKEN: i64 = 7;
const NAME: &str = "job";
const REFRESH: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(5);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// What the fake answers to one `lease_refresh`.
#[derive(Clone, Debug)]
enum Answer {
    /// Renewed: our tenure.
    Held,
    /// Renewed, but with another tenure's token.
    OtherToken,
    /// `acquired = false`: expired or evicted.
    NotHeld,
    /// The call failed (connection refused, timeout, ...).
    Fail(&'static str),
    /// No answer, ever.
    Stall,
    /// This answer, after a while.
    After(Duration, Box<Answer>),
}

/// A session whose `lease_refresh` answers come from a script (then `Held` when it runs out),
/// and which records every call.
struct Fake {
    config: LeaseConfig,
    script: Mutex<VecDeque<Answer>>,
    /// Send time and deadline of every `lease_refresh`.
    refreshes: Mutex<Vec<(TokioInstant, TokioInstant)>>,
    release_delay: Duration,
    releases_started: AtomicUsize,
    releases_done: AtomicUsize,
    closed: Notify,
    /// Added to the real CLOCK_BOOTTIME: a jump is a suspend that the paused clock did not see.
    suspended_ns: AtomicU64,
}

impl Fake {
    fn new(script: impl IntoIterator<Item = Answer>) -> Arc<Fake> {
        Arc::new(Fake {
            config: LeaseConfig::default()
                .with_lease_duration(Duration::from_secs(10))
                .with_refresh_interval(REFRESH)
                .with_renew_deadline(DEADLINE),
            script: Mutex::new(script.into_iter().collect()),
            refreshes: Mutex::default(),
            release_delay: Duration::ZERO,
            releases_started: AtomicUsize::new(0),
            releases_done: AtomicUsize::new(0),
            closed: Notify::new(),
            suspended_ns: AtomicU64::new(0),
        })
    }

    fn refresh_times(&self, since: TokioInstant) -> Vec<Duration> {
        self.refreshes.lock().unwrap().iter().map(|(sent, _)| *sent - since).collect()
    }
}

fn grant(acquired: bool, token: i64) -> Grant {
    Grant {
        acquired,
        fencing_token: Some(token),
        expires_at: Some(SystemTime::now() + Duration::from_secs(10)),
        continued: acquired,
    }
}

impl RenewCalls for Fake {
    fn config(&self) -> &LeaseConfig {
        &self.config
    }

    async fn connection_closed(&self) {
        self.closed.notified().await
    }

    async fn refresh(&self, _holder: Uuid, name: &str, deadline: TokioInstant) -> Result<Grant, String> {
        assert_eq!(name, NAME);
        self.refreshes.lock().unwrap().push((TokioInstant::now(), deadline));
        let mut answer = self.script.lock().unwrap().pop_front().unwrap_or(Answer::Held);
        loop {
            return match answer {
                Answer::Held => Ok(grant(true, TOKEN)),
                Answer::OtherToken => Ok(grant(true, TOKEN + 1)),
                Answer::NotHeld => Ok(grant(false, TOKEN)),
                Answer::Fail(e) => Err(e.to_owned()),
                Answer::Stall => std::future::pending().await,
                Answer::After(wait, then) => {
                    sleep(wait).await;
                    answer = *then;
                    continue;
                }
            };
        }
    }

    async fn release(&self, _holder: Uuid, name: &str) -> Result<bool, Error> {
        assert_eq!(name, NAME);
        self.releases_started.fetch_add(1, Ordering::SeqCst);
        sleep(self.release_delay).await;
        self.releases_done.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    fn boot_ns(&self) -> u64 {
        boottime_ns() + self.suspended_ns.load(Ordering::SeqCst)
    }
}

/// A tenure confirmed now, its handle, and the client's claims.
async fn start(fake: &Arc<Fake>) -> (Lease, Arc<Claims>, TokioInstant) {
    let claims = Arc::new(Claims::default());
    let claim = claims.claim_handle(NAME).await.unwrap();
    claims.tenure_started(NAME, TOKEN);
    let now = TokioInstant::now();
    let lease = Lease::start(
        Tenure {
            session: fake.clone(),
            lease_name: NAME.into(),
            holder_id: Uuid::nil(),
            fencing_token: TOKEN,
            expires_at: SystemTime::now() + Duration::from_secs(10),
            confirmed_at: now,
            confirmed_boot_ns: fake.boot_ns(),
        },
        claim,
    );
    (lease, claims, now)
}

/// Waits for the renewal task to report a loss; returns it and when it came.
async fn task_reports_loss(lease: &Lease, since: TokioInstant) -> (LossReason, Duration) {
    let mut state = lease.subscribe();
    loop {
        if let LeaseState::Lost(reason) = state.borrow_and_update().clone() {
            return (reason, TokioInstant::now() - since);
        }
        state.changed().await.expect("the renewal task reports a loss before it ends");
    }
}

fn valid_until(lease: &Lease) -> TokioInstant {
    TokioInstant::from_std(lease.valid_until().expect("held"))
}

#[tokio::test(start_paused = true)]
async fn each_confirmed_renewal_moves_the_deadline_to_its_send_time_plus_the_renew_deadline() {
    let fake = Fake::new([]);
    let (lease, _claims, t0) = start(&fake).await;
    assert_eq!(valid_until(&lease), t0 + DEADLINE);

    sleep(secs(3.5)).await;
    assert_eq!(fake.refresh_times(t0), [secs(1.0), secs(2.0), secs(3.0)]);
    assert_eq!(valid_until(&lease), t0 + secs(3.0) + DEADLINE);
    assert!(lease.is_held());
    // Each call is given up at the deadline of the renewal before it.
    let limits: Vec<_> = fake.refreshes.lock().unwrap().iter().map(|(_, d)| *d - t0).collect();
    assert_eq!(limits, [DEADLINE, secs(1.0) + DEADLINE, secs(2.0) + DEADLINE]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_counts_from_when_the_renewal_was_sent_not_when_it_came() {
    let fake = Fake::new([Answer::After(secs(0.8), Box::new(Answer::Held)), Answer::Stall]);
    let (lease, _claims, t0) = start(&fake).await;
    sleep(secs(1.9)).await;
    assert_eq!(fake.refresh_times(t0), [secs(1.0)]);
    assert_eq!(valid_until(&lease), t0 + secs(1.0) + DEADLINE);
    // The next one is due a refresh interval after the last one was sent; it never answers,
    // and the loss comes at the deadline counted from the send time of the slow one.
    let (reason, at) = task_reports_loss(&lease, t0).await;
    assert_eq!(fake.refresh_times(t0), [secs(1.0), secs(2.0)]);
    assert_eq!((reason, at), (LossReason::RenewDeadline { last_error: None }, secs(1.0) + DEADLINE));
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_never_answers_loses_the_lease_at_the_deadline_to_the_tick() {
    let fake = Fake::new([Answer::Stall]);
    let (lease, _claims, t0) = start(&fake).await;
    let (reason, at) = task_reports_loss(&lease, t0).await;
    assert_eq!(reason, LossReason::RenewDeadline { last_error: None });
    assert_eq!(at, DEADLINE);
    assert!(!lease.is_held());
    // One call sent, never answered: nothing else was tried over it.
    assert_eq!(fake.refresh_times(t0), [secs(1.0)]);
}

#[tokio::test(start_paused = true)]
async fn an_answer_after_the_deadline_comes_too_late() {
    let fake = Fake::new([Answer::After(secs(4.5), Box::new(Answer::Held))]);
    let (lease, _claims, t0) = start(&fake).await;
    let (reason, at) = task_reports_loss(&lease, t0).await;
    assert_eq!(reason, LossReason::RenewDeadline { last_error: None });
    assert_eq!(at, DEADLINE);
}

#[tokio::test(start_paused = true)]
async fn failed_renewals_are_retried_with_backoff_until_the_deadline_then_reported() {
    let fake = Fake::new(std::iter::repeat_n(Answer::Fail("connection refused"), 1000));
    let (lease, _claims, t0) = start(&fake).await;
    let (reason, at) = task_reports_loss(&lease, t0).await;
    assert_eq!(reason, LossReason::RenewDeadline { last_error: Some("connection refused".into()) });
    assert_eq!(at, DEADLINE);

    let times = fake.refresh_times(t0);
    assert_eq!(times[0], REFRESH);
    // Back-off between refresh/16 and the refresh interval: at least 4 more tries in 4 s, and
    // never more than one a 1/16th of the interval.
    assert!(times.len() >= 5, "{times:?}");
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= REFRESH / 16 && gap <= REFRESH, "{times:?}");
    }
    assert!(times.iter().all(|t| *t < DEADLINE), "{times:?}");
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_succeeds_after_failures_keeps_the_lease() {
    let fake = Fake::new([Answer::Fail("connection reset"), Answer::Fail("connection refused")]);
    let (lease, _claims, t0) = start(&fake).await;
    sleep(secs(4.9)).await;
    assert!(lease.is_held());
    let times = fake.refresh_times(t0);
    assert!(times.len() >= 3, "{times:?}");
    // The deadline counts from the send time of the success, not from the first try.
    let last_success = fake.refreshes.lock().unwrap().last().unwrap().0;
    assert_eq!(valid_until(&lease), last_success + DEADLINE);
    sleep(secs(10.0)).await;
    assert!(lease.is_held(), "the renewals go on at the refresh interval");
}

#[tokio::test(start_paused = true)]
async fn not_held_is_a_loss_at_once_and_nothing_is_released() {
    for answer in [Answer::NotHeld, Answer::OtherToken] {
        let fake = Fake::new([answer.clone()]);
        let (lease, claims, t0) = start(&fake).await;
        let (reason, at) = task_reports_loss(&lease, t0).await;
        assert_eq!(reason, LossReason::NotHeld, "{answer:?}");
        assert_eq!(at, REFRESH, "{answer:?}");
        assert!(!claims.is_own_tenure(NAME, TOKEN), "the tenure is no longer ours: {answer:?}");
        drop(lease);
        sleep(secs(1.0)).await;
        assert_eq!(fake.releases_started.load(Ordering::SeqCst), 0, "{answer:?}");
        assert_eq!(fake.refresh_times(t0), [REFRESH], "no renewal after the loss: {answer:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_closed_connection_is_renewed_over_at_once() {
    let fake = Fake::new([]);
    let (lease, _claims, t0) = start(&fake).await;
    sleep(secs(0.3)).await;
    fake.closed.notify_one();
    sleep(secs(0.1)).await;
    assert_eq!(fake.refresh_times(t0), [secs(0.3)]);
    assert_eq!(valid_until(&lease), t0 + secs(0.3) + DEADLINE);
}

#[tokio::test(start_paused = true)]
async fn a_suspend_past_the_deadline_is_a_loss_at_the_next_wake_without_a_renewal() {
    let fake = Fake::new([]);
    let (lease, _claims, t0) = start(&fake).await;
    sleep(secs(0.5)).await;
    // The machine slept for an hour; the monotonic clock (and tokio's) did not count it.
    fake.suspended_ns.store(3_600_000_000_000, Ordering::SeqCst);
    let (reason, at) = task_reports_loss(&lease, t0).await;
    assert_eq!(reason, LossReason::RenewDeadline { last_error: None });
    assert_eq!(at, REFRESH, "noticed when the refresh timer fires");
    assert!(fake.refresh_times(t0).is_empty(), "a renewal now could not be trusted");
}

#[tokio::test(start_paused = true)]
async fn release_stops_the_renewals_and_releases_once() {
    let fake = Fake::new([]);
    let (lease, claims, t0) = start(&fake).await;
    sleep(secs(2.5)).await;
    let info = lease.info();
    assert!(lease.release().await.unwrap());
    assert_eq!(fake.releases_done.load(Ordering::SeqCst), 1);
    assert_eq!(info.state(), LeaseState::Released);
    assert!(!claims.is_own_tenure(NAME, TOKEN));
    // Released is not a loss: `lost` never resolves, and no renewal follows.
    assert!(tokio::time::timeout(secs(30.0), info.lost()).await.is_err());
    assert_eq!(fake.refresh_times(t0), [secs(1.0), secs(2.0)]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_releases_in_the_background_and_frees_the_name_after() {
    let fake = Arc::new(Fake { release_delay: secs(0.2), ..Arc::into_inner(Fake::new([])).unwrap() });
    let (lease, claims, _t0) = start(&fake).await;
    drop(lease);
    // Until the release is through, a new acquire of the name waits (it could be undone by it).
    let reclaim = claims.claim_handle(NAME);
    tokio::pin!(reclaim);
    assert!(tokio::time::timeout(secs(0.1), &mut reclaim).await.is_err());
    assert_eq!(fake.releases_started.load(Ordering::SeqCst), 1);
    let _claim = reclaim.await.unwrap();
    assert_eq!(fake.releases_done.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_release_whose_caller_gives_up_still_completes() {
    let fake = Arc::new(Fake { release_delay: secs(0.2), ..Arc::into_inner(Fake::new([])).unwrap() });
    let (lease, _claims, _t0) = start(&fake).await;
    let info = lease.info();
    assert!(tokio::time::timeout(secs(0.05), lease.release()).await.is_err());
    sleep(secs(0.5)).await;
    assert_eq!(fake.releases_done.load(Ordering::SeqCst), 1);
    assert_eq!(info.state(), LeaseState::Released);
}

#[tokio::test(start_paused = true)]
async fn a_release_during_a_stalled_renewal_is_not_stuck_behind_it() {
    let fake = Fake::new([Answer::Stall]);
    let (lease, _claims, t0) = start(&fake).await;
    sleep(secs(2.0)).await;
    assert!(lease.release().await.unwrap());
    assert_eq!(TokioInstant::now() - t0, secs(2.0));
}

#[tokio::test(start_paused = true)]
async fn lost_resolves_at_the_deadline_of_a_stalled_renewal() {
    let fake = Fake::new([Answer::Stall]);
    let (lease, _claims, t0) = start(&fake).await;
    let info = lease.info();
    assert_eq!(info.lost().await, LossReason::RenewDeadline { last_error: None });
    assert_eq!(TokioInstant::now() - t0, DEADLINE);
}
