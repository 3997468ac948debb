//! Where a shard's raw rows wait between reading and the buckets' replay: in memory up
//! to a budget (70% of `limits.memory`), then appended to one Arrow IPC file per bucket
//! in a spill folder (under the system's temp folder, `TMPDIR`), removed when the shard
//! is done. A bucket is read back whole when its turn comes, so memory holds the rows
//! not yet spilled and the buckets being replayed, whatever the shard's size.

use std::{fs::File, io::BufWriter, sync::Mutex};

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
    held: usize,
    buckets: Vec<Vec<RecordBatch>>,
    spill: Option<Spill>,
}

struct Spill {
    dir: tempfile::TempDir,
    writers: Vec<Option<FileWriter<BufWriter<File>>>>,
    rows: usize,
}

impl Store {
    /// A store for `buckets` buckets that holds up to `budget` bytes in memory.
    pub(crate) fn new(buckets: usize, budget: usize) -> Store {
        Store {
            inner: Mutex::new(Inner {
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
    pub(crate) fn finish(self) -> Result<(Vec<Source>, Option<tempfile::TempDir>)> {
        let mut inner = self.inner.into_inner().expect("store lock");
        let mut files = vec![None; inner.buckets.len()];
        let dir = match inner.spill.take() {
            None => None,
            Some(mut spill) => {
                for (b, writer) in spill.writers.iter_mut().enumerate() {
                    if let Some(mut w) = writer.take() {
                        w.finish().map_err(spill_error)?;
                        files[b] = Some(spill.dir.path().join(format!("bucket-{b}.arrow")));
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
    fn spill_all(&mut self) -> Result<()> {
        if self.spill.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("replayfleet-spill-")
                .tempdir()
                .map_err(|e| Error::Write {
                    path: std::env::temp_dir().display().to_string(),
                    message: format!("cannot create a spill folder: {e}"),
                })?;
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
            let writer = match &mut spill.writers[b] {
                Some(w) => w,
                slot @ None => {
                    let path = spill.dir.path().join(format!("bucket-{b}.arrow"));
                    let file = File::create(&path).map_err(|e| Error::Write {
                        path: path.display().to_string(),
                        message: format!("cannot spill: {e}"),
                    })?;
                    slot.insert(
                        FileWriter::try_new(BufWriter::new(file), &raw_schema())
                            .map_err(spill_error)?,
                    )
                }
            };
            for piece in pieces.drain(..) {
                spill.rows += piece.num_rows();
                writer.write(&piece).map_err(spill_error)?;
            }
        }
        self.held = 0;
        Ok(())
    }
}

fn spill_error(e: arrow::error::ArrowError) -> Error {
    Error::Write {
        path: "(spill folder)".into(),
        message: format!("cannot spill rows to disk: {e}"),
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
        let store = Store::new(2, 1);
        store
            .push(vec![(0, rows(3, 0)), (1, rows(2, 3))], 10)
            .unwrap();
        assert_eq!(store.spilled_rows(), 5);
        let unspilled = Store::new(2, usize::MAX);
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
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "files removed"
        );
    }
}
