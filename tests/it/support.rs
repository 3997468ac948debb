//! Helpers shared by the integration tests: the `replayfleet` binary and its outcome.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The `replayfleet` binary built next to this test binary (target/<profile>/replayfleet).
pub fn bin() -> PathBuf {
    binary("replayfleet")
}

/// The bench binary (`crates/bench`), built beside `replayfleet`.
pub fn bench_bin() -> PathBuf {
    binary("replayfleet-bench")
}

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/it-<hash> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bin {name}` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, printing both streams when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts stderr mentions every needle.
    #[track_caller]
    pub fn stderr_names(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr does not name `{n}`:\n{}",
                self.stderr
            );
        }
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `replayfleet args...` with extra environment variables.
pub fn replayfleet_env(args: &[&str], env: &[(String, String)]) -> Run {
    run_env(bin(), args, env)
}

fn run_env(bin: PathBuf, args: &[&str], env: &[(String, String)]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("spawn replayfleet");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `replayfleet args...`.
pub fn replayfleet(args: &[&str]) -> Run {
    replayfleet_env(args, &[])
}

/// Runs `replayfleet finalize --target TARGET --run RUN_ID extra...`.
pub fn finalize(target: &Path, run_id: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "finalize",
        "--target",
        target.to_str().unwrap(),
        "--run",
        run_id,
    ];
    args.extend_from_slice(extra);
    replayfleet(&args)
}

/// Runs `replayfleet-bench args...`.
pub fn replayfleet_bench(args: &[&str]) -> Run {
    run_env(bench_bin(), args, &[])
}

/// Copies the example catalog into `dir/contracts` and returns that folder.
pub fn copy_example_contracts(dir: &Path) -> PathBuf {
    let to = dir.join("contracts");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(repo().join("examples/accounts/contracts")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

/// A Parquet file's rows as one batch.
pub fn read_parquet_batch(path: &Path) -> arrow::array::RecordBatch {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<arrow::array::RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}
