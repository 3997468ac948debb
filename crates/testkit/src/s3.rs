//! A moto S3 server for tests.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    sync::atomic::{AtomicU64, Ordering},
};

/// How long moto gets to answer HTTP after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Port collisions tolerated before giving up.
const START_ATTEMPTS: usize = 5;

/// A moto S3 server on `127.0.0.1`, killed (and reaped) on drop.
///
/// Buckets are cheap: give every test its own with [`S3Server::create_bucket`].
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl S3Server {
    /// Starts moto on a free loopback port and waits until it answers HTTP.
    ///
    /// # Panics
    ///
    /// When moto cannot be found or does not answer within 30 s; the message holds the
    /// tail of its log.
    pub fn start() -> Self {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let log = tempfile::Builder::new()
                .prefix("moto-")
                .suffix(".log")
                .tempfile()
                .expect("create a log file for moto");
            let child = spawn_moto(port, &log);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut server = Self { child, addr, log };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(failure) => last_failure = failure,
            }
            // Dropping `server` kills the failed attempt; a port taken between our probe
            // and moto's bind makes moto exit early, and the next attempt picks another.
        }
        panic!("moto S3 server did not start after {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// The server's address (for a [`crate::FaultProxy`] in front of it).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket with a random name and returns the name.
    ///
    /// # Panics
    ///
    /// When moto refuses.
    pub fn create_bucket(&self) -> String {
        // RandomState is seeded randomly per process; the counter separates calls.
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let suffix = RandomState::new().hash_one((
            std::process::id(),
            CALLS.fetch_add(1, Ordering::Relaxed),
            Instant::now(),
        ));
        let bucket = format!("test-{suffix:016x}");
        let status = http_request(self.addr, "PUT", &format!("/{bucket}"))
            .unwrap_or_else(|e| panic!("create bucket `{bucket}`: {e}"));
        assert!(
            (200..300).contains(&status),
            "create bucket `{bucket}`: moto answered HTTP {status}"
        );
        bucket
    }

    /// object_store options for this server (`AmazonS3Builder::with_config` keys).
    pub fn options(&self) -> BTreeMap<String, String> {
        [
            ("endpoint", self.endpoint()),
            ("allow_http", "true".to_owned()),
            ("region", "us-east-1".to_owned()),
            ("access_key_id", "testing".to_owned()),
            ("secret_access_key", "testing".to_owned()),
            ("virtual_hosted_style_request", "false".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// `AWS_*` environment variables pointing a child process at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "moto exited with {status}; log:\n{}",
                    self.log_tail()
                ));
            }
            if http_request(self.addr, "GET", "/").is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "moto did not answer on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.addr,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
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

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// `moto_server` from PATH, else `python3 -m moto.server`.
fn spawn_moto(port: u16, log: &tempfile::NamedTempFile) -> Child {
    let port = port.to_string();
    let args = ["-H", "127.0.0.1", "-p", port.as_str()];
    let stderr = || {
        log.reopen()
            .map(Stdio::from)
            .expect("open moto's log file for writing")
    };
    let moto_server = find_on_path("moto_server");
    let mut command = match &moto_server {
        Some(path) => Command::new(path),
        None => {
            let mut c = Command::new("python3");
            c.args(["-m", "moto.server"]);
            c
        }
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stderr())
        .stderr(stderr())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start moto ({}): {e}; install it with `pip install 'moto[server]'`",
                moto_server
                    .as_ref()
                    .map_or("python3 -m moto.server".to_owned(), |p| p
                        .display()
                        .to_string())
            )
        })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A bare HTTP/1.1 request without body; returns the status code.
fn http_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {:?}", response.lines().next()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_port(), 0);
    }
}
