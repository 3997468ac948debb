//! The conformance suites against the embedded implementation, plus the
//! details only the embedded one promises.

use std::time::Duration;

use crate::{
    EmbeddedQueue, EmbeddedStore, Error, LeaseQueue, RunPhase, RunState, RunStore, ShardState,
    ShardStatus, conformance,
};

const TTL: Duration = Duration::from_millis(300);

#[tokio::test]
async fn embedded_queue_passes_the_suite() {
    let queue = EmbeddedQueue::new(TTL);
    conformance::lease_queue_suite(&queue, queue.ttl()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_queue_passes_the_suite_on_many_threads() {
    let queue = EmbeddedQueue::new(TTL);
    conformance::lease_queue_suite(&queue, TTL).await;
}

#[tokio::test]
async fn embedded_store_passes_the_suite() {
    conformance::run_store_suite(&EmbeddedStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_counts_updates_from_many_tasks() {
    let store = EmbeddedStore::new();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update_shard("r", "s", &|shard| shard.failures += 1)
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.shard("r", "s").await.unwrap().unwrap().failures, 20);
}

#[tokio::test]
async fn clones_share_the_queue() {
    let queue = EmbeddedQueue::new(TTL);
    let worker = queue.clone();
    let (claimed, published) = tokio::join!(worker.claim(Duration::from_secs(5)), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.publish("r", "s").await
    });
    published.unwrap();
    assert_eq!(claimed.unwrap().unwrap().shard, "s");
    assert_eq!(queue.pending("r").await.unwrap(), (0, 1));
}

#[tokio::test]
async fn release_keeps_the_delivery_number_and_expiry_bumps_it() {
    let queue = EmbeddedQueue::new(TTL);
    queue.publish("r", "s").await.unwrap();
    let first = queue.claim(Duration::ZERO).await.unwrap().unwrap();
    queue.release(&first, Duration::ZERO).await.unwrap();
    let second = queue.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(second.delivery, 1, "a release is not an attempt");
    assert_ne!(second.token, first.token);

    // The claim waits out the expiry (real time: the TTL is short).
    let third = queue.claim(TTL * 2).await.unwrap().unwrap();
    assert_eq!(third.delivery, 2);
    assert!(matches!(queue.ack(&second).await, Err(Error::NotFound { key }) if key == "r/s"));
    queue.ack(&third).await.unwrap();
}

#[tokio::test]
async fn expired_lease_keeps_its_place_in_line() {
    let queue = EmbeddedQueue::new(TTL);
    queue.publish("r", "a").await.unwrap();
    let _lost = queue.claim(Duration::ZERO).await.unwrap().unwrap();
    tokio::time::sleep(TTL * 2).await;
    queue.publish("r", "b").await.unwrap();
    let next = queue.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!((next.shard.as_str(), next.delivery), ("a", 2));
}

#[tokio::test]
async fn claim_without_wait_returns_at_once() {
    let queue = EmbeddedQueue::new(TTL);
    assert_eq!(queue.claim(Duration::ZERO).await.unwrap(), None);
}

#[tokio::test]
async fn store_revisions_count_writes_per_key() {
    let store = EmbeddedStore::new();
    let mut state = RunState {
        run_id: "r".to_owned(),
        name: "n".to_owned(),
        phase: RunPhase::Committed,
        reason: None,
        version: Some(1),
        updated_at: chrono::Utc::now(),
        target: None,
    };
    // A run created already finished never becomes its name's unfinished run.
    assert_eq!(store.create_run(&state).await.unwrap(), 1);
    assert_eq!(store.unfinished_run("n").await.unwrap(), None);

    state.run_id = "other".to_owned();
    state.phase = RunPhase::Running;
    assert_eq!(
        store.create_run(&state).await.unwrap(),
        1,
        "revisions are per key"
    );
    // Finishing a run the name no longer maps to leaves the mapping alone.
    let mut old = store.run("r").await.unwrap().unwrap();
    old.value.phase = RunPhase::Halted;
    assert_eq!(store.update_run(&old.value, old.revision).await.unwrap(), 2);
    assert_eq!(
        store.unfinished_run("n").await.unwrap().as_deref(),
        Some("other")
    );
}

#[test]
fn errors_read_well_and_know_if_retryable() {
    let conflict = Error::Conflict {
        key: "r-1".to_owned(),
        expected: 2,
        found: 3,
    };
    assert_eq!(
        conflict.to_string(),
        "run state r-1 changed concurrently (expected revision 2, found 3)"
    );
    assert!(!conflict.is_retryable());
    assert!(
        !Error::NotFound {
            key: "r-1/s-0".to_owned()
        }
        .is_retryable()
    );
    assert!(
        !Error::AlreadyExists {
            key: "r-1".to_owned()
        }
        .is_retryable()
    );
    let invalid = Error::Invalid {
        key: "key run.r-1 in bucket REPLAYFLEET_RUNS".to_owned(),
        message: "not the JSON this crate writes: EOF".to_owned(),
    };
    assert!(!invalid.is_retryable());
    assert_eq!(
        invalid.to_string(),
        "key run.r-1 in bucket REPLAYFLEET_RUNS is invalid: not the JSON this crate writes: EOF"
    );
    let unavailable = Error::Unavailable {
        message: "connection refused".to_owned(),
    };
    assert!(unavailable.is_retryable());
    assert_eq!(
        unavailable.to_string(),
        "queue or store unavailable: connection refused"
    );
}

#[test]
fn phases_serialize_as_their_names() {
    let phases = [
        RunPhase::Planned,
        RunPhase::Running,
        RunPhase::Paused,
        RunPhase::Halted,
        RunPhase::Finalizing,
        RunPhase::Committed,
        RunPhase::Refused,
    ];
    for phase in phases {
        assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        assert_eq!(phase.to_string(), phase.as_str());
        let finished = matches!(
            phase,
            RunPhase::Halted | RunPhase::Committed | RunPhase::Refused
        );
        assert_eq!(phase.is_finished(), finished, "{phase}");
    }
}

#[test]
fn states_round_trip_through_json() {
    let run = RunState {
        run_id: "r".to_owned(),
        name: "orders".to_owned(),
        phase: RunPhase::Refused,
        reason: Some("changed_ratio 0.4 over 0.1".to_owned()),
        version: None,
        updated_at: chrono::Utc::now(),
        target: None,
    };
    let json = serde_json::to_string(&run).unwrap();
    assert_eq!(serde_json::from_str::<RunState>(&json).unwrap(), run);

    assert_eq!(ShardState::default().status, ShardStatus::Pending);
    let shard = ShardState {
        status: ShardStatus::Failed,
        failures: 3,
        ..ShardState::default()
    };
    let json = serde_json::to_value(&shard).unwrap();
    assert_eq!(json["status"], "failed");
    assert_eq!(serde_json::from_value::<ShardState>(json).unwrap(), shard);
}
