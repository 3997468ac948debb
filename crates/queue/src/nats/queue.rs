//! The lease queue on a JetStream work-queue stream, and the state bucket
//! beside it (see [`NatsQueue`] for how they share the work).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{
    decode_json, decode_token, encode_json, encode_token, list_under, now_ms, open_bucket,
    unavailable,
};
use crate::{Error, Lease, LeaseQueue, Result};

/// The shortest pull, even for a claim that does not wait: the consumer can
/// learn of a message a moment after its publish was acknowledged, so a
/// no-wait fetch may miss a lease published just before.
const MIN_PULL_WAIT: Duration = Duration::from_millis(10);
/// The longest a claim sleeps when the server ends a pull early, so that it
/// does not spin.
const EARLY_END_PAUSE: Duration = Duration::from_millis(50);

/// Where [`NatsQueue`] keeps its leases and state, and how long a lease lives.
///
/// Every process of a fleet must use the same values. Two fleets (or two
/// tests) can share a server by using different names for all four places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsQueueOptions {
    /// The work-queue stream holding one message per unacked lease.
    pub stream: String,
    /// The stream's subjects are `<subject_prefix>.<run>.<shard>`; no other
    /// stream may use subjects under this prefix.
    pub subject_prefix: String,
    /// The durable pull consumer every worker claims through.
    pub consumer: String,
    /// The KV bucket recording who holds each lease and which runs are paused.
    pub state_bucket: String,
    /// How long a claimed lease lives without a heartbeat: the consumer's ack wait.
    pub ttl: Duration,
    /// How long a paused run's lease is set aside before a claim looks at it
    /// again: the longest a resumed run waits to be handed out.
    pub paused_recheck: Duration,
    /// Replicas of the stream and the bucket: 1 on a single server, 3 in a cluster.
    pub replicas: usize,
}

impl Default for NatsQueueOptions {
    fn default() -> Self {
        Self {
            stream: "REPLAYFLEET_LEASES".to_owned(),
            subject_prefix: "replayfleet.lease".to_owned(),
            consumer: "replayfleet-workers".to_owned(),
            state_bucket: "REPLAYFLEET_LEASE_STATE".to_owned(),
            ttl: Duration::from_secs(30),
            paused_recheck: Duration::from_secs(1),
            replicas: 1,
        }
    }
}

/// The lease queue on NATS JetStream.
///
/// JetStream gives the queue its durability, its order and its expiry: one
/// message per unacked lease on a work-queue stream, one durable pull consumer
/// shared by every worker, and an ack wait equal to the lease TTL, so a lease
/// that is not heartbeated (`+WPI`) is redelivered. A state bucket adds what
/// JetStream does not give, keyed by run and shard:
///
/// - **who holds a lease**: the delivery's ack reply subject is the lease
///   token, and the record names the token that holds the lease now.
///   Heartbeat, ack and release check it, so a worker whose delivery expired,
///   was acked or was removed gets `NotFound` instead of acting on another
///   worker's delivery.
/// - **the delivery number**: JetStream counts every redelivery, including
///   releases and the naks that skip paused runs; the record counts expiries only.
/// - **paused runs**: a claim that fetches a paused run's lease naks it for
///   [`NatsQueueOptions::paused_recheck`] and fetches the next one.
///
/// A publish is conditional on the subject holding no message
/// (`Nats-Expected-Last-Subject-Sequence: 0`), so publishing a queued or
/// claimed lease does nothing while publishing an acked one queues it afresh;
/// `Nats-Msg-Id` deduplication would refuse the latter for a whole window.
/// An ack is confirmed by the server (a double ack) and the message deleted
/// from the stream before it returns, so a republish right after it counts.
///
/// The record check and the server's own state are not one atomic step: a
/// worker whose TTL runs out in the instant between its check and its ack
/// still acks the message. That is the at-least-once window of any JetStream
/// consumer; replaying a shard is idempotent, and the record closes the window
/// to a few milliseconds.
///
/// A claim waits at least 10 ms even when asked not to wait: a no-wait pull
/// can miss a lease whose publish was acknowledged a moment before.
///
/// Cloning gives another handle on the same queue; every worker process opens
/// its own with [`NatsQueue::connect`].
#[derive(Clone)]
pub struct NatsQueue {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: stream::Stream,
    consumer: consumer::PullConsumer,
    state: kv::Store,
    options: NatsQueueOptions,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Who holds one lease, stored under `lease.<run>.<shard>` in the state bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    /// Stream sequence of the lease's message: a republished lease is another message.
    seq: u64,
    /// Consumer sequence of the delivery: later deliveries have larger ones.
    consumer_seq: u64,
    /// The delivery number handed out (see [`Lease::delivery`]).
    delivery: u32,
    /// The delivery's ack reply subject, which is also the lease token.
    token: String,
    /// Claimed (`true`) or released (`false`, queued again with the same delivery number).
    held: bool,
    /// When the holder's TTL runs out without a heartbeat, in Unix milliseconds.
    expires_ms: u64,
}

/// The message body, for people looking at the stream; claims read the subject.
#[derive(Serialize)]
struct LeaseBody<'a> {
    run_id: &'a str,
    shard: &'a str,
}

impl NatsQueue {
    /// Opens the queue: creates (or updates to these options) the stream, the
    /// durable consumer and the state bucket, so any process may be the first.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] if the server cannot be reached, [`Error::Invalid`]
    /// if it refuses the setup (JetStream disabled, a stream of that name with
    /// another retention, overlapping subjects).
    pub async fn connect(client: async_nats::Client, options: NatsQueueOptions) -> Result<Self> {
        if options.ttl.is_zero() {
            return Err(Error::Invalid {
                key: format!("consumer {}", options.consumer),
                message: "the lease ttl must be longer than zero".to_owned(),
            });
        }
        let jetstream = jetstream::new(client.clone());
        let subjects = format!("{}.>", options.subject_prefix);
        let stream_what = format!("set up stream {}", options.stream);
        jetstream
            .create_or_update_stream(stream::Config {
                name: options.stream.clone(),
                description: Some("replayfleet shard leases: one message per unacked lease".into()),
                subjects: vec![subjects.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::CreateStreamErrorKind::TimedOut
                | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
                | jetstream::context::CreateStreamErrorKind::Response
                | jetstream::context::CreateStreamErrorKind::ResponseParse => {
                    unavailable(&stream_what, e)
                }
                _ => Error::Invalid {
                    key: format!("stream {}", options.stream),
                    message: e.to_string(),
                },
            })?;
        let stream = jetstream
            .get_stream(&options.stream)
            .await
            .map_err(|e| unavailable(&stream_what, e))?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(options.consumer.clone()),
                description: Some("replayfleet workers claim leases here".into()),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: options.ttl,
                // A lease is retried until acked, released or removed: attempts
                // are counted (and limited) by the workers, not by the server.
                max_deliver: -1,
                // Paused runs' leases stay pending while they wait out their
                // nak delay; a limit here would let them starve every other run.
                max_ack_pending: -1,
                filter_subject: subjects,
                ..Default::default()
            })
            .await
            .map_err(|e| match e.kind() {
                stream::ConsumerErrorKind::TimedOut | stream::ConsumerErrorKind::Request => {
                    unavailable(
                        format!(
                            "set up consumer {} on stream {}",
                            options.consumer, options.stream
                        ),
                        e,
                    )
                }
                _ => Error::Invalid {
                    key: format!("consumer {} on stream {}", options.consumer, options.stream),
                    message: e.to_string(),
                },
            })?;
        let state = open_bucket(
            &jetstream,
            &options.state_bucket,
            "replayfleet lease holders and paused runs",
            options.replicas,
        )
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                jetstream,
                stream,
                consumer,
                state,
                options,
            }),
        })
    }

    /// The options the queue was opened with.
    pub fn options(&self) -> &NatsQueueOptions {
        &self.inner.options
    }

    /// How long a claimed lease lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.inner.options.ttl
    }

    fn subject(&self, run_id: &str, shard: &str) -> String {
        format!(
            "{}.{}.{}",
            self.inner.options.subject_prefix,
            encode_token(run_id),
            encode_token(shard)
        )
    }

    fn run_subjects(&self, run_id: &str) -> String {
        format!(
            "{}.{}.>",
            self.inner.options.subject_prefix,
            encode_token(run_id)
        )
    }

    /// The (run, shard) of a lease subject; `None` for a subject this queue did not publish.
    fn parse_subject(&self, subject: &str) -> Option<(String, String)> {
        let rest = subject
            .strip_prefix(self.inner.options.subject_prefix.as_str())?
            .strip_prefix('.')?;
        let (run, shard) = rest.split_once('.')?;
        Some((decode_token(run)?, decode_token(shard)?))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.inner.options.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn bucket_what(&self, op: &str, key: &str) -> String {
        format!(
            "{op} key {key} in bucket {}",
            self.inner.options.state_bucket
        )
    }

    /// The next message the consumer hands out, waiting up to `wait`.
    async fn next_message(&self, wait: Duration) -> Result<Option<jetstream::Message>> {
        let what = || {
            format!(
                "claim from consumer {} of stream {}",
                self.inner.options.consumer, self.inner.options.stream
            )
        };
        let mut batch = self
            .inner
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait.max(MIN_PULL_WAIT))
            .messages()
            .await
            .map_err(|e| unavailable(what(), e))?;
        match batch.next().await {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(e)) => Err(unavailable(what(), e)),
        }
    }

    /// Turns a delivered message into a lease, or `None` if it is not one to
    /// hand out (a paused run's, a stale delivery, one removed meanwhile).
    async fn take(&self, message: jetstream::Message) -> Result<Option<Lease>> {
        let Some(token) = message.reply.as_ref().map(|reply| reply.to_string()) else {
            tracing::warn!(subject = %message.subject, "lease without reply subject; skipped");
            return Ok(None);
        };
        let (seq, consumer_seq) = match message.info() {
            Ok(info) => (info.stream_sequence, info.consumer_sequence),
            Err(e) => {
                tracing::warn!(%token, "unreadable lease delivery: {e}; skipped");
                return Ok(None);
            }
        };
        let Some((run_id, shard)) = self.parse_subject(message.subject.as_str()) else {
            tracing::warn!(
                subject = %message.subject,
                stream = %self.inner.options.stream,
                "not a lease subject; terminated"
            );
            self.reply(&token, AckKind::Term).await?;
            return Ok(None);
        };
        if self.is_paused(&run_id).await? {
            self.reply(
                &token,
                AckKind::Nak(Some(self.inner.options.paused_recheck)),
            )
            .await?;
            return Ok(None);
        }

        let key = lease_key(&run_id, &shard);
        let (delivery, revision) = loop {
            let now = now_ms();
            let (current, revision) = self.record(&key).await?;
            let delivery = match current {
                Some(record) if record.seq == seq => {
                    if record.held && record.consumer_seq > consumer_seq && record.expires_ms > now
                    {
                        // A later delivery of this message holds it: this one
                        // expired before it got here. Leave it to the server.
                        return Ok(None);
                    }
                    if record.held {
                        // The previous holder's TTL ran out: that was an attempt.
                        record.delivery.saturating_add(1)
                    } else {
                        record.delivery
                    }
                }
                _ => 1,
            };
            let record = LeaseRecord {
                seq,
                consumer_seq,
                delivery,
                token: token.clone(),
                held: true,
                expires_ms: now.saturating_add(self.ttl_ms()),
            };
            match self
                .inner
                .state
                .update(&key, encode_json(&record), revision)
                .await
            {
                Ok(revision) => break (delivery, revision),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(self.bucket_what("write", &key), e)),
            }
        };

        // `remove_run` purges first and deletes records after: a record written
        // before the check below is deleted by it, and a purge before the check
        // is seen by it. Either way no removed lease is handed out as held.
        if !self.message_exists(seq).await? {
            let _ = self
                .inner
                .state
                .delete_expect_revision(&key, Some(revision))
                .await;
            return Ok(None);
        }
        tracing::debug!(%run_id, %shard, delivery, "lease claimed");
        Ok(Some(Lease {
            run_id,
            shard,
            delivery,
            token,
        }))
    }

    /// The stored record under `key` and the revision to update it from
    /// (0: no entry yet, so the update creates it). An unreadable record counts
    /// as none, so the next claim overwrites it instead of failing forever.
    async fn record(&self, key: &str) -> Result<(Option<LeaseRecord>, u64)> {
        let entry = self
            .inner
            .state
            .entry(key)
            .await
            .map_err(|e| unavailable(self.bucket_what("read", key), e))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                Ok((self.decode_record(key, &entry.value), entry.revision))
            }
            Some(entry) => Ok((None, entry.revision)),
            None => Ok((None, 0)),
        }
    }

    fn decode_record(&self, key: &str, value: &[u8]) -> Option<LeaseRecord> {
        decode_json(&self.inner.options.state_bucket, key, value)
            .inspect_err(|e| tracing::warn!("{e}; taken as no holder"))
            .ok()
    }

    /// The record of a lease this delivery still holds, and its revision.
    async fn held(&self, lease: &Lease) -> Result<(LeaseRecord, u64)> {
        let key = lease_key(&lease.run_id, &lease.shard);
        match self.record(&key).await? {
            (Some(record), revision)
                if record.held && record.token == lease.token && record.expires_ms > now_ms() =>
            {
                Ok((record, revision))
            }
            _ => Err(not_found(lease)),
        }
    }

    /// Whether the stream still holds the lease message `seq` (not acked, not purged).
    async fn message_exists(&self, seq: u64) -> Result<bool> {
        match self.inner.stream.get_raw_message(seq).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(unavailable(
                format!(
                    "look up lease message {seq} in stream {}",
                    self.inner.options.stream
                ),
                e,
            )),
        }
    }

    async fn is_paused(&self, run_id: &str) -> Result<bool> {
        let key = paused_key(run_id);
        let value = self
            .inner
            .state
            .get(&key)
            .await
            .map_err(|e| unavailable(self.bucket_what("read", &key), e))?;
        Ok(value.is_some())
    }

    /// Sends an ack of `kind` on the delivery's reply subject and waits for the
    /// server to confirm it (a "double ack").
    async fn reply(&self, token: &str, kind: AckKind) -> Result<()> {
        self.inner
            .client
            .request(token.to_owned(), kind.into())
            .await
            .map(|_| ())
            .map_err(|e| {
                let name = match kind {
                    AckKind::Ack => "ack",
                    AckKind::Nak(_) => "nak",
                    AckKind::Progress => "progress",
                    AckKind::Next => "ack-next",
                    AckKind::Term => "term",
                };
                unavailable(format!("send {name} for lease delivery {token}"), e)
            })
    }
}

fn lease_key(run_id: &str, shard: &str) -> String {
    format!("lease.{}.{}", encode_token(run_id), encode_token(shard))
}

fn paused_key(run_id: &str) -> String {
    format!("paused.{}", encode_token(run_id))
}

fn not_found(lease: &Lease) -> Error {
    Error::NotFound {
        key: format!("{}/{}", lease.run_id, lease.shard),
    }
}

#[async_trait::async_trait]
impl LeaseQueue for NatsQueue {
    async fn publish(&self, run_id: &str, shard: &str) -> Result<()> {
        let subject = self.subject(run_id, shard);
        let what = || {
            format!(
                "publish lease {subject} to stream {}",
                self.inner.options.stream
            )
        };
        let message = PublishMessage::build()
            .payload(encode_json(&LeaseBody { run_id, shard }))
            .expected_last_subject_sequence(0);
        let ack = self
            .inner
            .jetstream
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| unavailable(what(), e))?;
        match ack.await {
            Ok(_) => Ok(()),
            // The subject holds a message: the lease is queued or claimed already.
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(()),
            Err(e) => Err(unavailable(what(), e)),
        }
    }

    async fn claim(&self, wait: Duration) -> Result<Option<Lease>> {
        let deadline = Instant::now() + wait;
        loop {
            let started = Instant::now();
            let remaining = deadline.saturating_duration_since(started);
            if let Some(message) = self.next_message(remaining).await? {
                if let Some(lease) = self.take(message).await? {
                    return Ok(Some(lease));
                }
                continue;
            }
            let now = Instant::now();
            if now + MIN_PULL_WAIT >= deadline {
                return Ok(None);
            }
            // The server ended the pull before its expiry (a leader change, too
            // many waiting pulls): try again, without spinning.
            if now - started < remaining / 2 {
                tokio::time::sleep(EARLY_END_PAUSE.min(deadline - now)).await;
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<()> {
        let (mut record, revision) = self.held(lease).await?;
        self.reply(&lease.token, AckKind::Progress).await?;
        record.expires_ms = now_ms().saturating_add(self.ttl_ms());
        let key = lease_key(&lease.run_id, &lease.shard);
        match self
            .inner
            .state
            .update(&key, encode_json(&record), revision)
            .await
        {
            Ok(_) => Ok(()),
            // Claimed by another delivery or removed since the check above.
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(not_found(lease)),
            Err(e) => Err(unavailable(self.bucket_what("write", &key), e)),
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<()> {
        let (record, revision) = self.held(lease).await?;
        self.reply(&lease.token, AckKind::Ack).await?;
        // The work queue drops an acked message on its own, but not necessarily
        // before the ack is confirmed; deleting it here makes the ack visible at
        // once, to `pending` and to a publish of the same shard.
        if self.message_exists(record.seq).await?
            && let Err(e) = self.inner.stream.delete_message(record.seq).await
        {
            // Refused if the work queue got there meanwhile; anything else is a failure.
            if self.message_exists(record.seq).await? {
                return Err(unavailable(
                    format!(
                        "delete acked lease message {} from stream {}",
                        record.seq, self.inner.options.stream
                    ),
                    e,
                ));
            }
        }
        let key = lease_key(&lease.run_id, &lease.shard);
        match self
            .inner
            .state
            .delete_expect_revision(&key, Some(revision))
            .await
        {
            Ok(()) => Ok(()),
            // Rewritten since: by a claim of a republished lease, or by remove_run.
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(unavailable(self.bucket_what("delete", &key), e)),
        }
    }

    async fn release(&self, lease: &Lease, delay: Duration) -> Result<()> {
        let (mut record, revision) = self.held(lease).await?;
        record.held = false;
        record.expires_ms = now_ms();
        let key = lease_key(&lease.run_id, &lease.shard);
        match self
            .inner
            .state
            .update(&key, encode_json(&record), revision)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                return Err(not_found(lease));
            }
            Err(e) => return Err(unavailable(self.bucket_what("write", &key), e)),
        }
        let nak = if delay.is_zero() {
            AckKind::Nak(None)
        } else {
            AckKind::Nak(Some(delay))
        };
        self.reply(&lease.token, nak).await
    }

    async fn remove_run(&self, run_id: &str) -> Result<u64> {
        let subjects = self.run_subjects(run_id);
        let purged = self
            .inner
            .stream
            .purge()
            .filter(subjects.clone())
            .await
            .map_err(|e| {
                unavailable(
                    format!("purge {subjects} from stream {}", self.inner.options.stream),
                    e,
                )
            })?
            .purged;
        // After the purge: see `take` for why this order matters.
        let prefix = format!("lease.{}.", encode_token(run_id));
        for (key, _) in list_under(&self.inner.state, &prefix).await? {
            self.inner
                .state
                .delete(&key)
                .await
                .map_err(|e| unavailable(self.bucket_what("delete", &key), e))?;
        }
        tracing::debug!(%run_id, purged, "leases of the run removed");
        Ok(purged)
    }

    async fn set_paused(&self, run_id: &str, paused: bool) -> Result<()> {
        let key = paused_key(run_id);
        if paused {
            self.inner
                .state
                .put(&key, "paused".into())
                .await
                .map(|_| ())
                .map_err(|e| unavailable(self.bucket_what("write", &key), e))
        } else {
            self.inner
                .state
                .delete(&key)
                .await
                .map_err(|e| unavailable(self.bucket_what("delete", &key), e))
        }
    }

    async fn pending(&self, run_id: &str) -> Result<(u64, u64)> {
        let subjects = self.run_subjects(run_id);
        let what = || format!("count {subjects} in stream {}", self.inner.options.stream);
        let mut counts = self
            .inner
            .stream
            .info_with_subjects(&subjects)
            .await
            .map_err(|e| unavailable(what(), e))?;
        let mut unacked = 0u64;
        while let Some(count) = counts.next().await {
            let (_, count) = count.map_err(|e| unavailable(what(), e))?;
            unacked += count as u64;
        }

        let now = now_ms();
        let prefix = format!("lease.{}.", encode_token(run_id));
        let mut claimed = 0u64;
        for (key, value) in list_under(&self.inner.state, &prefix).await? {
            // An expired holder's lease is back in the queue, whether or not it
            // has been redelivered yet.
            if self
                .decode_record(&key, &value)
                .is_some_and(|record| record.held && record.expires_ms > now)
            {
                claimed += 1;
            }
        }
        // A record outliving its message (an ack cut short) must not count.
        let claimed = claimed.min(unacked);
        Ok((unacked - claimed, claimed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_keep_runs_apart() {
        assert_eq!(lease_key("r.1", "s 0"), "lease.r=2E1.s=200");
        assert_ne!(lease_key("a.b", "c"), lease_key("a", "b.c"));
        assert_eq!(paused_key("r-1"), "paused.r-1");
    }

    #[test]
    fn records_round_trip() {
        let record = LeaseRecord {
            seq: 7,
            consumer_seq: 9,
            delivery: 2,
            token: "$JS.ACK.S.C.1.7.9.0.0".to_owned(),
            held: true,
            expires_ms: 1,
        };
        let json = encode_json(&record);
        let back: LeaseRecord = decode_json("b", "k", &json).unwrap();
        assert_eq!((back.seq, back.delivery, back.token), (7, 2, record.token));
        assert!(matches!(
            decode_json::<LeaseRecord>("b", "k", b"{}"),
            Err(Error::Invalid { key, .. }) if key == "key k in bucket b"
        ));
    }
}
