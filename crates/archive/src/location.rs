//! Where an archive (or a projection's home) lives: an object_store URL or a bare path.

use std::{collections::BTreeMap, path::Path as FsPath, sync::Arc, time::Duration};

use futures::TryStreamExt;
use object_store::{ListResult, ObjectMeta, ObjectStore, path::Path};
use url::Url;

use crate::{Error, KeptObjects, Result};

/// The location option bounding how long a request is retried, in total, before the
/// failure is reported (a humantime duration such as `60s` or `5m`).
pub const RETRY_TIMEOUT_OPTION: &str = "retry_timeout";

/// Listings tried again whole, by operation (`list`, `list_folders`).
pub const LIST_RETRIES_METRIC: &str = "replayfleet_storage_list_retries_total";

/// The retry budget when `retry_timeout` is not set.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// A resolved storage location: the store, the prefix inside it, and the URL it came from.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: Url,
    retry_budget: Duration,
    /// Small objects read whole at planning, for the replay of the same process.
    kept: Option<Arc<KeptObjects>>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl Location {
    /// Parse `input`: a URL that `object_store` understands (`file://`, `s3://`, `gs://`,
    /// `az://`, `memory://`, ...) or a bare path, resolved against `base_dir` when relative
    /// (the config file's folder) or against the working directory when `base_dir` is `None`.
    ///
    /// `options` are object_store options (`region`, `endpoint`, `allow_http`, ...); for
    /// S3, the `AWS_*` variables of the environment are read as well.
    pub fn parse(
        input: &str,
        base_dir: Option<&FsPath>,
        options: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let url = to_url(input, base_dir)?;
        let mut options = options.clone();
        let retry_budget = match options.remove(RETRY_TIMEOUT_OPTION) {
            None => DEFAULT_RETRY_TIMEOUT,
            Some(text) => humantime::parse_duration(text.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| Error::InvalidLocation {
                    location: url.to_string(),
                    reason: format!(
                        "option `{RETRY_TIMEOUT_OPTION}` = `{text}` is not a positive duration such as `60s` or `5m`"
                    ),
                })?,
        };
        let (store, prefix) = build_store(&url, &options, retry_budget)?;
        Ok(Self {
            store,
            prefix,
            url,
            retry_budget,
            kept: None,
        })
    }

    /// A location over an existing store (tests, in-memory targets).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: Path, url: Url) -> Self {
        Self {
            store,
            prefix,
            url,
            retry_budget: DEFAULT_RETRY_TIMEOUT,
            kept: None,
        }
    }

    /// This location, keeping in `kept` the small segments it reads whole while reading
    /// their footers, and fetching a segment from `kept` when it is there
    /// ([`KeptObjects`]). For a process that plans and replays the same archive.
    pub fn keeping(mut self, kept: Arc<KeptObjects>) -> Self {
        self.kept = Some(kept);
        self
    }

    /// Where small segments read at planning are kept, if they are.
    pub fn kept(&self) -> Option<&Arc<KeptObjects>> {
        self.kept.as_ref()
    }

    /// How long a failing request may be retried in all (option `retry_timeout`).
    pub fn retry_budget(&self) -> Duration {
        self.retry_budget
    }

    /// How requests to this location are tried again: jittered exponential backoff from
    /// 50 ms to 5 s between tries, all of them within [`retry_budget`](Self::retry_budget).
    pub fn retry_backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .with_total_delay(Some(self.retry_budget))
    }

    /// Whether the location is a local folder (`file://`), where a failed write is
    /// never ambiguous and trying again does not help.
    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }

    /// Fails, naming the folder, when the location is a local folder that does not exist:
    /// what a read-only command reads must be there (on object storage an empty prefix and
    /// a missing one are the same, and this always passes).
    pub fn must_exist(&self) -> Result<()> {
        match self.url.to_file_path() {
            Ok(dir) if self.is_local() && !dir.is_dir() => Err(Error::InvalidLocation {
                location: self.url.to_string(),
                reason: format!("there is no folder `{}`", dir.display()),
            }),
            _ => Ok(()),
        }
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix inside the store under which everything lives.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The URL this location was parsed from (bare paths become `file://` URLs).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The full store path of `relative` (a `/`-separated path below the prefix).
    pub fn child(&self, relative: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    /// `full` relative to the prefix, `/`-separated; `None` when it lies outside.
    pub fn relative(&self, full: &Path) -> Option<String> {
        let parts: Vec<_> = full.prefix_match(&self.prefix)?.collect();
        Some(
            parts
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    /// Every object below `prefix` (the whole store when `None`), in the store's order.
    ///
    /// object_store retries a listing page's request, but not the reading of its answer:
    /// a connection cut while the page's body arrives fails the listing. Such a failure,
    /// and any other worth retrying ([`is_transient`](crate::is_transient)), lists again
    /// from the start, with jittered exponential backoff within the location's retry
    /// budget (counted in [`LIST_RETRIES_METRIC`], the first logged at WARN).
    pub async fn list_all(&self, prefix: Option<&Path>) -> object_store::Result<Vec<ObjectMeta>> {
        self.listing("list", prefix, || {
            self.store.list(prefix).try_collect::<Vec<_>>()
        })
        .await
    }

    /// The objects and sub-folders directly below `prefix`, tried again as
    /// [`list_all`](Self::list_all) is.
    pub async fn list_folders(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.listing("list_folders", prefix, || {
            self.store.list_with_delimiter(prefix)
        })
        .await
    }

    async fn listing<T, F, Fut>(
        &self,
        op: &'static str,
        prefix: Option<&Path>,
        list: F,
    ) -> object_store::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        use backon::Retryable;
        let local = self.is_local();
        let mut warned = false;
        list.retry(self.retry_backoff())
            .when(|e| !local && crate::is_transient(e))
            .notify(|e, _| {
                if !warned {
                    warned = true;
                    tracing::warn!(
                        prefix = %prefix.map(Path::as_ref).unwrap_or_default(),
                        op,
                        "listing failed; listing again: {e}"
                    );
                }
                metrics::counter!(LIST_RETRIES_METRIC, "op" => op).increment(1);
            })
            .await
    }

    /// A location for a sub-folder of this one.
    pub fn join(&self, relative: &str) -> Self {
        let mut url = self.url.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            relative.trim_matches('/')
        );
        url.set_path(&joined);
        Self {
            store: Arc::clone(&self.store),
            prefix: self.child(relative),
            url,
            retry_budget: self.retry_budget,
            kept: self.kept.clone(),
        }
    }
}

fn to_url(input: &str, base_dir: Option<&FsPath>) -> Result<Url> {
    let input = input.trim();
    if input.is_empty() {
        return Err(Error::InvalidLocation {
            location: input.to_owned(),
            reason: "empty location".into(),
        });
    }
    // A scheme is letters followed by "://"; anything else is a filesystem path
    // (Windows drive letters are not a concern on the platforms we ship).
    if let Some((scheme, _)) = input.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+')
    {
        let url = Url::parse(input).map_err(|e| Error::InvalidLocation {
            location: input.to_owned(),
            reason: e.to_string(),
        })?;
        if url.scheme() == "file" && url.host_str().is_some_and(|h| !h.is_empty()) {
            return Err(Error::InvalidLocation {
                location: input.to_owned(),
                reason: format!(
                    "file URLs must be absolute (file:///abs/path); write a bare path such as `{}` for a path relative to the config file",
                    input.trim_start_matches("file://")
                ),
            });
        }
        return Ok(url);
    }
    let path = FsPath::new(input);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let base = match base_dir {
            Some(b) => b.to_path_buf(),
            None => std::env::current_dir().map_err(|e| Error::InvalidLocation {
                location: input.to_owned(),
                reason: format!("cannot resolve a relative path: {e}"),
            })?,
        };
        base.join(path)
    };
    let normalized = normalize(&absolute);
    Url::from_directory_path(&normalized).map_err(|()| Error::InvalidLocation {
        location: input.to_owned(),
        reason: format!("`{}` is not an absolute path", normalized.display()),
    })
}

/// Lexically removes `.` and `..` so that `base/../x` names `x` (the folder may not exist yet).
fn normalize(path: &FsPath) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn build_store(
    url: &Url,
    options: &BTreeMap<String, String>,
    retry_budget: Duration,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let invalid = |reason: String| Error::InvalidLocation {
        location: url.to_string(),
        reason,
    };
    match url.scheme() {
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| invalid("not a local path".into()))?;
            if dir.is_dir() {
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| invalid(e.to_string()))?;
                return Ok((Arc::new(store), Path::default()));
            }
            if dir.exists() {
                return Err(invalid(format!("`{}` is not a folder", dir.display())));
            }
            // A folder that does not exist yet: reading it finds nothing, and the first
            // write creates it (never a read: read-only commands create nothing).
            let prefix = Path::from_absolute_path(&dir).map_err(|e| invalid(e.to_string()))?;
            Ok((
                Arc::new(object_store::local::LocalFileSystem::new()),
                prefix,
            ))
        }
        "s3" | "s3a" => {
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(retry_config(retry_budget));
            for (k, v) in options {
                let key = k.parse().map_err(|e: object_store::Error| {
                    invalid(format!("unknown S3 option `{k}`: {e}"))
                })?;
                builder = builder.with_config(key, v);
            }
            let store = builder.build().map_err(|e| invalid(e.to_string()))?;
            Ok((Arc::new(store), url_prefix(url)?))
        }
        _ => {
            let (store, prefix) = object_store::parse_url_opts(url, options.iter())
                .map_err(|e| invalid(e.to_string()))?;
            Ok((Arc::from(store), prefix))
        }
    }
}

fn url_prefix(url: &Url) -> Result<Path> {
    Path::from_url_path(url.path()).map_err(|e| Error::InvalidLocation {
        location: url.to_string(),
        reason: e.to_string(),
    })
}

fn retry_config(retry_timeout: Duration) -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 5,
        retry_timeout,
        backoff: object_store::BackoffConfig::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_relative_path_resolves_against_base_dir() {
        let url = to_url("data/events", Some(FsPath::new("/etc/replay"))).unwrap();
        assert_eq!(url.as_str(), "file:///etc/replay/data/events/");
        let url = to_url("../x", Some(FsPath::new("/a/b"))).unwrap();
        assert_eq!(url.as_str(), "file:///a/x/");
    }

    #[test]
    fn urls_pass_through_and_relative_file_urls_are_refused() {
        assert_eq!(
            to_url("s3://bucket/prefix", None).unwrap().as_str(),
            "s3://bucket/prefix"
        );
        let err = to_url("file://./x", None).unwrap_err().to_string();
        assert!(err.contains("file:///abs/path"), "{err}");
    }

    #[test]
    fn retry_timeout_is_a_positive_duration_and_not_passed_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let at = |v: &str| {
            let options = BTreeMap::from([(RETRY_TIMEOUT_OPTION.to_owned(), v.to_owned())]);
            Location::parse(path, None, &options)
        };
        assert_eq!(at("90s").unwrap().retry_budget(), Duration::from_secs(90));
        assert_eq!(
            Location::parse(path, None, &BTreeMap::new())
                .unwrap()
                .retry_budget(),
            DEFAULT_RETRY_TIMEOUT
        );
        for bad in ["0s", "soon", ""] {
            let err = at(bad).unwrap_err().to_string();
            assert!(err.contains("`retry_timeout`"), "{bad}: {err}");
        }
        // S3 builders refuse unknown keys: the option must not reach them.
        let options = BTreeMap::from([
            (RETRY_TIMEOUT_OPTION.to_owned(), "5s".to_owned()),
            ("endpoint".to_owned(), "http://127.0.0.1:1".to_owned()),
            ("allow_http".to_owned(), "true".to_owned()),
        ]);
        let s3 = Location::parse("s3://bucket/prefix", None, &options).unwrap();
        assert_eq!(s3.retry_budget(), Duration::from_secs(5));
        assert!(!s3.is_local());
    }
}
