//! Where a shard's raw rows wait between reading and the buckets' replay: in memory up
//! to a budget (70% of `limits.memory`), then appended to one Arrow IPC file per bucket
//! (LZ4-compressed with `limits.spill_compression = "lz4"`) in a spill folder (under
//! `limits.spill_dir`, else the system's temp folder, `TMPDIR`), removed when the shard is done, or when it fails. A bucket is read
//! back whole when its turn comes, so memory holds the rows not yet spilled and the
//! buckets being replayed, whatever the shard's size.
//!
//! Spilling does not stop the reading: the thread whose rows pass the budget takes every
//! row held, and writes them while the other threads go on decoding into memory. Once
//! the rows read so far say the shard will not fit (rows per byte so far × the plan's
//! rows), a spill starts at half the budget, so that one half is written while the other
//! fills. Rows held, rows being written and the bytes that cannot spill (the id digests,
//! [`Store::hold`]) never pass the budget by more than one push.

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    sync::Mutex,
};

use arrow::{
    array::RecordBatch,
    ipc::{
        CompressionType,
        reader::FileReader,
        writer::{FileWriter, IpcWriteOptions},
    },
};

use replayfleet_config::SpillCompression;

use crate::{Error, Result, raw::raw_schema};

/// The rows of every bucket of a shard.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    /// Held by the thread writing spill files (one at a time).
    spiller: Mutex<Spiller>,
    budget: usize,
    /// The shard's rows, from the plan (an estimate: the window and the partitions
    /// filter some out).
    expected_rows: u64,
}

struct Inner {
    /// Bytes of rows in `buckets`.
    held: usize,
    /// Bytes of rows taken from `buckets` and being written to the spill folder.
    spilling: usize,
    /// Bytes held outside the store that count against its budget (see [`Store::hold`]).
    fixed: usize,
    /// Rows and bytes pushed so far, to estimate the shard's size.
    rows_seen: u64,
    bytes_seen: usize,
    buckets: Vec<Vec<RecordBatch>>,
}

impl Inner {
    /// Whether the rows held should be spilled now: they pass the budget, or the shard
    /// will not fit and no spill is being written while half the budget is held.
    fn wants_spill(&self, budget: usize, expected_rows: u64) -> bool {
        if self.held == 0 {
            return false;
        }
        if self.held + self.spilling + self.fixed > budget {
            return true;
        }
        let will_not_fit = self.rows_seen > 0
            && (self.bytes_seen as u128 * u128::from(expected_rows) / u128::from(self.rows_seen))
                + self.fixed as u128
                > budget as u128;
        will_not_fit && self.spilling == 0 && self.held + self.fixed > budget / 2
    }
}

struct Spiller {
    /// `limits.spill_dir`; `None`: the OS temp folder.
    spill_dir: Option<PathBuf>,
    /// `limits.spill_max`: the bytes the spill files may hold in all.
    spill_max: u64,
    /// How spill files are written (`limits.spill_compression`).
    options: IpcWriteOptions,
    spill: Option<Spill>,
}

struct Spill {
    dir: SpillDir,
    writers: Vec<Option<FileWriter<BufWriter<File>>>>,
    rows: usize,
    /// Bytes written so far, in all the files.
    bytes: u64,
}

impl Store {
    /// A store for `buckets` buckets of a shard of about `expected_rows` rows that holds
    /// up to `budget` bytes in memory and spills the rest into a folder it creates in
    /// `spill_dir` (else the OS temp folder).
    pub(crate) fn new(
        buckets: usize,
        budget: usize,
        expected_rows: u64,
        spill_dir: Option<PathBuf>,
        spill_max: u64,
        compression: SpillCompression,
    ) -> Store {
        Store {
            inner: Mutex::new(Inner {
                held: 0,
                spilling: 0,
                fixed: 0,
                rows_seen: 0,
                bytes_seen: 0,
                buckets: vec![Vec::new(); buckets],
            }),
            spiller: Mutex::new(Spiller {
                spill_dir,
                spill_max,
                // As they are by default: LZ4 (arrow-ipc's `lz4` feature, which
                // DataFusion enables) halves the files, but compressing and
                // decompressing them cost a spilling shard ~16% of its time
                // (docs/PERFORMANCE.md).
                options: match compression {
                    SpillCompression::None => IpcWriteOptions::default(),
                    SpillCompression::Lz4 => IpcWriteOptions::default()
                        .try_with_compression(Some(CompressionType::LZ4_FRAME))
                        .expect("LZ4 is built in"),
                },
                spill: None,
            }),
            budget,
            expected_rows,
        }
    }

    /// Adds rows of buckets (`bytes`: the memory they hold, counted once however they
    /// share buffers); spills the rows held when the budget says so.
    pub(crate) fn push(&self, pieces: Vec<(usize, RecordBatch)>, bytes: usize) -> Result<()> {
        let spill = {
            let mut inner = self.inner.lock().expect("store lock");
            for (b, piece) in pieces {
                inner.rows_seen += piece.num_rows() as u64;
                inner.buckets[b].push(piece);
            }
            inner.held += bytes;
            inner.bytes_seen += bytes;
            inner.wants_spill(self.budget, self.expected_rows)
        };
        if spill { self.spill() } else { Ok(()) }
    }

    /// Counts `bytes` more (or fewer) held outside the store against its budget: memory
    /// the reading needs that cannot spill. Spills the rows held if that passes the budget.
    pub(crate) fn hold(&self, bytes: isize) -> Result<()> {
        let spill = {
            let mut inner = self.inner.lock().expect("store lock");
            inner.fixed = inner.fixed.saturating_add_signed(bytes);
            inner.wants_spill(self.budget, self.expected_rows)
        };
        if spill { self.spill() } else { Ok(()) }
    }

    /// Writes every row held to the spill folder, without holding the rows' lock: other
    /// threads push meanwhile. A thread that finds a spill being written waits for it
    /// (the rows it holds meanwhile are bounded by the budget).
    fn spill(&self) -> Result<()> {
        let mut spiller = self.spiller.lock().expect("spill lock");
        let (taken, bytes) = {
            let mut inner = self.inner.lock().expect("store lock");
            if !inner.wants_spill(self.budget, self.expected_rows) {
                return Ok(());
            }
            let taken: Vec<Vec<RecordBatch>> =
                inner.buckets.iter_mut().map(std::mem::take).collect();
            let bytes = std::mem::take(&mut inner.held);
            inner.spilling += bytes;
            (taken, bytes)
        };
        let written = spiller.write(taken);
        self.inner.lock().expect("store lock").spilling -= bytes;
        written
    }

    /// Rows written to the spill folder so far.
    pub(crate) fn spilled_rows(&self) -> usize {
        let spiller = self.spiller.lock().expect("spill lock");
        spiller.spill.as_ref().map_or(0, |s| s.rows)
    }

    /// Ends the reading: where each bucket's rows are, and the spill folder (removed
    /// with its files when dropped).
    pub(crate) fn finish(self) -> Result<(Vec<Source>, Option<SpillDir>)> {
        let inner = self.inner.into_inner().expect("store lock");
        let mut spiller = self.spiller.into_inner().expect("spill lock");
        let mut files = vec![None; inner.buckets.len()];
        let dir = match spiller.spill.take() {
            None => None,
            Some(mut spill) => {
                let parent = spiller.parent();
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

impl Spiller {
    /// Where spill folders go, for messages.
    fn parent(&self) -> PathBuf {
        self.spill_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// Appends each bucket's `taken` rows to its spill file.
    fn write(&mut self, taken: Vec<Vec<RecordBatch>>) -> Result<()> {
        let parent = self.parent();
        let full = |path: &Path, e: &dyn std::fmt::Display, disk_full: bool| {
            spill_failed(&parent, path, e, disk_full)
        };
        if self.spill.is_none() {
            sweep_once(&parent);
            let dir = SpillDir::create(&parent).map_err(|e| full(&parent, &e, is_disk_full(&e)))?;
            self.spill = Some(Spill {
                dir,
                writers: (0..taken.len()).map(|_| None).collect(),
                rows: 0,
                bytes: 0,
            });
        }
        let spill = self.spill.as_mut().expect("created above");
        for (b, pieces) in taken.into_iter().enumerate() {
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
                        FileWriter::try_new_with_options(
                            BufWriter::new(file),
                            &raw_schema(),
                            self.options.clone(),
                        )
                        .map_err(|e| full(&path, &e, arrow_disk_full(&e)))?,
                    )
                }
            };
            // One batch per bucket and spill: the pieces are a decoded batch's rows of
            // one bucket each (tens of rows), and each IPC message costs a header and a
            // compressed frame per buffer.
            let batch = arrow::compute::concat_batches(&raw_schema(), &pieces)
                .map_err(|e| full(&path, &e, false))?;
            drop(pieces);
            spill.rows += batch.num_rows();
            writer
                .write(&batch)
                .map_err(|e| full(&path, &e, arrow_disk_full(&e)))?;
            // Written through now, so that a full disk shows here, not at the end.
            writer
                .flush()
                .map_err(|e| full(&path, &e, arrow_disk_full(&e)))?;
        }
        spill.bytes = spill
            .writers
            .iter()
            .flatten()
            .filter_map(|w| w.get_ref().get_ref().metadata().ok())
            .map(|m| m.len())
            .sum();
        if spill.bytes > self.spill_max {
            return Err(Error::Write {
                path: spill.dir.dir.path().display().to_string(),
                message: format!(
                    "the shard's rows spilled {} bytes, more than `limits.spill_max` allows ({} bytes): raise `limits.spill_max`, or raise `limits.memory` so that less spills",
                    spill.bytes, self.spill_max
                ),
            });
        }
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
///
/// The store spills its rows into one; DataFusion's sessions (a shard's folds, the
/// finalizer's checks) are given another as their temp folder ([`SpillDir::scratch`]), so
/// that the `datafusion-*` folders they create inside are swept with it.
pub struct SpillDir {
    dir: tempfile::TempDir,
    /// Held locked; released (and the folder removed) on drop.
    _lock: File,
}

impl SpillDir {
    /// A locked folder in `spill_dir` (`limits.spill_dir`, else the OS temp folder) for
    /// DataFusion's spill files, after removing the folders there that processes which
    /// died left (once per process and folder).
    pub fn scratch(spill_dir: Option<&Path>) -> Result<SpillDir> {
        let parent = spill_dir.map_or_else(std::env::temp_dir, Path::to_owned);
        sweep_once(&parent);
        SpillDir::create(&parent).map_err(|e| spill_failed(&parent, &parent, &e, is_disk_full(&e)))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn create(parent: &Path) -> std::io::Result<SpillDir> {
        let dir = tempfile::Builder::new()
            .prefix(SPILL_PREFIX)
            .tempdir_in(parent)?;
        // Locked under another name, then renamed: a sweeping process (which opens and
        // locks `.lock` to see whether its owner died) never finds the lock file unlocked
        // in the moment between its creation and its lock, which made it remove a living
        // folder and this lock fail ("operation would block").
        let pending = dir.path().join(".lock.pending");
        let lock = File::create(&pending)?;
        lock.try_lock().map_err(std::io::Error::from)?;
        std::fs::rename(&pending, dir.path().join(LOCK_FILE))?;
        Ok(SpillDir { dir, _lock: lock })
    }
}

/// [`sweep_stale`], once per process and folder: folders left by processes that died
/// before this one started.
fn sweep_once(parent: &Path) {
    static SWEPT: Mutex<std::collections::BTreeSet<PathBuf>> =
        Mutex::new(std::collections::BTreeSet::new());
    let first = SWEPT
        .lock()
        .map(|mut swept| swept.insert(parent.to_owned()))
        .unwrap_or(false);
    if first {
        sweep_stale(parent);
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

        // DataFusion's temp folder: a scratch folder, swept with what DataFusion left in
        // it when its process died.
        let dead = parent.path().join(format!("{SPILL_PREFIX}dead-scratch"));
        std::fs::create_dir_all(dead.join("datafusion-abc")).unwrap();
        File::create(dead.join(LOCK_FILE)).unwrap();
        std::fs::write(dead.join("datafusion-abc/sort.arrow"), b"rows").unwrap();
        let scratch = SpillDir::scratch(Some(parent.path())).unwrap();
        assert!(
            !dead.exists(),
            "swept before the first scratch folder is made"
        );
        assert!(scratch.path().starts_with(parent.path()) && scratch.path().is_dir());
    }

    #[test]
    fn folders_made_while_others_sweep_are_never_swept() {
        // Shards of several processes make scratch folders in one temp folder while
        // others sweep it: a folder is never seen unlocked, so none is removed.
        let parent = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..300 {
                        let dir = SpillDir::create(parent.path()).expect("created and locked");
                        sweep_stale(parent.path());
                        assert!(dir.path().join(LOCK_FILE).exists(), "swept while alive");
                    }
                });
            }
        });
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
    fn a_shard_that_will_not_fit_spills_from_half_the_budget() {
        // 10 rows held in 60 bytes: 1,000 rows will not fit in 100 bytes, 15 rows will.
        let big = Store::new(1, 100, 1_000, None, u64::MAX, SpillCompression::None);
        big.push(vec![(0, rows(10, 0))], 40).unwrap();
        assert_eq!(big.spilled_rows(), 0, "under half the budget");
        big.push(vec![(0, rows(5, 10))], 20).unwrap();
        assert_eq!(big.spilled_rows(), 15, "past half the budget");
        let small = Store::new(1, 100, 15, None, u64::MAX, SpillCompression::None);
        small.push(vec![(0, rows(10, 0))], 40).unwrap();
        small.push(vec![(0, rows(5, 10))], 20).unwrap();
        assert_eq!(small.spilled_rows(), 0, "it fits: nothing spills");
        small.push(vec![(0, rows(10, 15))], 50).unwrap();
        assert_eq!(
            small.spilled_rows(),
            25,
            "past the budget, whatever the plan said"
        );
        let (sources, _dir) = big.finish().unwrap();
        assert_eq!(
            sources[0]
                .load()
                .unwrap()
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            15
        );
    }

    #[test]
    fn memory_held_outside_counts_against_the_budget() {
        let store = Store::new(1, 100, 0, None, u64::MAX, SpillCompression::None);
        store.push(vec![(0, rows(4, 0))], 40).unwrap();
        store.hold(50).unwrap();
        assert_eq!(store.spilled_rows(), 0);
        store.hold(20).unwrap();
        assert_eq!(store.spilled_rows(), 4, "40 held + 70 outside pass 100");
        store.hold(-70).unwrap();
        store.push(vec![(0, rows(4, 4))], 90).unwrap();
        assert_eq!(store.spilled_rows(), 4, "released");
    }

    #[test]
    fn rows_come_back_whole_whether_spilled_or_not() {
        for compression in [SpillCompression::None, SpillCompression::Lz4] {
            rows_come_back_whole(compression);
        }
    }

    fn rows_come_back_whole(compression: SpillCompression) {
        let store = Store::new(2, 1, 0, None, u64::MAX, compression);
        store
            .push(vec![(0, rows(3, 0)), (1, rows(2, 3))], 10)
            .unwrap();
        assert_eq!(store.spilled_rows(), 5);
        let unspilled = Store::new(2, usize::MAX, 0, None, u64::MAX, SpillCompression::None);
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
