//! Both traits on NATS JetStream (server 2.10 or newer), for a fleet.
//!
//! ```text
//!   stream REPLAYFLEET_LEASES (work queue)        bucket REPLAYFLEET_LEASE_STATE
//!   replayfleet.lease.<run>.<shard>  one message   lease.<run>.<shard>  who holds it, delivery
//!   per unacked lease; durable pull consumer,      paused.<run>         present while paused
//!   ack wait = TTL, redelivered when it lapses
//!
//!   bucket REPLAYFLEET_RUNS
//!   run.<run>            {revision, state}  compare-and-set on the KV revision
//!   name.<name>          run id of the name's unfinished run
//!   shard.<run>.<shard>  ShardState, read-modify-write retried on conflict
//! ```
//!
//! Ids go into subjects and keys through [`encode_token`]: every byte outside
//! `[A-Za-z0-9_-]` becomes `=XX`, so a dot or a space in a run id or shard name
//! can neither split a token nor make two ids collide.
//!
//! Both handles are cheap to clone and hold no state of their own: every
//! worker process can open its own, and a restart loses nothing the server kept.

mod queue;
mod store;

pub use queue::{NatsQueue, NatsQueueOptions};
pub use store::{NatsStore, NatsStoreOptions};

use std::fmt::Display;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{consumer, kv};
use bytes::Bytes;
use futures::StreamExt;

use crate::{Error, LeaseQueue, Result, RunStore};

/// The fleet's queue (leases living `ttl` without a heartbeat) and run-state store on
/// `client`, creating their stream, consumer and buckets when missing.
///
/// # Errors
///
/// As [`NatsQueue::connect`] and [`NatsStore::connect`].
pub async fn open(
    client: async_nats::Client,
    ttl: Duration,
) -> Result<(std::sync::Arc<dyn LeaseQueue>, std::sync::Arc<dyn RunStore>)> {
    let queue = NatsQueue::connect(
        client.clone(),
        NatsQueueOptions {
            ttl,
            ..NatsQueueOptions::default()
        },
    )
    .await?;
    let store = NatsStore::connect(client, NatsStoreOptions::default()).await?;
    Ok((std::sync::Arc::new(queue), std::sync::Arc::new(store)))
}

/// How long listing a bucket's keys may wait for the server before giving up.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries asked for per fetch while listing.
const LIST_BATCH: usize = 512;

/// `id` as one subject token or key segment: `[A-Za-z0-9_-]` kept, every other
/// byte written `=XX` (upper-case hex), the empty string written `=`.
/// Injective, and [`decode_token`] reverses it.
pub(crate) fn encode_token(id: &str) -> String {
    if id.is_empty() {
        return "=".to_owned();
    }
    let mut token = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("={byte:02X}"));
        }
    }
    token
}

/// The id [`encode_token`] made `token` from; `None` if it did not make it.
pub(crate) fn decode_token(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'=' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if first.is_ascii_alphanumeric() || first == b'_' || first == b'-' {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok().filter(|id| !id.is_empty())
}

/// A transport failure: worth retrying. `what` names the operation and the
/// stream, bucket or key it was on.
pub(crate) fn unavailable(what: impl Display, err: impl Display) -> Error {
    Error::Unavailable {
        message: format!("{what}: {err}"),
    }
}

/// Milliseconds since the Unix epoch, for lease expiry kept in a bucket.
/// Creates the KV bucket `name` (or updates it to these settings): file storage, one
/// value per key.
pub(crate) async fn open_bucket(
    jetstream: &async_nats::jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
) -> Result<kv::Store> {
    use async_nats::jetstream::context::CreateKeyValueErrorKind;
    jetstream
        .create_or_update_key_value(kv::Config {
            bucket: name.to_owned(),
            description: description.to_owned(),
            history: 1,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| match e.kind() {
            CreateKeyValueErrorKind::TimedOut | CreateKeyValueErrorKind::JetStream => {
                unavailable(format!("set up bucket {name}"), e)
            }
            _ => Error::Invalid {
                key: format!("bucket {name}"),
                message: e.to_string(),
            },
        })
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads a JSON value stored under `key`, naming the bucket and key if it is unreadable.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    bucket: &str,
    key: &str,
    value: &[u8],
) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| Error::Invalid {
        key: format!("key {key} in bucket {bucket}"),
        message: format!("not the JSON this crate writes: {e}"),
    })
}

/// Writes a value as JSON. Serializing plain structs with string keys cannot fail.
pub(crate) fn encode_json<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("plain structs serialize to JSON"))
}

/// The latest value of every key under `prefix` (which ends with `.`), deleted
/// keys left out, in the bucket's order.
///
/// One ephemeral consumer delivering the last message per subject, drained
/// with no-wait fetches: the server says when nothing is left, so there is no
/// guessing from pending counts. O(1) requests, unlike a `get` per key.
pub(crate) async fn list_under(store: &kv::Store, prefix: &str) -> Result<Vec<(String, Bytes)>> {
    let what = || format!("list keys {prefix}* in bucket {}", store.name);
    let consumer = store
        .stream
        .create_consumer(consumer::pull::Config {
            filter_subject: format!("{}{prefix}>", store.prefix),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ack_policy: consumer::AckPolicy::None,
            // Cleans the consumer up if this task dies before deleting it.
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(what(), e))?;
    let listed = tokio::time::timeout(LIST_TIMEOUT, drain(&consumer, &store.prefix)).await;
    let name = consumer.cached_info().name.clone();
    if let Err(e) = store.stream.delete_consumer(&name).await {
        // It goes away by itself after its inactive threshold.
        tracing::debug!(bucket = %store.name, consumer = %name, "listing consumer left: {e}");
    }
    match listed {
        Ok(result) => result.map_err(|e| unavailable(what(), e)),
        Err(_) => Err(unavailable(
            what(),
            format!("no answer within {LIST_TIMEOUT:?}"),
        )),
    }
}

async fn drain(
    consumer: &consumer::PullConsumer,
    subject_prefix: &str,
) -> Result<Vec<(String, Bytes)>, async_nats::Error> {
    let mut entries = Vec::new();
    loop {
        let mut batch = consumer.fetch().max_messages(LIST_BATCH).messages().await?;
        let mut fetched = 0;
        while let Some(message) = batch.next().await {
            let message = message?;
            fetched += 1;
            let deleted = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if deleted {
                continue;
            }
            if let Some(key) = message.subject.as_str().strip_prefix(subject_prefix) {
                entries.push((key.to_owned(), message.payload.clone()));
            }
        }
        if fetched < LIST_BATCH {
            return Ok(entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_contain_separators() {
        for id in [
            "run-01", "s_2", "a.b", "a b*>", "=", "==41", "é∂", "x", "A-Z_09",
        ] {
            let token = encode_token(id);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)),
                "{id:?} -> {token:?}"
            );
            assert_eq!(decode_token(&token).as_deref(), Some(id), "{token}");
        }
        assert_eq!(encode_token("a.b"), "a=2Eb");
        assert_eq!(encode_token(""), "=");
        assert_eq!(decode_token("=").as_deref(), Some(""));
    }

    #[test]
    fn tokens_are_injective() {
        let ids = ["a.b", "a=2Eb", "a_b", "a-b", "a", "a.", ".a", ""];
        let tokens: std::collections::HashSet<String> =
            ids.iter().map(|id| encode_token(id)).collect();
        assert_eq!(tokens.len(), ids.len());
    }

    #[tokio::test]
    async fn a_failed_connect_names_the_server_without_its_credentials() {
        for url in [
            "nats://user:secret@127.0.0.1:1",
            "nats://user:secret@127.0.0.1:1,nats://user:secret@127.0.0.1:2",
            "user:secret@127.0.0.1:1",
            "nats://secret@127.0.0.1:1",
        ] {
            let connect = NatsConnect {
                url: url.to_owned(),
                ..NatsConnect::default()
            };
            let err = connect
                .connect()
                .await
                .expect_err("nothing listens on port 1");
            let message = err.to_string();
            assert!(matches!(err, Error::Unavailable { .. }), "{url}: {message}");
            assert!(!message.contains("secret"), "{url}: {message}");
            assert!(message.contains("***@127.0.0.1:1"), "{url}: {message}");
        }
    }

    #[test]
    fn urls_are_redacted_like_the_config_does() {
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("tls://u:p@a,tls://b"), "tls://***@a,tls://b");
        assert_eq!(redact_url("u:p@h:4222"), "***@h:4222");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact_url("nats://u:p@[::1"), "nats://***@[::1");
        assert_eq!(
            without_credentials("bad url nats://u:hunter2@h: hunter2", "nats://u:hunter2@h"),
            "bad url nats://***@h: ***"
        );
    }

    #[test]
    fn foreign_tokens_do_not_decode() {
        for token in ["a.b", "=2", "=zz", "=2e", "a b", "=FF"] {
            assert_eq!(decode_token(token), None, "{token}");
        }
    }
}

/// How to reach a NATS server: its URL, and optionally a credentials file and TLS files.
#[derive(Debug, Clone, Default)]
pub struct NatsConnect {
    /// `nats://host:4222` (or `tls://...`).
    pub url: String,
    /// A `.creds` file (JWT and nkey seed).
    pub creds: Option<std::path::PathBuf>,
    /// A file holding a user nkey seed (`SU...`): nkey authentication.
    pub nkey: Option<std::path::PathBuf>,
    /// CA bundle for the server's certificate (turns TLS on).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate for mutual TLS.
    pub tls_cert: Option<std::path::PathBuf>,
    /// Client key for mutual TLS.
    pub tls_key: Option<std::path::PathBuf>,
}

impl NatsConnect {
    /// Connects with the URL as given; a failure is [`Error::Unavailable`] naming the
    /// URL without its credentials (`redact_url`), and the server's or client's message
    /// with any occurrence of them removed.
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let shown = redact_url(&self.url);
        let unavailable = |message: String| Error::Unavailable {
            message: format!(
                "connecting to {shown}: {}",
                without_credentials(&message, &self.url)
            ),
        };
        let mut options = async_nats::ConnectOptions::new()
            .name("replayfleet")
            .connection_timeout(Duration::from_secs(10));
        if let Some(creds) = &self.creds {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| unavailable(format!("credentials file {}: {e}", creds.display())))?;
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path).map_err(|e| Error::Invalid {
                key: format!("nkey seed file {}", path.display()),
                message: e.to_string(),
            })?;
            let seed = seed.trim();
            if !seed.starts_with("SU") {
                return Err(Error::Invalid {
                    key: format!("nkey seed file {}", path.display()),
                    message: "not a user nkey seed (it starts with `SU`)".to_owned(),
                });
            }
            options = options.nkey(seed.to_owned());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
            .connect(self.url.as_str())
            .await
            .map_err(|e| unavailable(e.to_string()))
    }
}

/// `url` with its user information (`user:password@`, `token@`) replaced by `***`, the
/// rest as written; never fails (the text is scanned, not parsed), and a comma-separated
/// list of servers is redacted server by server.
///
/// The same rule as `replayfleet_config::redact_url` (this crate depends on no crate of
/// ours): the authority follows `scheme://` and ends at the first `/`, `?` or `#`, its
/// user information is everything before its last `@`; text without `://` that is not a
/// path (`user:pw@host:4222`) loses everything before its last `@` ahead of any `?`
/// or `#`.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (start, end) = match one.find("://") {
                Some(at) => {
                    let rest = &one[at + 3..];
                    (
                        at + 3,
                        at + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len()),
                    )
                }
                None if one.trim_start().starts_with(['/', '.', '\\']) => return one.to_owned(),
                None => (0, one.find(['?', '#']).unwrap_or(one.len())),
            };
            match one[start..end].rfind('@') {
                Some(at) => format!("{}***{}", &one[..start], &one[start + at..]),
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `message` without the user information of `url` (a client error may quote the URL
/// it was given): each server's `user:password` is replaced by `***`.
fn without_credentials(message: &str, url: &str) -> String {
    let mut message = message.to_owned();
    for one in url.split(',') {
        let redacted = redact_url(one);
        if redacted != one {
            message = message.replace(one.trim(), redacted.trim());
            // The user information alone (`user:password`), however it is quoted.
            let start = one.find("://").map_or(0, |at| at + 3);
            if let Some(at) = one[start..].rfind('@') {
                let userinfo = &one[start..start + at];
                if !userinfo.is_empty() {
                    message = message.replace(userinfo, "***");
                    // A password alone too (but not a short one: it would star out
                    // letters of the message itself).
                    if let Some((_, password)) = userinfo.split_once(':')
                        && password.len() >= 4
                    {
                        message = message.replace(password, "***");
                    }
                }
            }
        }
    }
    message
}
