//! Where a shard's raw rows wait between reading and the buckets' replay: in memory up
//! to a budget (70% of `limits.memory`), then appended to one Arrow IPC file per bucket
//! in a spill folder (under `limits.spill_dir`, else the system's temp folder, `TMPDIR`),
//! removed when the shard is done, or when it fails. A bucket is read back whole when its turn comes, so memory holds the rows
//! not yet spilled and the buckets being replayed, whatever the shard's size.

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    sync::Mutex,
};

use arrow::{
    array::RecordBatch,
    ipc::{reader::FileReader, writer::FileWriter},
};

use crate::{Error, Result, raw::raw_schema};

/// The rows of every bucket of a shard.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    budget: usize,
}

struct Inner {
    /// `limits.spill_dir`; `None`: the OS temp folder.
    spill_dir: Option<PathBuf>,
    held: usize,
    buckets: Vec<Vec<RecordBatch>>,
    spill: Option<Spill>,
}

struct Spill {
    dir: SpillDir,
    writers: Vec<Option<FileWriter<BufWriter<File>>>>,
    rows: usize,
}

impl Store {
    /// A store for `buckets` buckets that holds up to `budget` bytes in memory and
    /// spills the rest into a folder it creates in `spill_dir` (else the OS temp folder).
    pub(crate) fn new(buckets: usize, budget: usize, spill_dir: Option<PathBuf>) -> Store {
        Store {
            inner: Mutex::new(Inner {
                spill_dir,
                held: 0,
                buckets: vec![Vec::new(); buckets],
                spill: None,
            }),
            budget,
        }
    }

    /// Adds rows of buckets (`bytes`: the memory they hold, counted once however they
    /// share buffers); spills everything held once the budget is passed.
    pub(crate) fn push(&self, pieces: Vec<(usize, RecordBatch)>, bytes: usize) -> Result<()> {
        let mut inner = self.inner.lock().expect("store lock");
        for (b, piece) in pieces {
            inner.buckets[b].push(piece);
        }
        inner.held += bytes;
        if inner.held > self.budget {
            inner.spill_all()?;
        }
        Ok(())
    }

    /// Rows written to the spill folder so far.
    pub(crate) fn spilled_rows(&self) -> usize {
        let inner = self.inner.lock().expect("store lock");
        inner.spill.as_ref().map_or(0, |s| s.rows)
    }

    /// Ends the reading: where each bucket's rows are, and the spill folder (removed
    /// with its files when dropped).
    pub(crate) fn finish(self) -> Result<(Vec<Source>, Option<SpillDir>)> {
        let mut inner = self.inner.into_inner().expect("store lock");
        let mut files = vec![None; inner.buckets.len()];
        let dir = match inner.spill.take() {
            None => None,
            Some(mut spill) => {
                let parent = inner.spill_parent();
                for (b, writer) in spill.writers.iter_mut().enumerate() {
                    if let Some(mut w) = writer.take() {
                        let path = spill.dir.dir.path().join(format!("bucket-{b}.arrow"));
                        w.finish()
                            .map_err(|e| spill_failed(&parent, &path, &e, arrow_disk_full(&e)))?;
                        files[b] = Some(path);
                    }
                }
                Some(spill.dir)
            }
        };
        let sources = inner
            .buckets
            .into_iter()
            .zip(files)
            .map(|(memory, file)| Source { memory, file })
            .collect();
        Ok((sources, dir))
    }
}

impl Inner {
    /// Where spill folders go, for messages.
    fn spill_parent(&self) -> PathBuf {
        self.spill_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    fn spill_all(&mut self) -> Result<()> {
        let parent = self.spill_parent();
        let full = |path: &Path, e: &dyn std::fmt::Display, disk_full: bool| {
            spill_failed(&parent, path, e, disk_full)
        };
        if self.spill.is_none() {
            sweep_stale(&parent);
            let dir = SpillDir::create(&parent).map_err(|e| full(&parent, &e, is_disk_full(&e)))?;
            self.spill = Some(Spill {
                dir,
                writers: (0..self.buckets.len()).map(|_| None).collect(),
                rows: 0,
            });
        }
        let spill = self.spill.as_mut().expect("created above");
        for (b, pieces) in self.buckets.iter_mut().enumerate() {
            if pieces.is_empty() {
                continue;
            }
            let path = spill.dir.dir.path().join(format!("bucket-{b}.arrow"));
            let writer = match &mut spill.writers[b] {
                Some(w) => w,
                slot @ None => {
                    let file =
                        File::create(&path).map_err(|e| full(&path, &e, is_disk_full(&e)))?;
                    slot.insert(
                        FileWriter::try_new(BufWriter::new(file), &raw_schema())
                            .map_err(|e| full(&path, &e, arrow_disk_full(&e)))?,
                    )
                }
            };
            for piece in pieces.drain(..) {
                spill.rows += piece.num_rows();
                writer
                    .write(&piece)
                    .map_err(|e| full(&path, &e, arrow_disk_full(&e)))?;
            }
            // Written through now, so that a full disk shows here, not at the end.
            writer
                .flush()
                .map_err(|e| full(&path, &e, arrow_disk_full(&e)))?;
        }
        self.held = 0;
        Ok(())
    }
}

/// The prefix of the spill folders a store creates.
const SPILL_PREFIX: &str = "replayfleet-spill-";

/// The file in a spill folder that its owner holds locked while the folder is in use.
const LOCK_FILE: &str = ".lock";

/// A shard's spill folder, removed with its files when dropped. Its owner holds an
/// exclusive lock on a file inside it for as long as it lives, so that a folder whose
/// lock can be taken was left by a process that died (`kill -9`) and can be removed.
pub(crate) struct SpillDir {
    dir: tempfile::TempDir,
    /// Held locked; released (and the folder removed) on drop.
    _lock: File,
}

impl SpillDir {
    fn create(parent: &Path) -> std::io::Result<SpillDir> {
        let dir = tempfile::Builder::new()
            .prefix(SPILL_PREFIX)
            .tempdir_in(parent)?;
        let lock = File::create(dir.path().join(LOCK_FILE))?;
        lock.try_lock().map_err(std::io::Error::from)?;
        Ok(SpillDir { dir, _lock: lock })
    }
}

/// Removes the spill folders in `parent` that no living process holds: those whose lock
/// file can be locked (its owner died without cleaning up). A folder without a lock
/// file (being created this very moment) is left alone. Best effort: failures are
/// ignored.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(SPILL_PREFIX) {
            continue;
        }
        let folder = entry.path();
        let Ok(lock) = std::fs::OpenOptions::new()
            .write(true)
            .open(folder.join(LOCK_FILE))
        else {
            continue;
        };
        if lock.try_lock().is_ok() {
            tracing::info!(folder = %folder.display(), "removing a spill folder left by a process that died");
            let _ = std::fs::remove_dir_all(&folder);
        }
    }
}

/// Whether `e` says the disk is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// Whether an Arrow error is an I/O error saying the disk is full.
fn arrow_disk_full(e: &arrow::error::ArrowError) -> bool {
    match e {
        arrow::error::ArrowError::IoError(_, io) => is_disk_full(io),
        other => other.to_string().contains("No space left on device"),
    }
}

/// Why spilling to `path` failed, and what to change: the folder (`limits.spill_dir`,
/// else the OS temp folder `parent`) full, or not writable.
fn spill_failed(parent: &Path, path: &Path, e: &dyn std::fmt::Display, disk_full: bool) -> Error {
    let message = if disk_full {
        format!(
            "cannot spill rows to disk, the spill folder `{}` is full ({e}): give `limits.spill_dir` a folder with more room, or raise `limits.memory` so that less spills",
            parent.display()
        )
    } else {
        format!(
            "cannot spill rows to disk in `{}` ({e}); the folder is `limits.spill_dir`, else the OS temp folder (`TMPDIR`)",
            parent.display()
        )
    };
    Error::Write {
        path: path.display().to_string(),
        message,
    }
}

/// One bucket's rows: those still in memory, and its spill file.
pub(crate) struct Source {
    memory: Vec<RecordBatch>,
    file: Option<std::path::PathBuf>,
}

impl Source {
    /// The bucket's rows (its spill file read back).
    pub(crate) fn load(&self) -> Result<Vec<RecordBatch>> {
        let mut rows = self.memory.clone();
        if let Some(path) = &self.file {
            let fail = |message: String| Error::Write {
                path: path.display().to_string(),
                message,
            };
            let file = File::open(path).map_err(|e| fail(format!("cannot read spill: {e}")))?;
            let reader = FileReader::try_new(std::io::BufReader::new(file), None)
                .map_err(|e| fail(format!("cannot read spill: {e}")))?;
            for batch in reader {
                rows.push(batch.map_err(|e| fail(format!("cannot read spill: {e}")))?);
            }
        }
        Ok(rows)
    }

    /// The bucket's rows, its memory given up and its spill file removed.
    pub(crate) fn take(mut self) -> Result<Vec<RecordBatch>> {
        let rows = self.load();
        self.memory.clear();
        if let Some(path) = self.file.take() {
            let _ = std::fs::remove_file(path);
        }
        rows
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn stale_spill_folders_are_swept_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        // A folder left by a process that died: its lock file is not held.
        let stale = parent.path().join(format!("{SPILL_PREFIX}dead"));
        std::fs::create_dir(&stale).unwrap();
        File::create(stale.join(LOCK_FILE)).unwrap();
        std::fs::write(stale.join("bucket-0.arrow"), b"rows").unwrap();
        // A folder being created (no lock file yet), and another program's folder.
        let young = parent.path().join(format!("{SPILL_PREFIX}young"));
        std::fs::create_dir(&young).unwrap();
        let other = parent.path().join("datafusion-xyz");
        std::fs::create_dir(&other).unwrap();
        // A live one.
        let live = SpillDir::create(parent.path()).unwrap();
        std::fs::write(live.dir.path().join("bucket-0.arrow"), b"rows").unwrap();

        sweep_stale(parent.path());
        assert!(!stale.exists());
        assert!(young.exists() && other.exists());
        assert!(live.dir.path().join("bucket-0.arrow").exists());

        let path = live.dir.path().to_owned();
        drop(live);
        assert!(!path.exists(), "a spill folder is removed when dropped");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Int32Array, Int64Array, StringArray, UInt64Array, new_null_array,
    };

    use super::*;

    fn rows(n: usize, first: u64) -> RecordBatch {
        let schema = raw_schema();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "event_id" => Arc::new(StringArray::from_iter_values(
                        (0..n).map(|i| format!("e{}", first as usize + i)),
                    )),
                    "partition" => Arc::new(Int32Array::from(vec![0; n])),
                    "seq" => Arc::new(Int64Array::from_iter_values(
                        (0..n as i64).map(|i| i + first as i64),
                    )),
                    "__ord" => Arc::new(UInt64Array::from_iter_values(first..first + n as u64)),
                    _ => new_null_array(f.data_type(), n),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn rows_come_back_whole_whether_spilled_or_not() {
        let store = Store::new(2, 1, None);
        store
            .push(vec![(0, rows(3, 0)), (1, rows(2, 3))], 10)
            .unwrap();
        assert_eq!(store.spilled_rows(), 5);
        let unspilled = Store::new(2, usize::MAX, None);
        unspilled.push(vec![(1, rows(4, 5))], 10).unwrap();
        assert_eq!(unspilled.spilled_rows(), 0);
        store.push(vec![(1, rows(4, 5))], 0).unwrap();
        let (mut sources, dir) = store.finish().unwrap();
        let dir = dir.expect("spilled");
        assert_eq!(sources.len(), 2);
        let count = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(count(&sources[1].load().unwrap()), 6, "read twice");
        let one = sources.pop().unwrap().take().unwrap();
        let zero = sources.pop().unwrap().take().unwrap();
        assert_eq!((count(&zero), count(&one)), (3, 6));
        assert_eq!(
            std::fs::read_dir(dir.dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != LOCK_FILE)
                .count(),
            0,
            "files removed"
        );
    }
}
