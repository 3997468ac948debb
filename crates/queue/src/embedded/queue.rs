//! The in-process lease queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::lock;
use crate::{Error, Lease, LeaseQueue, Result};

/// The lease queue in memory. Leases are claimed in the order they were
/// published; an expired or released lease keeps its place in that order.
///
/// Cloning gives another handle on the same queue.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ttl: Duration,
    state: Mutex<QueueState>,
    /// Wakes waiting claims when a lease may have become available
    /// (published, released, resumed); expiry is timed by the claims themselves.
    changed: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Unacked leases by publication sequence: an in-order scan finds the
    /// oldest available lease first.
    leases: BTreeMap<u64, Entry>,
    /// (run, shard) -> sequence, for idempotent publish and token checks.
    by_key: HashMap<(String, String), u64>,
    paused: HashSet<String>,
    next_seq: u64,
    /// Makes every token unique, even for the same delivery number of a released lease.
    next_token: u64,
}

#[derive(Debug)]
struct Entry {
    run_id: String,
    shard: String,
    /// The delivery number of the current (if claimed) or next delivery.
    delivery: u32,
    hold: Hold,
}

#[derive(Debug)]
enum Hold {
    Queued { available_at: Instant },
    Claimed { token: String, expires_at: Instant },
}

impl EmbeddedQueue {
    /// An empty queue whose claimed leases expire `ttl` after their claim or
    /// last heartbeat.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl,
                state: Mutex::new(QueueState::default()),
                changed: Notify::new(),
            }),
        }
    }

    /// How long a claimed lease lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Runs `f` on the state after expiring overdue leases, so every operation
    /// sees expiry as if it had happened on time.
    fn with_state<R>(&self, f: impl FnOnce(&mut QueueState, Instant) -> R) -> R {
        let mut state = lock(&self.inner.state);
        let now = Instant::now();
        state.expire(now);
        f(&mut state, now)
    }
}

impl QueueState {
    fn expire(&mut self, now: Instant) {
        for entry in self.leases.values_mut() {
            if let Hold::Claimed { expires_at, .. } = entry.hold
                && expires_at <= now
            {
                tracing::debug!(
                    run_id = %entry.run_id,
                    shard = %entry.shard,
                    delivery = entry.delivery,
                    "lease expired without heartbeat; available again"
                );
                entry.delivery += 1;
                entry.hold = Hold::Queued {
                    available_at: expires_at,
                };
            }
        }
    }

    /// Claims the oldest available lease, or says when one may next become
    /// available (`None`: not before something changes).
    fn claim_next(&mut self, now: Instant, ttl: Duration) -> Result<Lease, Option<Instant>> {
        let mut next_wake: Option<Instant> = None;
        let mut found = None;
        for (&seq, entry) in &self.leases {
            if self.paused.contains(&entry.run_id) {
                continue;
            }
            let at = match entry.hold {
                Hold::Queued { available_at } if available_at <= now => {
                    found = Some(seq);
                    break;
                }
                Hold::Queued { available_at } => available_at,
                Hold::Claimed { expires_at, .. } => expires_at,
            };
            next_wake = Some(next_wake.map_or(at, |w| w.min(at)));
        }
        let Some(seq) = found else {
            return Err(next_wake);
        };
        self.next_token += 1;
        let entry = self.leases.get_mut(&seq).expect("found above");
        let token = format!("{seq}.{}.{}", entry.delivery, self.next_token);
        entry.hold = Hold::Claimed {
            token: token.clone(),
            expires_at: now + ttl,
        };
        Ok(Lease {
            run_id: entry.run_id.clone(),
            shard: entry.shard.clone(),
            delivery: entry.delivery,
            token,
        })
    }

    /// The entry of the lease if this delivery still holds it.
    fn held(&mut self, lease: &Lease) -> Result<(u64, &mut Entry)> {
        let not_found = || Error::NotFound {
            key: format!("{}/{}", lease.run_id, lease.shard),
        };
        let seq = *self
            .by_key
            .get(&(lease.run_id.clone(), lease.shard.clone()))
            .ok_or_else(not_found)?;
        let entry = self.leases.get_mut(&seq).ok_or_else(not_found)?;
        match &entry.hold {
            Hold::Claimed { token, .. } if *token == lease.token => Ok((seq, entry)),
            _ => Err(not_found()),
        }
    }
}

#[async_trait::async_trait]
impl LeaseQueue for EmbeddedQueue {
    async fn publish(&self, run_id: &str, shard: &str) -> Result<()> {
        let published = self.with_state(|state, now| {
            let key = (run_id.to_owned(), shard.to_owned());
            if state.by_key.contains_key(&key) {
                return false;
            }
            state.next_seq += 1;
            let seq = state.next_seq;
            state.by_key.insert(key, seq);
            state.leases.insert(
                seq,
                Entry {
                    run_id: run_id.to_owned(),
                    shard: shard.to_owned(),
                    delivery: 1,
                    hold: Hold::Queued { available_at: now },
                },
            );
            true
        });
        if published {
            self.inner.changed.notify_waiters();
        }
        Ok(())
    }

    fn claim_is_cancel_safe(&self) -> bool {
        // A lease is taken inside one lock, after the last await.
        true
    }

    async fn claim(&self, wait: Duration) -> Result<Option<Lease>> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking at the state, so a publish between the
            // look and the wait still wakes this claim.
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let next_wake =
                match self.with_state(|state, now| state.claim_next(now, self.inner.ttl)) {
                    Ok(lease) => return Ok(Some(lease)),
                    Err(next_wake) => next_wake,
                };
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let until = next_wake.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<()> {
        let ttl = self.inner.ttl;
        self.with_state(|state, now| {
            let (_, entry) = state.held(lease)?;
            if let Hold::Claimed { expires_at, .. } = &mut entry.hold {
                *expires_at = now + ttl;
            }
            Ok(())
        })
    }

    async fn ack(&self, lease: &Lease) -> Result<()> {
        self.with_state(|state, _| {
            let (seq, _) = state.held(lease)?;
            state.leases.remove(&seq);
            state
                .by_key
                .remove(&(lease.run_id.clone(), lease.shard.clone()));
            Ok(())
        })
    }

    async fn release(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.with_state(|state, now| {
            let (_, entry) = state.held(lease)?;
            entry.hold = Hold::Queued {
                available_at: now + delay,
            };
            Ok(())
        })?;
        // Waiting claims recompute their wake-up time, which now includes this lease.
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn remove_run(&self, run_id: &str) -> Result<u64> {
        Ok(self.with_state(|state, _| {
            let before = state.leases.len();
            state.leases.retain(|_, entry| entry.run_id != run_id);
            state.by_key.retain(|(run, _), _| run != run_id);
            (before - state.leases.len()) as u64
        }))
    }

    async fn set_paused(&self, run_id: &str, paused: bool) -> Result<()> {
        self.with_state(|state, _| {
            if paused {
                state.paused.insert(run_id.to_owned());
            } else {
                state.paused.remove(run_id);
            }
        });
        if !paused {
            self.inner.changed.notify_waiters();
        }
        Ok(())
    }

    async fn pending(&self, run_id: &str) -> Result<(u64, u64)> {
        Ok(self.with_state(|state, _| {
            state
                .leases
                .values()
                .filter(|entry| entry.run_id == run_id)
                .fold((0, 0), |(queued, claimed), entry| match entry.hold {
                    Hold::Queued { .. } => (queued + 1, claimed),
                    Hold::Claimed { .. } => (queued, claimed + 1),
                })
        }))
    }
}
