//! Small segments read whole while planning, kept for the replay of the same process.
//!
//! Reading a segment's footer fetches the last [`FOOTER_PREFETCH`](crate::read) bytes of
//! it in one request; a segment no larger than that is then read whole. An archive of
//! small files (a sink that rolls a file per record or per schema change) costs two
//! requests per file, the footer's at planning and the whole object's at the replay, and
//! on object storage the requests are the run's cost. When one process plans and replays
//! (the embedded run), the planner keeps those whole objects in a [`KeptObjects`] and the
//! replay takes each from it instead of fetching it again: one request per small file.
//!
//! What is kept is bounded by a byte budget (once full, nothing more is kept), each object
//! is handed out once (taken, not copied), and an object is only kept when it is the one
//! the listing named: the planner's read of it sends the listing's entity tag as
//! `If-Match` and must return all of its listed size.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;

/// Whole small objects read at planning, by full store path, until the replay takes them.
#[derive(Debug)]
pub struct KeptObjects {
    budget: u64,
    held: Mutex<Held>,
    kept: AtomicU64,
    taken: AtomicU64,
}

/// The objects kept, and their bytes in all.
#[derive(Debug, Default)]
struct Held {
    objects: HashMap<String, Kept>,
    bytes: u64,
}

#[derive(Debug)]
struct Kept {
    etag: Option<String>,
    bytes: Bytes,
}

impl Held {
    fn remove(&mut self, path: &str) -> Option<Kept> {
        let kept = self.objects.remove(path)?;
        self.bytes -= kept.bytes.len() as u64;
        Some(kept)
    }
}

impl KeptObjects {
    /// Keeps at most `budget` bytes of objects at a time.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            held: Mutex::default(),
            kept: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("kept objects lock")
    }

    /// Keeps `bytes`, the whole object at `path` with entity tag `etag`, if the budget
    /// has room; otherwise the object will be fetched again when it is read.
    pub(crate) fn keep(&self, path: &str, etag: Option<&str>, bytes: Bytes) {
        let mut held = self.held();
        held.remove(path);
        let len = bytes.len() as u64;
        if held.bytes + len > self.budget {
            return;
        }
        held.bytes += len;
        let kept = Kept {
            etag: etag.map(str::to_owned),
            bytes,
        };
        held.objects.insert(path.to_owned(), kept);
        self.kept.fetch_add(1, Ordering::Relaxed);
    }

    /// The kept bytes of `path`, when they are `size` bytes of the object with entity tag
    /// `etag` (the one the plan lists); they are no longer kept afterwards.
    pub(crate) fn take(&self, path: &str, size: u64, etag: Option<&str>) -> Option<Bytes> {
        let kept = self.held().remove(path)?;
        if kept.bytes.len() as u64 != size || kept.etag.as_deref() != etag {
            return None;
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(kept.bytes)
    }

    /// The kept bytes of `path` when they are `size` bytes of the object with entity tag
    /// `etag`, still kept afterwards (a second look at a segment while planning).
    pub(crate) fn peek(&self, path: &str, size: u64, etag: Option<&str>) -> Option<Bytes> {
        let held = self.held();
        let kept = held.objects.get(path)?;
        (kept.bytes.len() as u64 == size && kept.etag.as_deref() == etag)
            .then(|| kept.bytes.clone())
    }

    /// Drops every object still kept (the replay is over).
    pub fn clear(&self) {
        *self.held() = Held::default();
    }

    /// Bytes kept now.
    pub fn bytes(&self) -> u64 {
        self.held().bytes
    }

    /// Objects kept so far, and objects taken so far (each one request saved).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.kept.load(Ordering::Relaxed),
            self.taken.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_kept_within_the_budget_and_taken_once_when_they_match() {
        let kept = KeptObjects::new(10);
        kept.keep("a", Some("e1"), Bytes::from_static(b"12345"));
        kept.keep("b", None, Bytes::from_static(b"1234"));
        // Over the budget: not kept.
        kept.keep("c", None, Bytes::from_static(b"12"));
        assert_eq!(kept.bytes(), 9);
        assert_eq!(kept.take("c", 2, None), None);
        assert_eq!(
            kept.peek("a", 5, Some("e1")),
            Some(Bytes::from_static(b"12345"))
        );
        assert_eq!(kept.peek("a", 5, None), None);
        // Another entity tag or size than the plan's: not handed out, and dropped.
        assert_eq!(kept.take("a", 5, Some("e2")), None);
        assert_eq!(
            kept.take("a", 5, Some("e1")),
            None,
            "taken (and dropped) once"
        );
        assert_eq!(kept.bytes(), 4);
        assert_eq!(kept.take("b", 4, None), Some(Bytes::from_static(b"1234")));
        assert_eq!(kept.take("b", 4, None), None);
        assert_eq!(kept.bytes(), 0);
        // Room again.
        kept.keep("c", None, Bytes::from_static(b"12"));
        assert_eq!(kept.take("c", 2, None), Some(Bytes::from_static(b"12")));
        assert_eq!(kept.counts(), (3, 2));
        kept.keep("d", None, Bytes::from_static(b"123"));
        kept.clear();
        assert_eq!((kept.bytes(), kept.take("d", 3, None)), (0, None));
    }
}
