//! The one test suite every [`LeaseQueue`] and [`RunStore`] implementation
//! must pass: the embedded ones in this crate's unit tests, the NATS ones
//! against a real server.
//!
//! The suites panic on the first violation, naming the check. They make their
//! own runs, with ids unique to each call (time, process and a counter), so
//! they can share a server with other tests and with leftovers of earlier
//! runs. [`lease_queue_suite`] claims from the whole queue, though, so it needs
//! a queue (a stream) that nothing else claims from or publishes to while it
//! runs; it removes its leases when it is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Error, Lease, LeaseQueue, RunPhase, RunState, RunStore, ShardState, ShardStatus};

/// Checks every promise of [`LeaseQueue`]. `ttl` is the queue's lease TTL;
/// keep it small (a few hundred milliseconds), since the suite waits for
/// leases to expire. Takes a few TTLs to run.
pub async fn lease_queue_suite(queue: &dyn LeaseQueue, ttl: Duration) {
    let prefix = unique_prefix("lq");
    publish_is_idempotent(queue, &format!("{prefix}-idem")).await;
    claims_in_publication_order(queue, &format!("{prefix}-fifo")).await;
    claim_wakes_on_publish(queue, &format!("{prefix}-wake"), ttl).await;
    heartbeat_keeps_lease(queue, &format!("{prefix}-beat"), ttl).await;
    expired_lease_is_redelivered(queue, &format!("{prefix}-expire"), ttl).await;
    release_delays_lease(queue, &format!("{prefix}-release"), ttl).await;
    remove_run_removes_queued_and_claimed(
        queue,
        &format!("{prefix}-halt"),
        &format!("{prefix}-other"),
    )
    .await;
    pause_hides_run(
        queue,
        &format!("{prefix}-paused"),
        &format!("{prefix}-live"),
        ttl,
    )
    .await;
}

/// Checks every promise of [`RunStore`]. Safe to run against a store shared
/// with other tests.
pub async fn run_store_suite(store: &dyn RunStore) {
    let prefix = unique_prefix("rs");
    create_and_read_run(store, &prefix).await;
    update_run_is_compare_and_set(store, &prefix).await;
    finished_phase_clears_unfinished_run(store, &prefix).await;
    update_shard_applies_and_counts_concurrently(store, &prefix).await;
    shards_are_sorted(store, &prefix).await;
    pace_is_shared_per_run(store, &prefix).await;
}

/// Ids no other call (here, in another process, or in an earlier run against
/// the same server) uses.
fn unique_prefix(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conf-{kind}-{nanos:x}-{}-{count}", std::process::id())
}

/// A short wait for "nothing is available": long enough that an available
/// lease would have come, short enough to keep the suite fast.
fn short(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(20))
}

/// Generous: implementations may notice expiry or delay late, never early.
fn long(ttl: Duration) -> Duration {
    ttl * 10 + Duration::from_secs(2)
}

async fn claim_expect(
    queue: &dyn LeaseQueue,
    wait: Duration,
    run: &str,
    shard: &str,
    check: &str,
) -> Lease {
    let lease = queue
        .claim(wait)
        .await
        .unwrap_or_else(|e| panic!("{check}: claim failed: {e}"))
        .unwrap_or_else(|| panic!("{check}: expected lease {run}/{shard}, claim returned none"));
    assert_eq!(
        (lease.run_id.as_str(), lease.shard.as_str()),
        (run, shard),
        "{check}: claimed the wrong lease"
    );
    lease
}

async fn claim_none(queue: &dyn LeaseQueue, wait: Duration, check: &str) {
    let claimed = queue
        .claim(wait)
        .await
        .unwrap_or_else(|e| panic!("{check}: claim failed: {e}"));
    assert!(
        claimed.is_none(),
        "{check}: expected no lease, claimed {claimed:?}"
    );
}

async fn pending(queue: &dyn LeaseQueue, run: &str, expected: (u64, u64), check: &str) {
    let counts = queue
        .pending(run)
        .await
        .unwrap_or_else(|e| panic!("{check}: pending failed: {e}"));
    assert_eq!(
        counts, expected,
        "{check}: pending (queued, claimed) of {run}"
    );
}

fn assert_not_found<T: std::fmt::Debug>(result: crate::Result<T>, check: &str) {
    assert!(
        matches!(result, Err(Error::NotFound { .. })),
        "{check}: expected NotFound, got {result:?}"
    );
}

async fn publish_is_idempotent(queue: &dyn LeaseQueue, run: &str) {
    let check = "publish idempotence";
    queue.publish(run, "s-0").await.unwrap();
    queue.publish(run, "s-0").await.unwrap();
    pending(queue, run, (1, 0), check).await;

    let lease = claim_expect(queue, Duration::from_secs(5), run, "s-0", check).await;
    assert_eq!(lease.delivery, 1, "{check}: first delivery");
    claim_none(queue, Duration::ZERO, "publishing twice queued one lease").await;
    queue.publish(run, "s-0").await.unwrap();
    pending(
        queue,
        run,
        (0, 1),
        "publishing a claimed lease does nothing",
    )
    .await;
    claim_none(
        queue,
        Duration::ZERO,
        "publishing a claimed lease does nothing",
    )
    .await;

    queue.ack(&lease).await.unwrap();
    pending(queue, run, (0, 0), "ack removes the lease").await;
    assert_not_found(queue.ack(&lease).await, "acking twice");
    assert_not_found(queue.heartbeat(&lease).await, "heartbeat after ack");

    // Acked means gone: the same shard can be published again, as a fresh lease.
    queue.publish(run, "s-0").await.unwrap();
    pending(queue, run, (1, 0), "publish after ack").await;
    let again = claim_expect(
        queue,
        Duration::from_secs(5),
        run,
        "s-0",
        "publish after ack",
    )
    .await;
    assert_eq!(
        again.delivery, 1,
        "publish after ack: a new lease starts at delivery 1"
    );
    assert_ne!(
        again.token, lease.token,
        "publish after ack: tokens identify deliveries"
    );
    queue.ack(&again).await.unwrap();
}

async fn claims_in_publication_order(queue: &dyn LeaseQueue, run: &str) {
    let check = "FIFO claim";
    let shards = ["s-2", "s-0", "s-1", "s-10"];
    for shard in shards {
        queue.publish(run, shard).await.unwrap();
    }
    pending(queue, run, (4, 0), check).await;
    let mut leases = Vec::new();
    for shard in shards {
        leases.push(claim_expect(queue, Duration::from_secs(5), run, shard, check).await);
    }
    pending(queue, run, (0, 4), check).await;
    claim_none(queue, Duration::from_millis(50), "every lease claimed").await;
    for (i, lease) in leases.iter().enumerate() {
        assert!(
            leases[..i].iter().all(|other| other.token != lease.token),
            "{check}: tokens are unique"
        );
        queue.ack(lease).await.unwrap();
    }
    pending(queue, run, (0, 0), check).await;
}

async fn claim_wakes_on_publish(queue: &dyn LeaseQueue, run: &str, ttl: Duration) {
    let check = "waiting claim wakes on publish";
    let start = Instant::now();
    let (claimed, published) = tokio::join!(queue.claim(long(ttl)), async {
        tokio::time::sleep(short(ttl)).await;
        queue.publish(run, "s-0").await
    });
    published.unwrap();
    let lease = claimed
        .unwrap()
        .unwrap_or_else(|| panic!("{check}: claim returned none"));
    assert_eq!(
        (lease.run_id.as_str(), lease.shard.as_str()),
        (run, "s-0"),
        "{check}"
    );
    assert!(
        start.elapsed() < long(ttl),
        "{check}: woke only at the end of its wait"
    );
    queue.ack(&lease).await.unwrap();
}

async fn heartbeat_keeps_lease(queue: &dyn LeaseQueue, run: &str, ttl: Duration) {
    let check = "heartbeat keeps the lease past its TTL";
    queue.publish(run, "s-0").await.unwrap();
    let lease = claim_expect(queue, Duration::from_secs(5), run, "s-0", check).await;
    let start = Instant::now();
    while start.elapsed() < ttl * 3 {
        queue
            .heartbeat(&lease)
            .await
            .unwrap_or_else(|e| panic!("{check}: heartbeat failed: {e}"));
        // Waiting here is also the pause between heartbeats (well under the TTL).
        claim_none(queue, short(ttl), check).await;
    }
    pending(queue, run, (0, 1), check).await;
    queue
        .ack(&lease)
        .await
        .unwrap_or_else(|e| panic!("{check}: ack failed: {e}"));
}

async fn expired_lease_is_redelivered(queue: &dyn LeaseQueue, run: &str, ttl: Duration) {
    let check = "un-heartbeated lease is redelivered";
    queue.publish(run, "s-0").await.unwrap();
    let first = claim_expect(queue, Duration::from_secs(5), run, "s-0", check).await;
    assert_eq!(first.delivery, 1, "{check}: first delivery");
    claim_none(queue, short(ttl), "not redelivered before its TTL").await;

    let second = claim_expect(queue, long(ttl), run, "s-0", check).await;
    assert_eq!(second.delivery, 2, "{check}: second delivery");
    assert_ne!(
        second.token, first.token,
        "{check}: a new delivery has a new token"
    );
    assert_not_found(
        queue.ack(&first).await,
        "ack with the expired delivery's token",
    );
    assert_not_found(
        queue.heartbeat(&first).await,
        "heartbeat with the expired delivery's token",
    );
    assert_not_found(
        queue.release(&first, Duration::ZERO).await,
        "release with the expired delivery's token",
    );
    pending(queue, run, (0, 1), check).await;
    queue
        .ack(&second)
        .await
        .unwrap_or_else(|e| panic!("{check}: ack of the new delivery failed: {e}"));
    pending(queue, run, (0, 0), check).await;
}

async fn release_delays_lease(queue: &dyn LeaseQueue, run: &str, ttl: Duration) {
    let check = "release with delay";
    queue.publish(run, "s-0").await.unwrap();
    let first = claim_expect(queue, Duration::from_secs(5), run, "s-0", check).await;
    let delay = ttl;
    let released_at = Instant::now();
    queue.release(&first, delay).await.unwrap();
    pending(queue, run, (1, 0), "a released lease is queued").await;
    claim_none(queue, delay / 3, "a released lease waits for its delay").await;

    let second = claim_expect(queue, long(ttl), run, "s-0", check).await;
    // A little slack for clocks; early by more than that is a violation.
    assert!(
        released_at.elapsed() >= delay.mul_f64(0.9),
        "{check}: claimed after {:?}, before the delay of {delay:?}",
        released_at.elapsed()
    );
    assert_ne!(
        second.token, first.token,
        "{check}: a new delivery has a new token"
    );
    assert_not_found(
        queue.ack(&first).await,
        "ack with the released delivery's token",
    );

    // With no delay it is available at once.
    queue.release(&second, Duration::ZERO).await.unwrap();
    let third = claim_expect(
        queue,
        Duration::from_secs(5),
        run,
        "s-0",
        "release without delay",
    )
    .await;
    queue.ack(&third).await.unwrap();
    pending(queue, run, (0, 0), check).await;
}

async fn remove_run_removes_queued_and_claimed(queue: &dyn LeaseQueue, run: &str, other: &str) {
    let check = "remove_run";
    queue.publish(run, "s-0").await.unwrap();
    queue.publish(run, "s-1").await.unwrap();
    queue.publish(run, "s-2").await.unwrap();
    queue.publish(other, "s-0").await.unwrap();
    let held = claim_expect(queue, Duration::from_secs(5), run, "s-0", check).await;
    pending(queue, run, (2, 1), check).await;

    assert_eq!(
        queue.remove_run(run).await.unwrap(),
        3,
        "{check}: removes queued and claimed"
    );
    pending(queue, run, (0, 0), check).await;
    assert_not_found(queue.heartbeat(&held).await, "heartbeat of a removed lease");
    assert_not_found(queue.ack(&held).await, "ack of a removed lease");
    assert_eq!(
        queue.remove_run(run).await.unwrap(),
        0,
        "{check}: nothing left to remove"
    );

    // Other runs keep their leases.
    pending(queue, other, (1, 0), "remove_run leaves other runs alone").await;
    let lease = claim_expect(
        queue,
        Duration::from_secs(5),
        other,
        "s-0",
        "remove_run leaves other runs alone",
    )
    .await;
    queue.ack(&lease).await.unwrap();
    claim_none(
        queue,
        Duration::from_millis(50),
        "removed leases are not claimed",
    )
    .await;
}

async fn pause_hides_run(queue: &dyn LeaseQueue, paused: &str, live: &str, ttl: Duration) {
    let check = "pause";
    queue.publish(paused, "s-0").await.unwrap();
    queue.publish(paused, "s-1").await.unwrap();
    queue.publish(live, "s-0").await.unwrap();
    let held = claim_expect(queue, Duration::from_secs(5), paused, "s-0", check).await;

    queue.set_paused(paused, true).await.unwrap();
    let other = claim_expect(
        queue,
        Duration::from_secs(5),
        live,
        "s-0",
        "pause skips the paused run",
    )
    .await;
    claim_none(queue, short(ttl), "pause hides the run's leases").await;
    pending(queue, paused, (1, 1), check).await;
    // Pausing stops handing out leases; work already handed out may finish.
    queue
        .heartbeat(&held)
        .await
        .unwrap_or_else(|e| panic!("{check}: heartbeat of a held lease: {e}"));
    queue
        .ack(&held)
        .await
        .unwrap_or_else(|e| panic!("{check}: ack of a held lease: {e}"));
    queue.ack(&other).await.unwrap();

    let start = Instant::now();
    let (claimed, resumed) = tokio::join!(queue.claim(long(ttl)), async {
        tokio::time::sleep(short(ttl)).await;
        queue.set_paused(paused, false).await
    });
    resumed.unwrap();
    let lease = claimed
        .unwrap()
        .unwrap_or_else(|| panic!("resume shows the run's leases again: claim returned none"));
    assert_eq!(
        (lease.run_id.as_str(), lease.shard.as_str()),
        (paused, "s-1"),
        "resume shows the run's leases again"
    );
    assert!(start.elapsed() < long(ttl), "resume wakes a waiting claim");
    queue.ack(&lease).await.unwrap();
    pending(queue, paused, (0, 0), check).await;
}

fn run_state(run_id: &str, name: &str, phase: RunPhase) -> RunState {
    RunState {
        run_id: run_id.to_owned(),
        name: name.to_owned(),
        phase,
        reason: None,
        version: None,
        updated_at: chrono::Utc::now(),
        target: None,
    }
}

async fn create_and_read_run(store: &dyn RunStore, prefix: &str) {
    let check = "create_run";
    let run_id = format!("{prefix}-create");
    let name = format!("{prefix}-create-name");
    let state = run_state(&run_id, &name, RunPhase::Planned);
    assert_eq!(
        store.create_run(&state).await.unwrap(),
        1,
        "{check}: revisions start at 1"
    );
    let stored = store
        .run(&run_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{check}: run not found"));
    assert_eq!(
        (stored.value, stored.revision),
        (state.clone(), 1),
        "{check}: read back"
    );

    let twice = store.create_run(&state).await;
    assert!(
        matches!(twice, Err(Error::AlreadyExists { .. })),
        "create_run twice: expected AlreadyExists, got {twice:?}"
    );
    assert_eq!(
        store.run(&run_id).await.unwrap().map(|v| v.revision),
        Some(1),
        "create_run twice changes nothing"
    );
    assert_eq!(
        store.unfinished_run(&name).await.unwrap(),
        Some(run_id),
        "{check}: records the name's unfinished run"
    );

    assert_eq!(
        store.run(&format!("{prefix}-missing")).await.unwrap(),
        None,
        "run of an unknown id"
    );
    assert_eq!(
        store
            .unfinished_run(&format!("{prefix}-missing"))
            .await
            .unwrap(),
        None,
        "unfinished_run of an unknown name"
    );
}

async fn update_run_is_compare_and_set(store: &dyn RunStore, prefix: &str) {
    let check = "update_run compare-and-set";
    let run_id = format!("{prefix}-cas");
    let mut state = run_state(&run_id, &format!("{prefix}-cas-name"), RunPhase::Planned);
    store.create_run(&state).await.unwrap();

    state.phase = RunPhase::Running;
    assert_eq!(
        store.update_run(&state, 1).await.unwrap(),
        2,
        "{check}: one more per write"
    );

    // Two writers read revision 2; only the first wins (halt versus finalize).
    let mut halt = state.clone();
    halt.phase = RunPhase::Halted;
    halt.reason = Some("operator".to_owned());
    let mut finalize = state.clone();
    finalize.phase = RunPhase::Finalizing;
    assert_eq!(store.update_run(&finalize, 2).await.unwrap(), 3, "{check}");
    match store.update_run(&halt, 2).await {
        Err(Error::Conflict {
            key,
            expected,
            found,
        }) => {
            assert_eq!((expected, found), (2, 3), "{check}: conflict revisions");
            assert!(
                key.contains(&run_id),
                "{check}: conflict names the run, got {key}"
            );
        }
        other => panic!("{check}: expected Conflict, got {other:?}"),
    }
    let stored = store.run(&run_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.value.phase, stored.revision),
        (RunPhase::Finalizing, 3),
        "{check}: the loser wrote nothing"
    );

    let missing = store
        .update_run(
            &run_state(&format!("{prefix}-cas-missing"), "x", RunPhase::Running),
            1,
        )
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "update_run of an unknown run: expected NotFound, got {missing:?}"
    );
}

async fn finished_phase_clears_unfinished_run(store: &dyn RunStore, prefix: &str) {
    let check = "unfinished_run";
    let name = format!("{prefix}-name");
    let first = format!("{prefix}-first");
    let mut state = run_state(&first, &name, RunPhase::Planned);
    store.create_run(&state).await.unwrap();
    assert_eq!(
        store.unfinished_run(&name).await.unwrap().as_deref(),
        Some(first.as_str()),
        "{check}"
    );

    let mut revision = 1;
    for phase in [
        RunPhase::Running,
        RunPhase::Paused,
        RunPhase::Running,
        RunPhase::Finalizing,
    ] {
        state.phase = phase;
        revision = store.update_run(&state, revision).await.unwrap();
        assert_eq!(
            store.unfinished_run(&name).await.unwrap().as_deref(),
            Some(first.as_str()),
            "{check}: still unfinished when {phase}"
        );
    }
    state.phase = RunPhase::Committed;
    state.version = Some(7);
    revision = store.update_run(&state, revision).await.unwrap();
    assert_eq!(revision, 6, "{check}: one revision per write");
    assert_eq!(
        store.unfinished_run(&name).await.unwrap(),
        None,
        "{check}: cleared when committed"
    );
    let stored = store.run(&first).await.unwrap().unwrap();
    assert_eq!(
        (stored.value.phase, stored.value.version),
        (RunPhase::Committed, Some(7)),
        "{check}: committed state kept"
    );

    // The next run of the name maps, and finishing it clears it again.
    let second = format!("{prefix}-second");
    let mut state = run_state(&second, &name, RunPhase::Running);
    store.create_run(&state).await.unwrap();
    assert_eq!(
        store.unfinished_run(&name).await.unwrap().as_deref(),
        Some(second.as_str()),
        "{check}: the next run"
    );
    state.phase = RunPhase::Refused;
    state.reason = Some("diff over limits".to_owned());
    store.update_run(&state, 1).await.unwrap();
    assert_eq!(
        store.unfinished_run(&name).await.unwrap(),
        None,
        "{check}: cleared when refused"
    );
}

async fn update_shard_applies_and_counts_concurrently(store: &dyn RunStore, prefix: &str) {
    let check = "update_shard";
    let run_id = format!("{prefix}-shards");
    assert_eq!(
        store.shard(&run_id, "s-0").await.unwrap(),
        None,
        "{check}: no state before the first update"
    );

    let started = store
        .update_shard(&run_id, "s-0", &|shard| {
            shard.status = ShardStatus::Running;
            shard.worker = Some("w-1".to_owned());
        })
        .await
        .unwrap();
    let expected = ShardState {
        status: ShardStatus::Running,
        worker: Some("w-1".to_owned()),
        ..ShardState::default()
    };
    assert_eq!(started, expected, "{check}: starts from the default state");
    assert_eq!(
        store.shard(&run_id, "s-0").await.unwrap(),
        Some(expected),
        "{check}: read back"
    );

    let increments = (0..20).map(|_| {
        store.update_shard(&run_id, "s-0", &|shard| {
            shard.failures += 1;
            shard.events += 10;
        })
    });
    for result in join_all(increments.collect()).await {
        result.unwrap_or_else(|e| panic!("{check}: concurrent update failed: {e}"));
    }
    let shard = store.shard(&run_id, "s-0").await.unwrap().unwrap();
    assert_eq!(
        (shard.failures, shard.events),
        (20, 200),
        "{check}: every concurrent update counted"
    );
    assert_eq!(
        shard.worker.as_deref(),
        Some("w-1"),
        "{check}: other fields kept"
    );
}

async fn shards_are_sorted(store: &dyn RunStore, prefix: &str) {
    let check = "shards";
    let run_id = format!("{prefix}-sorted");
    for shard in ["s-2", "s-10", "s-0", "s-1"] {
        store
            .update_shard(&run_id, shard, &|state| state.status = ShardStatus::Done)
            .await
            .unwrap();
    }
    let names: Vec<String> = store
        .shards(&run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        ["s-0", "s-1", "s-10", "s-2"],
        "{check}: sorted by name"
    );
    assert!(
        store
            .shards(&format!("{prefix}-none"))
            .await
            .unwrap()
            .is_empty(),
        "{check}: none for an unknown run"
    );
    // Shards of another run do not leak in.
    assert_eq!(
        store
            .shards(&format!("{prefix}-shards"))
            .await
            .unwrap()
            .len(),
        1,
        "{check}: per run"
    );
}

/// Polls all futures in one task, so their awaits interleave: enough to make
/// store writes race, without a `'static` bound or another dependency.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("polled to completion"))
        .collect()
}

/// Reservations of one run queue behind each other at the pace; another run's
/// schedule is its own; a pace of 0 never waits.
async fn pace_is_shared_per_run(store: &dyn RunStore, prefix: &str) {
    let check = "pace";
    let run = format!("{prefix}-pace");
    let other = format!("{prefix}-pace-other");
    // 1,000 events a second: 500 events last 0.5 s.
    let first = store.pace(&run, 500, 1_000).await.unwrap();
    assert_eq!(
        first,
        Duration::ZERO,
        "{check}: the first reservation waits for nothing"
    );
    let second = store.pace(&run, 500, 1_000).await.unwrap();
    assert!(
        second > Duration::from_millis(250) && second <= Duration::from_millis(500),
        "{check}: the second reservation starts where the first ends, about 0.5 s from now; waits {second:?}"
    );
    let third = store.pace(&run, 1_000, 1_000).await.unwrap();
    assert!(
        third > Duration::from_millis(750) && third <= Duration::from_secs(1),
        "{check}: reservations queue up: the third starts about 1 s from now; waits {third:?}"
    );
    assert_eq!(
        store.pace(&other, 500, 1_000).await.unwrap(),
        Duration::ZERO,
        "{check}: another run's pace is its own"
    );
    assert_eq!(
        store.pace(&run, 1_000_000, 0).await.unwrap(),
        Duration::ZERO,
        "{check}: a pace of 0 is unlimited"
    );
}
