//! The lease queue and run-state store on a real NATS server: the conformance
//! suites, restarts, and what only the NATS implementation has to get right.
//! Every test starts its own server.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use replayfleet_queue::{
    Error, LeaseQueue, NatsQueue, NatsQueueOptions, NatsStore, NatsStoreOptions, RunPhase,
    RunState, RunStore, async_nats, conformance,
};
use replayfleet_testkit::NatsServer;

/// Short, since the suite waits for leases to expire; long enough for a
/// loaded two-core machine to heartbeat in time.
const TTL: Duration = Duration::from_millis(500);

fn options() -> NatsQueueOptions {
    NatsQueueOptions {
        ttl: TTL,
        paused_recheck: Duration::from_millis(100),
        ..NatsQueueOptions::default()
    }
}

async fn client(server: &NatsServer) -> Result<async_nats::Client> {
    async_nats::connect(server.url())
        .await
        .with_context(|| format!("connect to {}", server.url()))
}

async fn queue(server: &NatsServer) -> Result<NatsQueue> {
    Ok(NatsQueue::connect(client(server).await?, options()).await?)
}

async fn store(server: &NatsServer) -> Result<NatsStore> {
    Ok(NatsStore::connect(client(server).await?, NatsStoreOptions::default()).await?)
}

#[tokio::test]
async fn nats_queue_passes_the_suite() -> Result<()> {
    let server = NatsServer::start();
    let queue = queue(&server).await?;
    conformance::lease_queue_suite(&queue, queue.ttl()).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_queue_passes_the_suite_on_many_threads() -> Result<()> {
    let server = NatsServer::start();
    let queue = queue(&server).await?;
    conformance::lease_queue_suite(&queue, TTL).await;
    Ok(())
}

#[tokio::test]
async fn nats_store_passes_the_suite() -> Result<()> {
    let server = NatsServer::start();
    conformance::run_store_suite(&store(&server).await?).await;
    Ok(())
}

#[tokio::test]
async fn nats_queues_with_their_own_names_share_a_server() -> Result<()> {
    let server = NatsServer::start();
    let first = queue(&server).await?;
    let second = NatsQueue::connect(
        client(&server).await?,
        NatsQueueOptions {
            stream: "OTHER_LEASES".to_owned(),
            subject_prefix: "other.lease".to_owned(),
            consumer: "other-workers".to_owned(),
            state_bucket: "OTHER_LEASE_STATE".to_owned(),
            ..options()
        },
    )
    .await?;
    first.publish("r", "s").await?;
    assert_eq!(second.claim(Duration::from_millis(100)).await?, None);
    conformance::lease_queue_suite(&second, TTL).await;
    assert_eq!(first.pending("r").await?, (1, 0));
    Ok(())
}

#[tokio::test]
async fn nats_queue_counts_expiries_not_releases() -> Result<()> {
    let server = NatsServer::start();
    let queue = queue(&server).await?;
    // Ids that are not subject tokens as they are.
    let (run, shard) = ("run 1.a>*", "shard.0");
    queue.publish(run, shard).await?;
    let first = queue
        .claim(Duration::from_secs(5))
        .await?
        .context("first")?;
    assert_eq!((first.run_id.as_str(), first.shard.as_str()), (run, shard));
    queue.release(&first, Duration::ZERO).await?;
    let second = queue
        .claim(Duration::from_secs(5))
        .await?
        .context("second")?;
    assert_eq!(second.delivery, 1, "a release is not an attempt");

    // Left to expire: the next delivery is the second attempt.
    let third = queue.claim(TTL * 10).await?.context("third")?;
    assert_eq!(third.delivery, 2, "an expiry is an attempt");
    assert!(matches!(
        queue.heartbeat(&second).await,
        Err(Error::NotFound { key }) if key == format!("{run}/{shard}")
    ));

    // Pausing and resuming naks the lease behind the scenes; that is no attempt either.
    queue.release(&third, Duration::ZERO).await?;
    queue.set_paused(run, true).await?;
    assert_eq!(queue.claim(Duration::from_millis(300)).await?, None);
    queue.set_paused(run, false).await?;
    let fourth = queue
        .claim(Duration::from_secs(5))
        .await?
        .context("fourth")?;
    assert_eq!(fourth.delivery, 2);
    queue.ack(&fourth).await?;
    assert_eq!(queue.pending(run).await?, (0, 0));
    Ok(())
}

#[tokio::test]
async fn nats_queue_expired_lease_is_queued_before_it_is_claimed_again() -> Result<()> {
    let server = NatsServer::start();
    let queue = queue(&server).await?;
    queue.publish("r", "s").await?;
    let lost = queue
        .claim(Duration::from_secs(5))
        .await?
        .context("claim")?;
    assert_eq!(queue.pending("r").await?, (0, 1));
    tokio::time::sleep(TTL * 2).await;
    // Nobody claimed it again yet; it is queued all the same, and the old
    // holder can no longer act on it.
    assert_eq!(queue.pending("r").await?, (1, 0));
    assert!(matches!(
        queue.heartbeat(&lost).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        queue.ack(&lost).await,
        Err(Error::NotFound { .. })
    ));
    let again = queue
        .claim(Duration::from_secs(5))
        .await?
        .context("claim again")?;
    assert_eq!(again.delivery, 2);
    queue.ack(&again).await?;
    Ok(())
}

#[tokio::test]
async fn nats_claim_without_wait_sees_a_lease_just_published() -> Result<()> {
    let server = NatsServer::start();
    let queue = queue(&server).await?;
    for i in 0..30 {
        let shard = format!("s-{i}");
        queue.publish("r", &shard).await?;
        let lease = queue
            .claim(Duration::ZERO)
            .await?
            .with_context(|| format!("claim right after publishing {shard}"))?;
        assert_eq!(lease.shard, shard);
        queue.ack(&lease).await?;
    }
    let start = Instant::now();
    assert_eq!(queue.claim(Duration::ZERO).await?, None);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn nats_queue_opened_twice_is_one_queue() -> Result<()> {
    let server = NatsServer::start();
    let coordinator = queue(&server).await?;
    let worker = queue(&server).await?;
    let (claimed, published) = tokio::join!(worker.claim(Duration::from_secs(5)), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        coordinator.publish("r", "s").await
    });
    published?;
    let lease = claimed?.context("the worker's claim")?;
    assert_eq!(coordinator.pending("r").await?, (0, 1));
    worker.ack(&lease).await?;
    assert_eq!(coordinator.pending("r").await?, (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_loses_no_lease_and_no_run() -> Result<()> {
    let mut server = NatsServer::start();
    let queue = queue(&server).await?;
    let store = store(&server).await?;
    queue.publish("r", "a").await?;
    queue.publish("r", "b").await?;
    let held = queue
        .claim(Duration::from_secs(5))
        .await?
        .context("claim before the restart")?;
    assert_eq!(held.shard, "a", "claims follow publication order");
    let state = RunState {
        run_id: "r".to_owned(),
        name: "orders".to_owned(),
        phase: RunPhase::Running,
        reason: None,
        version: None,
        updated_at: chrono::Utc::now(),
        target: None,
    };
    store.create_run(&state).await?;
    store
        .update_shard("r", "a", &|shard| shard.failures += 1)
        .await?;

    let port = server.port();
    let store_dir = server.store_dir().to_owned();
    tokio::task::block_in_place(|| server.restart());
    assert_eq!(
        (server.port(), server.store_dir()),
        (port, store_dir.as_path())
    );

    // The same handles carry on once the client has reconnected: the lease
    // queued before the restart is claimable, and the one claimed before it
    // (never acked, so expired meanwhile) is handed out again as an attempt.
    let mut claimed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while claimed.len() < 2 {
        if Instant::now() > deadline {
            bail!("after the restart, claimed only {claimed:?}");
        }
        match queue.claim(Duration::from_secs(1)).await {
            Ok(Some(lease)) => claimed.push(lease),
            Ok(None) => {}
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => bail!("claim after the restart: {e}"),
        }
    }
    claimed.sort_by(|x, y| x.shard.cmp(&y.shard));
    let found: Vec<(&str, &str, u32)> = claimed
        .iter()
        .map(|l| (l.run_id.as_str(), l.shard.as_str(), l.delivery))
        .collect();
    assert_eq!(found, [("r", "a", 2), ("r", "b", 1)]);
    assert!(matches!(
        queue.ack(&held).await,
        Err(Error::NotFound { .. })
    ));
    for lease in &claimed {
        queue.ack(lease).await?;
    }
    assert_eq!(queue.pending("r").await?, (0, 0));

    let run = store
        .run("r")
        .await?
        .context("run state after the restart")?;
    assert_eq!((run.value, run.revision), (state, 1));
    assert_eq!(store.unfinished_run("orders").await?.as_deref(), Some("r"));
    assert_eq!(store.shard("r", "a").await?.map(|s| s.failures), Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_unreachable_is_retryable() -> Result<()> {
    let mut server = NatsServer::start();
    let queue = queue(&server).await?;
    tokio::task::block_in_place(|| server.stop());
    let err = queue
        .publish("r", "s")
        .await
        .expect_err("publish with the server down");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("REPLAYFLEET_LEASES"), "{err}");
    Ok(())
}
