//! Listing the Parquet segments of an archive.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use replayfleet_config::SegmentGlob;

use crate::{Error, Location, Result};

/// One Parquet object of an archive, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Path relative to the archive location, `/`-separated (`partition=3/part-0.parquet`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The store's entity tag, when it gives one (S3 does; the local store derives one).
    pub etag: Option<String>,
    /// Last modification time reported by the store.
    #[serde(with = "rfc3339")]
    pub last_modified: DateTime<Utc>,
}

/// Every `*.parquet` object below `location`, recursively, sorted by path.
///
/// Path components starting with `_` or `.` are skipped: by Hive and Spark convention
/// they hold hidden or in-progress files (`_temporary/`, `.part-0.parquet.crc`).
/// Hive folders (`partition=N/`) are listed like any other folder: the inventory reads
/// partitions from the `partition` column, which is authoritative.
pub async fn list_segments(location: &Location) -> Result<Vec<SegmentRef>> {
    list_segments_matching(location, &SegmentGlob::default()).await
}

/// Every object below `location` that `segments` selects (`source.segments`), recursively,
/// sorted by path; hidden components are skipped as in [`list_segments`].
pub async fn list_segments_matching(
    location: &Location,
    segments: &SegmentGlob,
) -> Result<Vec<SegmentRef>> {
    let prefix = location.prefix();
    let objects = location
        .list_all((!prefix.as_ref().is_empty()).then_some(prefix))
        .await
        .map_err(|source| Error::Storage {
            path: location.url().to_string(),
            source,
        })?;
    let mut segments: Vec<SegmentRef> = objects
        .into_iter()
        .filter_map(|meta| {
            let path = location.relative(&meta.location)?;
            is_segment(&path, segments).then_some(SegmentRef {
                path,
                size: meta.size,
                etag: meta.e_tag,
                last_modified: meta.last_modified,
            })
        })
        .collect();
    segments.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(segments)
}

fn is_segment(relative: &str, segments: &SegmentGlob) -> bool {
    segments.is_match(relative)
        && relative
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with(['_', '.']))
}

/// RFC 3339 text for timestamps in JSON (chrono's serde feature is not enabled).
mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_parquet_objects_are_segments() {
        let parquet = SegmentGlob::default();
        let is = |p: &str| is_segment(p, &parquet);
        assert!(is("a.parquet"));
        assert!(is("partition=3/part-0.parquet"));
        assert!(!is("a.parquet.crc"));
        assert!(!is("_SUCCESS"));
        assert!(!is("_temporary/0/a.parquet"));
        assert!(!is(".a.parquet"));
        assert!(!is("notes.txt"));
    }

    #[test]
    fn a_segment_pattern_selects_objects_without_the_extension() {
        // Firehose names its objects `<stream>-<version>-<date>-<uuid>`, no extension.
        let firehose = SegmentGlob::parse("*/*/*/*/events-*").unwrap();
        assert!(is_segment(
            "2024/01/05/13/events-1-2024-01-05-13-00-00-abc",
            &firehose
        ));
        assert!(!is_segment("2024/01/05/events-1", &firehose));
        assert!(!is_segment("2024/01/05/13/_events-1", &firehose));
    }
}
