//! Which lease names of a client are in use.
//!
//! A client holds a lease under its holder id, and `lease_release` frees whatever tenure that
//! holder id has. So a release still on its way from an old handle (dropped, or lost on the local
//! deadline while its renewal task was mid-call) must reach the server before this client sends
//! a new `lease_acquire` for the same name, or it would free the new tenure. Claims enforce it:
//! - a *handle claim* exists while an acquire is running or a [`Lease`](crate::Lease) handle is
//!   alive: a second one is refused ([`Error::InUse`]), so there is one handle per tenure;
//! - a *task claim* exists while a renewal task (or the undo of a cancelled acquire) may still
//!   send a release: a new handle claim waits until those are done.
//!
//! It also remembers which tenures this client may still have on the server (the *own tenures*),
//! so that an acquire answered with a renewal of a tenure under our holder id can be told apart:
//! ours (a release that failed, a loss on the local deadline, an acquire whose answer was lost)
//! or another process's that presents the same id ([`Error::DuplicateHolderId`]).

use crate::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Claims {
    names: Mutex<HashMap<String, Use>>,
    freed: Notify,
    /// Tenures this client may still have on the server, by lease name.
    own: Mutex<HashMap<String, Own>>,
}

/// What this client knows of its tenure of one lease name on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Own {
    /// Started or continued with this token.
    Held(i64),
    /// An acquire's answer was lost (timed out, connection lost, cancelled): whatever tenure is
    /// held under our id may be ours.
    Unknown,
    /// Released tenure `token`. A release commits without waiting for its WAL flush, so a crash
    /// can lose it and give the tenure back to our id (see `Session`'s release), but only until
    /// the tenure's expiry, at most a lease duration after the release: `until`.
    Released { token: i64, until: Instant },
}

#[derive(Debug, Default)]
struct Use {
    handle: bool,
    tasks: usize,
}

impl Claims {
    /// Claims `name` for an acquire (and then its lease handle), waiting for earlier tasks of
    /// that name to finish.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is claimed until it returns.
    pub async fn claim_handle(self: &Arc<Self>, name: &str) -> Result<HandleClaim, Error> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut names = self.names.lock().expect("claims lock");
                let entry = names.entry(name.to_owned()).or_default();
                if entry.handle {
                    return Err(Error::InUse(name.to_owned()));
                }
                if entry.tasks == 0 {
                    entry.handle = true;
                    return Ok(HandleClaim { claims: self.clone(), name: name.to_owned() });
                }
            }
            freed.await;
        }
    }

    /// Marks a task that may still send a release for `name`.
    pub fn claim_task(self: &Arc<Self>, name: &str) -> TaskClaim {
        let mut names = self.names.lock().expect("claims lock");
        names.entry(name.to_owned()).or_default().tasks += 1;
        TaskClaim { claims: self.clone(), name: name.to_owned() }
    }

    /// Records a tenure this client started, or continued, with `token`.
    pub fn tenure_started(&self, name: &str, token: i64) {
        self.own.lock().expect("own tenures lock").insert(name.to_owned(), Own::Held(token));
    }

    /// Records that an acquire of `name` may have started a tenure whose token we never saw.
    pub fn tenure_unknown(&self, name: &str) {
        self.own.lock().expect("own tenures lock").insert(name.to_owned(), Own::Unknown);
    }

    /// Records what a `lease_release` of `name` answered: `false`, the server holds no tenure of
    /// ours ([`tenure_ended`](Self::tenure_ended)); `true`, it released ours
    /// ([`tenure_released`](Self::tenure_released)).
    pub fn release_answered(&self, name: &str, released: bool, lease_duration: Duration) {
        if released {
            self.tenure_released(name, lease_duration);
        } else {
            self.tenure_ended(name);
        }
    }

    /// Records that the server released our tenure of `name`, whose lease duration is
    /// `lease_duration` (if a crash loses that release, the tenure comes back until it expires:
    /// [`is_lost_release`](Self::is_lost_release)). Forgets the released tenures that have
    /// expired by now, so that a client using ever new names keeps no record of old ones.
    fn tenure_released(&self, name: &str, lease_duration: Duration) {
        let now = Instant::now();
        let mut own = self.own.lock().expect("own tenures lock");
        own.retain(|_, o| !matches!(o, Own::Released { until, .. } if *until <= now));
        match own.get(name) {
            Some(Own::Held(token)) | Some(Own::Released { token, .. }) => {
                let token = *token;
                own.insert(name.to_owned(), Own::Released { token, until: now + lease_duration });
            }
            // A tenure whose token we never saw (a cancelled acquire, undone): a tenure under our
            // id later may as well be another process's, so nothing is kept to release it again.
            _ => {
                own.remove(name);
            }
        }
    }

    /// Records that the server holds no tenure of `name` under our id (it said so).
    pub fn tenure_ended(&self, name: &str) {
        self.own.lock().expect("own tenures lock").remove(name);
    }

    /// Whether the tenure `token` of `name` held under our id may be one this client started
    /// and has not released.
    pub fn is_own_tenure(&self, name: &str, token: i64) -> bool {
        match self.own.lock().expect("own tenures lock").get(name) {
            Some(Own::Held(known)) => *known == token,
            Some(Own::Unknown) => true,
            Some(Own::Released { .. }) | None => false,
        }
    }

    /// Whether the tenure `token` of `name` held under our id is one this client released: the
    /// server lost that release (it crashed before the release reached disk).
    pub fn is_lost_release(&self, name: &str, token: i64) -> bool {
        match self.own.lock().expect("own tenures lock").get(name) {
            Some(Own::Released { token: known, until }) => *known == token && *until > Instant::now(),
            _ => false,
        }
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut Use)) {
        if let Ok(mut names) = self.names.lock() {
            if let Some(entry) = names.get_mut(name) {
                change(entry);
                if !entry.handle && entry.tasks == 0 {
                    names.remove(name);
                }
            }
        }
        self.freed.notify_waiters();
    }
}

/// Held by an acquire in progress, then by the lease handle.
#[derive(Debug)]
pub(crate) struct HandleClaim {
    claims: Arc<Claims>,
    name: String,
}

impl HandleClaim {
    pub fn claims(&self) -> &Arc<Claims> {
        &self.claims
    }
}

impl Drop for HandleClaim {
    fn drop(&mut self) {
        self.claims.update(&self.name, |u| u.handle = false);
    }
}

/// Held by a task that may send a release.
#[derive(Debug)]
pub(crate) struct TaskClaim {
    claims: Arc<Claims>,
    name: String,
}

impl Drop for TaskClaim {
    fn drop(&mut self) {
        self.claims.update(&self.name, |u| u.tasks -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_handle_per_name_and_handles_wait_for_tasks() {
        let claims = Arc::new(Claims::default());
        let handle = claims.claim_handle("a").await.unwrap();
        assert!(matches!(claims.claim_handle("a").await, Err(Error::InUse(_))));
        let _other = claims.claim_handle("b").await.unwrap();
        let task = claims.claim_task("a");
        drop(handle);
        // The task may still release: a new handle waits for it.
        let waiting = tokio::spawn({
            let claims = claims.clone();
            async move { claims.claim_handle("a").await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(task);
        tokio::time::timeout(Duration::from_secs(1), waiting).await.unwrap().unwrap().unwrap();
        assert!(claims.names.lock().unwrap().get("a").is_none());
    }

    #[test]
    fn own_tenures() {
        let claims = Claims::default();
        assert!(!claims.is_own_tenure("a", 1));
        claims.tenure_started("a", 1);
        assert!(claims.is_own_tenure("a", 1));
        assert!(!claims.is_own_tenure("a", 2));
        assert!(!claims.is_own_tenure("b", 1));
        claims.tenure_unknown("a");
        assert!(claims.is_own_tenure("a", 2));
        claims.tenure_ended("a");
        assert!(!claims.is_own_tenure("a", 1));
        assert!(!claims.is_lost_release("a", 1));
        let lease = Duration::from_secs(60);
        claims.tenure_started("a", 3);
        claims.tenure_released("a", lease);
        assert!(!claims.is_own_tenure("a", 3), "released");
        assert!(claims.is_lost_release("a", 3));
        assert!(!claims.is_lost_release("a", 4), "another process's tenure under our id");
        claims.tenure_unknown("b");
        claims.tenure_released("b", lease);
        assert!(!claims.is_lost_release("b", 9), "a token never seen may be another process's");
        assert!(!claims.is_own_tenure("b", 9));
        // A released tenure expires within a lease duration; after that its record goes.
        claims.tenure_started("c", 5);
        claims.tenure_released("c", Duration::ZERO);
        assert!(!claims.is_lost_release("c", 5), "expired");
        claims.tenure_released("d", lease);
        assert!(!claims.own.lock().unwrap().contains_key("c"), "expired records are dropped");
        assert!(claims.own.lock().unwrap().contains_key("a"));
    }
}
