//! A fault-injecting HTTP proxy for tests: put it in front of a real server (moto's S3)
//! and it injects, per request and from a seeded random source, what object stores do
//! to their clients — 503 SlowDown and 500 answers, connections reset before the request
//! lands, connections reset *after a write landed*, 500 answers after a write landed,
//! truncated response bodies, stalled connections and latency — or takes the server
//! away altogether ([`Faults::down`]).
//!
//! Every connection carries one request: the proxy answers with `Connection: close`, so
//! each request of a pooled client is one decision. What was injected is counted
//! ([`FaultProxy::injected`]) and logged ([`FaultProxy::log`]), so a test can show that its
//! faults happened.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The connection is reset before the request reaches the server.
    ResetBefore,
    /// `503 SlowDown` without forwarding the request.
    SlowDown,
    /// `500 InternalError` without forwarding the request.
    ServerError,
    /// The request is forwarded (a write lands), then the answer is `500 InternalError`.
    ErrorAfterWrite,
    /// The request is forwarded (a write lands), then the connection is reset.
    ResetAfterWrite,
    /// The answer's body is cut in half (its `Content-Length` kept), then the connection
    /// is closed.
    TruncatedBody,
    /// The connection is held open without an answer until the client gives up.
    Stall,
    /// The server is unreachable: every connection is reset at once.
    Down,
}

/// What the proxy injects: a probability per fault class, a latency, and an optional aim
/// (a path substring and a method) and limit.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Seed of the random source deciding each request's fate.
    pub seed: u64,
    /// Probability of [`Fault::ResetBefore`].
    pub reset_before: f64,
    /// Probability of [`Fault::SlowDown`].
    pub slow_down: f64,
    /// Probability of [`Fault::ServerError`].
    pub server_error: f64,
    /// Probability of [`Fault::ErrorAfterWrite`] (writes only: PUT, POST, DELETE).
    pub error_after_write: f64,
    /// Probability of [`Fault::ResetAfterWrite`] (writes only).
    pub reset_after_write: f64,
    /// Probability of [`Fault::TruncatedBody`] (answers with a body only).
    pub truncate_body: f64,
    /// Probability of [`Fault::Stall`].
    pub stall: f64,
    /// How long a stalled connection is held (the client's timeout should be shorter).
    pub stall_for: Duration,
    /// Added before every forwarded request.
    pub latency: Duration,
    /// Only requests whose path contains this are candidates.
    pub only_path: Option<String>,
    /// Only requests with this method are candidates.
    pub only_method: Option<String>,
    /// At most this many injections from the moment these faults are set.
    pub limit: Option<u64>,
    /// Every connection is reset at once.
    pub down: bool,
}

impl Faults {
    /// No faults: a transparent proxy.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every fault class at once, at rates a run survives within the default retry budget.
    pub fn all(seed: u64) -> Self {
        Faults {
            seed,
            reset_before: 0.04,
            slow_down: 0.04,
            server_error: 0.03,
            error_after_write: 0.04,
            reset_after_write: 0.04,
            truncate_body: 0.03,
            stall: 0.01,
            stall_for: Duration::from_secs(4),
            latency: Duration::from_millis(2),
            ..Faults::default()
        }
    }

    /// `fault` on every request matching `path` and `method`, at most `limit` times.
    pub fn aimed(fault: Fault, path: &str, method: &str, limit: u64) -> Self {
        let mut faults = Faults {
            only_path: Some(path.to_owned()),
            only_method: Some(method.to_owned()),
            limit: Some(limit),
            stall_for: Duration::from_secs(4),
            ..Faults::default()
        };
        match fault {
            Fault::ResetBefore => faults.reset_before = 1.0,
            Fault::SlowDown => faults.slow_down = 1.0,
            Fault::ServerError => faults.server_error = 1.0,
            Fault::ErrorAfterWrite => faults.error_after_write = 1.0,
            Fault::ResetAfterWrite => faults.reset_after_write = 1.0,
            Fault::TruncatedBody => faults.truncate_body = 1.0,
            Fault::Stall => faults.stall = 1.0,
            Fault::Down => faults.down = true,
        }
        faults
    }

    /// The server unreachable: every connection reset.
    pub fn down() -> Self {
        Faults {
            down: true,
            ..Faults::default()
        }
    }
}

/// What the proxy did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injected {
    /// Requests seen.
    pub requests: u64,
    /// Injections per fault class.
    pub counts: BTreeMap<Fault, u64>,
}

impl Injected {
    /// All injections.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Injections of one class.
    pub fn of(&self, fault: Fault) -> u64 {
        self.counts.get(&fault).copied().unwrap_or(0)
    }
}

struct State {
    faults: Faults,
    rng: ChaCha8Rng,
    injected_since_set: u64,
    injected: Injected,
    log: Vec<String>,
}

/// A fault-injecting proxy on `127.0.0.1`, stopped on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free loopback port, injecting `faults`.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub fn start(upstream: SocketAddr, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(State {
            rng: ChaCha8Rng::seed_from_u64(faults.seed),
            faults,
            injected_since_set: 0,
            injected: Injected::default(),
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (Arc::clone(&state), Arc::clone(&stop));
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let state = Arc::clone(&state2);
                let stop = Arc::clone(&stop2);
                thread::spawn(move || {
                    let _ = serve(conn, upstream, &state, &stop);
                });
            }
        });
        FaultProxy { addr, state, stop }
    }

    /// `http://127.0.0.1:PORT`: use it as the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults (their limit counts from now; the random source is reseeded).
    pub fn set(&self, faults: Faults) {
        let mut state = self.state.lock().unwrap();
        state.rng = ChaCha8Rng::seed_from_u64(faults.seed);
        state.faults = faults;
        state.injected_since_set = 0;
    }

    /// No more faults.
    pub fn heal(&self) {
        self.set(Faults::none());
    }

    /// What was injected so far.
    pub fn injected(&self) -> Injected {
        self.state.lock().unwrap().injected.clone()
    }

    /// One line per request: method, path and the fault injected (`-` for none).
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // wake the accept loop so that it sees `stop`
        let _ = TcpStream::connect(self.addr);
    }
}

struct Request {
    method: String,
    path: String,
    head: Vec<String>,
    body: Vec<u8>,
}

fn is_write(method: &str) -> bool {
    matches!(method, "PUT" | "POST" | "DELETE")
}

fn decide(state: &Mutex<State>, method: &str, path: &str) -> Option<Fault> {
    let mut s = state.lock().unwrap();
    s.injected.requests += 1;
    let fault = pick(&mut s, method, path);
    if let Some(fault) = fault {
        s.injected_since_set += 1;
        *s.injected.counts.entry(fault).or_default() += 1;
    }
    let line = format!(
        "{method} {path} {}",
        fault.map_or("-".to_owned(), |f| format!("{f:?}"))
    );
    s.log.push(line);
    fault
}

fn pick(s: &mut State, method: &str, path: &str) -> Option<Fault> {
    if s.faults.down {
        return Some(Fault::Down);
    }
    let f = &s.faults;
    if f.only_path.as_deref().is_some_and(|p| !path.contains(p))
        || f.only_method.as_deref().is_some_and(|m| m != method)
        || f.limit.is_some_and(|l| s.injected_since_set >= l)
    {
        return None;
    }
    let write = is_write(method);
    let classes = [
        (Fault::ResetBefore, f.reset_before, true),
        (Fault::SlowDown, f.slow_down, true),
        (Fault::ServerError, f.server_error, true),
        (Fault::ErrorAfterWrite, f.error_after_write, write),
        (Fault::ResetAfterWrite, f.reset_after_write, write),
        (Fault::TruncatedBody, f.truncate_body, method == "GET"),
        (Fault::Stall, f.stall, true),
    ];
    let roll: f64 = s.rng.random();
    let mut edge = 0.0;
    for (fault, p, applies) in classes {
        if !applies {
            continue;
        }
        edge += p;
        if roll < edge {
            return Some(fault);
        }
    }
    None
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> io::Result<()> {
    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(request) = read_request(&mut reader)? else {
        return Ok(());
    };
    let fault = decide(state, &request.method, &request.path);
    let (latency, stall_for) = {
        let s = state.lock().unwrap();
        (s.faults.latency, s.faults.stall_for)
    };
    match fault {
        Some(Fault::Down | Fault::ResetBefore) => return reset(client),
        Some(Fault::SlowDown) => return answer_error(client, 503, "SlowDown"),
        Some(Fault::ServerError) => return answer_error(client, 500, "InternalError"),
        Some(Fault::Stall) => {
            // hold the connection without a word until the client gives up or time runs out
            let mut sink = [0u8; 1024];
            client.set_read_timeout(Some(stall_for))?;
            let _ = (&client).read(&mut sink);
            return reset(client);
        }
        _ => {}
    }
    if !latency.is_zero() {
        thread::sleep(latency);
    }
    let response = forward(upstream, &request)?;
    match fault {
        Some(Fault::ResetAfterWrite) => reset(client),
        Some(Fault::ErrorAfterWrite) => answer_error(client, 500, "InternalError"),
        Some(Fault::TruncatedBody) => {
            let (head, body) = split_response(&response);
            let mut client = client;
            client.write_all(&close_head(head))?;
            client.write_all(&body[..body.len() / 2])?;
            client.flush()?;
            client.shutdown(Shutdown::Both)
        }
        _ => {
            let (head, body) = split_response(&response);
            let mut client = client;
            client.write_all(&close_head(head))?;
            client.write_all(body)?;
            client.flush()?;
            client.shutdown(Shutdown::Write)
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut head = vec![line.trim_end().to_owned()];
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end().to_owned();
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
            continue;
        }
        if lower.starts_with("connection:") || lower.starts_with("content-length:") {
            continue;
        }
        head.push(header);
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some(Request {
        method,
        path,
        head,
        body,
    }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            // trailers, then the empty line
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// Sends the request to the server on a connection of its own and reads the whole answer.
fn forward(upstream: SocketAddr, request: &Request) -> io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = request.head.join("\r\n").into_bytes();
    out.extend_from_slice(
        format!(
            "\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            request.body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&request.body);
    server.write_all(&out)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    Ok(response)
}

fn split_response(response: &[u8]) -> (&[u8], &[u8]) {
    match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => (&response[..end], &response[end + 4..]),
        None => (response, &[]),
    }
}

/// The answer's head with `Connection: close` in place of the server's.
fn close_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn answer_error(mut client: TcpStream, status: u16, code: &str) -> io::Result<()> {
    let reason = if status == 503 {
        "Service Unavailable"
    } else {
        "Internal Server Error"
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes())?;
    client.flush()?;
    client.shutdown(Shutdown::Write)
}

/// Resets the connection (RST, not FIN): SO_LINGER with a zero timeout, then close.
fn reset(client: TcpStream) -> io::Result<()> {
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO))?;
    drop(client);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server answering `body` to every request, counting requests.
    fn origin(body: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if let Ok(Some(request)) = read_request(&mut reader) {
                    seen2.lock().unwrap().push(format!(
                        "{} {} {}",
                        request.method,
                        request.path,
                        String::from_utf8_lossy(&request.body)
                    ));
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (addr, seen)
    }

    fn send(addr: SocketAddr, method: &str, body: &str) -> io::Result<Vec<u8>> {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            conn,
            "{method} /bucket/key HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = Vec::new();
        conn.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_clean_proxy_passes_requests_and_answers_through() {
        let (origin, seen) = origin("hello");
        let proxy = FaultProxy::start(origin, Faults::none());
        let answer = send(proxy.addr(), "PUT", "payload").unwrap();
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("hello") && text.contains("Connection: close"));
        assert_eq!(*seen.lock().unwrap(), ["PUT /bucket/key payload"]);
        assert_eq!(proxy.injected().total(), 0);
    }

    #[test]
    fn a_reset_after_write_lands_the_write_and_resets_the_client() {
        let (origin, seen) = origin("hello");
        let proxy = FaultProxy::start(
            origin,
            Faults::aimed(Fault::ResetAfterWrite, "/bucket/", "PUT", 1),
        );
        let err = send(proxy.addr(), "PUT", "landed").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(*seen.lock().unwrap(), ["PUT /bucket/key landed"]);
        // the limit is spent: the next write passes
        assert!(send(proxy.addr(), "PUT", "again").is_ok());
        assert_eq!(proxy.injected().of(Fault::ResetAfterWrite), 1);
    }

    #[test]
    fn reset_before_and_errors_never_reach_the_server_and_truncation_cuts_the_body() {
        let (origin, seen) = origin("0123456789");
        let proxy = FaultProxy::start(origin, Faults::aimed(Fault::ResetBefore, "/", "PUT", 1));
        assert!(send(proxy.addr(), "PUT", "lost").is_err());
        proxy.set(Faults::aimed(Fault::SlowDown, "/", "GET", 1));
        let answer = String::from_utf8(send(proxy.addr(), "GET", "").unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("SlowDown"));
        assert!(seen.lock().unwrap().is_empty());
        proxy.set(Faults::aimed(Fault::TruncatedBody, "/", "GET", 1));
        let answer = String::from_utf8(send(proxy.addr(), "GET", "").unwrap()).unwrap();
        assert!(answer.contains("Content-Length: 10"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n01234"), "{answer}");
        proxy.set(Faults::down());
        assert!(send(proxy.addr(), "GET", "").is_err());
        proxy.heal();
        assert!(send(proxy.addr(), "GET", "").is_ok());
        assert_eq!(proxy.injected().requests, 5);
        assert_eq!(proxy.injected().total(), 4);
    }

    #[test]
    fn the_same_seed_injects_the_same_faults() {
        let (origin, _) = origin("x");
        let run = || {
            let proxy = FaultProxy::start(origin, Faults::all(7));
            for _ in 0..60 {
                let _ = send(proxy.addr(), "PUT", "b");
            }
            proxy.log()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(|l| !l.ends_with(" -")), "{first:?}");
    }
}
