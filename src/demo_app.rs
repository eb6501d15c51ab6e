//! The built-in demo app (`healgate demo-app`): an HTTP/1.1 server with faults on demand.
//!
//! The supervisor starts it as a child process (`healgate demo-app --port N`) and the
//! integration tests use it as a real misbehaving upstream. It speaks HTTP/1.1 by hand
//! (parsing with `httparse`) because several faults write bytes no HTTP library would.
//!
//! Routes (any method is accepted; `HEAD` gets the headers without the body):
//!
//! | path                | answer                                                         |
//! |---------------------|----------------------------------------------------------------|
//! | `/`                 | 200 `hello from <instance>`                                    |
//! | `/healthz`          | 200 `ok`                                                       |
//! | `/slow?ms=N`        | waits N ms (default 1000), then 200                            |
//! | `/leak?mb=N`        | keeps N MiB (default 10) for the life of the process, then 200 |
//! | `/cpu?ms=N`         | burns CPU for N ms (default 1000), then 200                    |
//! | `/crash`            | prints a stack trace to stderr and exits with code 1           |
//! | `/abort`            | dies by `SIGABRT`                                              |
//! | `/hang`             | stops answering everything, keeping its sockets open           |
//! | `/status/{code}`    | answers `code` itself (100..=599, else 400)                    |
//! | `/bad`              | writes a malformed response and closes                         |
//! | `/bigheader?kb=N`   | 200 with an `X-Big` header of N KiB (default 16)               |
//! | `/echo`             | 200 echoing method, target, headers and body                   |
//! | anything else       | 404                                                            |
//!
//! Every response carries `Content-Length`, `X-Instance` (env `HEALGATE_INSTANCE`, default
//! `demo`) and `X-Pid`. Connections are kept alive unless the client asks otherwise; a
//! connection without a complete request head for 60 s is closed. One line per request
//! (`GET /slow?ms=10 200 12ms`) goes to stdout.

use std::fmt::Display;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How long a connection may go without a complete request head before it is closed.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one read of a request body may wait for bytes.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head accepted (431 beyond).
const MAX_HEAD: usize = 64 * 1024;
/// Most request header fields accepted (431 beyond).
const MAX_HEADERS: usize = 128;
/// Largest chunk-size or trailer line in a chunked body.
const MAX_LINE: usize = 8 * 1024;
/// Largest request body accepted (413 beyond).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Longest wait or burn a request may ask for (one day).
const MAX_MS: u64 = 24 * 60 * 60 * 1000;
/// Largest single leak a request may ask for (1 TiB: the OOM killer comes first).
const MAX_LEAK_MB: u64 = 1024 * 1024;
/// Largest `X-Big` header a request may ask for (16 MiB).
const MAX_BIG_HEADER_KB: u64 = 16 * 1024;

/// Set by `/hang`: from then on nothing is answered.
static HUNG: AtomicBool = AtomicBool::new(false);
/// Memory kept by `/leak`, never freed.
static LEAKED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Run the demo app on 127.0.0.1:`port` (0 = any free port) until killed. Prints
/// `demo-app listening on 127.0.0.1:<port>` to stdout (flushed) once bound.
pub fn run(port: u16) -> ExitCode {
    // Two workers, so a request burning CPU or a slow client never blocks /healthz.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("demo-app")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("demo-app: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("demo-app: cannot listen on 127.0.0.1:{port}: {err}");
                return ExitCode::FAILURE;
            }
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(err) => {
                eprintln!("demo-app: cannot read the bound address: {err}");
                return ExitCode::FAILURE;
            }
        };
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "demo-app listening on {addr}");
            let _ = out.flush();
        }
        serve(listener).await;
        ExitCode::SUCCESS
    })
}

/// Accept connections on `listener` and serve each on its own task. Never returns; tests
/// spawn it on a listener bound to `127.0.0.1:0`.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream));
            }
            // Out of descriptors or an aborted handshake: pause briefly, keep going.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The instance name shown in answers: env `HEALGATE_INSTANCE`, else `demo`.
fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        std::env::var("HEALGATE_INSTANCE")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "demo".to_owned())
    })
}

/// Whether `/hang` has been requested.
fn hung() -> bool {
    HUNG.load(Ordering::Relaxed)
}

/// If the app is hung, never complete (the caller keeps its socket open meanwhile).
async fn stall_if_hung() {
    if hung() {
        std::future::pending::<()>().await;
    }
}

/// Serve one connection; once hung, keep it open forever instead of closing it.
async fn serve_connection(stream: TcpStream) {
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(4096),
    };
    conn.serve().await;
    stall_if_hung().await;
}

/// Why reading a request stopped.
enum ReadFail {
    /// The peer closed, the read failed or timed out: close without answering.
    Closed,
    /// The request is unacceptable: answer this status with this reason, then close.
    Reject(u16, &'static str),
}

/// A parsed request head, owned.
struct Head {
    method: String,
    target: String,
    minor_version: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The values of every header field called `name`.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The comma-separated tokens of every header field called `name`, lowercased.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Whether the connection may stay open after this request.
    fn keep_alive(&self) -> bool {
        let connection = self.tokens("connection");
        if connection.iter().any(|t| t == "close") {
            false
        } else if self.minor_version == 0 {
            connection.iter().any(|t| t == "keep-alive")
        } else {
            true
        }
    }

    /// The path part of the target.
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The raw value of query parameter `key`, if present.
    fn query(&self, key: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// Query parameter `key` as a number: `default` when absent, an error answer when it
    /// is not a number or above `max`.
    fn number(&self, key: &str, default: u64, max: u64) -> Result<u64, Reply> {
        match self.query(key) {
            None => Ok(default),
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(Reply::text(
                    400,
                    format!("bad request: {key} must be a whole number from 0 to {max}\n"),
                )),
            },
        }
    }
}

/// A response to serialise with the standard headers.
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// A `text/plain` answer.
    fn text(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }

    /// Serialise as HTTP/1.1. `head_only` drops the body (HEAD); `close` announces
    /// `Connection: close`; `announce_keep_alive` says `keep-alive` to HTTP/1.0 clients.
    fn encode(&self, head_only: bool, close: bool, announce_keep_alive: bool) -> Vec<u8> {
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        let informational = self.status < 200;
        let bodiless = informational || self.status == 204 || self.status == 304;
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nX-Instance: {}\r\nX-Pid: {}\r\n",
            self.status,
            instance(),
            std::process::id()
        );
        if !bodiless {
            head.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            ));
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        } else if announce_keep_alive {
            head.push_str("Connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !head_only && !bodiless {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// What a route wants written.
enum Action {
    /// A well-formed response.
    Reply(Reply),
    /// These exact bytes (not valid HTTP), then close.
    Malformed(&'static [u8]),
}

/// One client connection and the bytes read from it but not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Answer requests until the connection should close.
    async fn serve(&mut self) {
        loop {
            let head = match self.read_head().await {
                Ok(head) => head,
                Err(fail) => return self.fail(fail, None).await,
            };
            let started = Instant::now();
            stall_if_hung().await;
            let body = match self.read_body(&head).await {
                Ok(body) => body,
                Err(fail) => return self.fail(fail, Some((&head, started))).await,
            };
            let action = dispatch(&head, body).await;
            stall_if_hung().await;
            match action {
                Action::Reply(reply) => {
                    let informational = reply.status < 200;
                    let close = !head.keep_alive() || informational;
                    let bytes = reply.encode(head.method == "HEAD", close, head.minor_version == 0);
                    if self.stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                    log_request(&head, reply.status, started);
                    if close {
                        let _ = self.stream.shutdown().await;
                        return;
                    }
                }
                Action::Malformed(bytes) => {
                    let _ = self.stream.write_all(bytes).await;
                    log_request(&head, "malformed", started);
                    let _ = self.stream.shutdown().await;
                    return;
                }
            }
        }
    }

    /// End the connection after `fail`, answering first when the request was rejected.
    async fn fail(&mut self, fail: ReadFail, head: Option<(&Head, Instant)>) {
        if let ReadFail::Reject(status, reason) = fail {
            let reply = Reply::text(status, format!("{reason}\n"));
            let _ = self
                .stream
                .write_all(&reply.encode(false, true, false))
                .await;
            let _ = self.stream.shutdown().await;
            match head {
                Some((head, started)) => log_request(head, status, started),
                None => log_line(format_args!("- - {status} ({reason})")),
            }
        }
    }

    /// Read more bytes into the buffer, giving up at `deadline`.
    async fn fill(&mut self, deadline: Instant) -> Result<(), ReadFail> {
        self.buf.reserve(8192);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            _ => Err(ReadFail::Closed),
        }
    }

    /// Read and parse the next request head, within [`HEAD_TIMEOUT`].
    async fn read_head(&mut self) -> Result<Head, ReadFail> {
        let deadline = Instant::now() + HEAD_TIMEOUT;
        loop {
            if !self.buf.is_empty() {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut request = httparse::Request::new(&mut fields);
                match request.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = Head {
                            method: request.method.unwrap_or("GET").to_owned(),
                            target: request.path.unwrap_or("/").to_owned(),
                            minor_version: request.version.unwrap_or(1),
                            headers: request
                                .headers
                                .iter()
                                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                                .collect(),
                        };
                        self.buf.drain(..len);
                        return Ok(head);
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                        return Err(ReadFail::Reject(431, "request head too large"));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(ReadFail::Reject(431, "too many header fields"));
                    }
                    Err(_) => return Err(ReadFail::Reject(400, "malformed request head")),
                }
            }
            self.fill(deadline).await?;
        }
    }

    /// Read the body `head` announces (Content-Length or chunked), up to [`MAX_BODY`].
    async fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, ReadFail> {
        let codings = head.tokens("transfer-encoding");
        let lengths: Vec<&[u8]> = head.values("content-length").collect();
        let chunked = match codings.last() {
            None => false,
            Some(last) if last == "chunked" => true,
            Some(_) => return Err(ReadFail::Reject(501, "unsupported transfer-encoding")),
        };
        let length = if chunked {
            0
        } else {
            match lengths.split_first() {
                None => 0,
                Some((first, rest)) => {
                    if rest.iter().any(|other| other != first) {
                        return Err(ReadFail::Reject(400, "conflicting content-length"));
                    }
                    let parsed = std::str::from_utf8(first)
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<usize>().ok());
                    match parsed {
                        Some(n) if n <= MAX_BODY => n,
                        Some(_) => return Err(ReadFail::Reject(413, "request body too large")),
                        None => return Err(ReadFail::Reject(400, "malformed content-length")),
                    }
                }
            }
        };
        if (chunked || length > 0)
            && head.minor_version == 1
            && head.tokens("expect").iter().any(|t| t == "100-continue")
        {
            let _ = self
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await;
        }
        if chunked {
            self.read_chunked().await
        } else {
            self.take(length).await
        }
    }

    /// Take exactly `len` bytes off the connection.
    async fn take(&mut self, len: usize) -> Result<Vec<u8>, ReadFail> {
        while self.buf.len() < len {
            self.fill(Instant::now() + BODY_READ_TIMEOUT).await?;
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// Take one line (without its line ending) off the connection.
    async fn read_line(&mut self) -> Result<Vec<u8>, ReadFail> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(ReadFail::Reject(400, "chunked body line too long"));
            }
            self.fill(Instant::now() + BODY_READ_TIMEOUT).await?;
        }
    }

    /// Decode a chunked body, discarding chunk extensions and trailers.
    async fn read_chunked(&mut self) -> Result<Vec<u8>, ReadFail> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size = line.split(|&b| b == b';').next().unwrap_or(&[]);
            let size = std::str::from_utf8(size)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .ok_or(ReadFail::Reject(400, "malformed chunk size"))?;
            if size == 0 {
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > MAX_BODY {
                return Err(ReadFail::Reject(413, "request body too large"));
            }
            body.extend(self.take(size).await?);
            if !self.read_line().await?.is_empty() {
                return Err(ReadFail::Reject(400, "chunk data longer than its size"));
            }
        }
    }
}

/// Route one request to its answer (or to its fault).
async fn dispatch(head: &Head, body: Vec<u8>) -> Action {
    let reply = match head.path() {
        "/" => Reply::text(200, format!("hello from {}\n", instance())),
        "/healthz" => Reply::text(200, "ok"),
        "/slow" => match head.number("ms", 1000, MAX_MS) {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Reply::text(200, format!("slept {ms} ms\n"))
            }
            Err(reply) => reply,
        },
        "/leak" => match head.number("mb", 10, MAX_LEAK_MB) {
            Ok(mb) => leak(mb).await,
            Err(reply) => reply,
        },
        "/cpu" => match head.number("ms", 1000, MAX_MS) {
            Ok(ms) => burn_cpu(ms).await,
            Err(reply) => reply,
        },
        "/crash" => crash(head),
        "/abort" => {
            log_line(format_args!("{} {} abort", head.method, head.target));
            std::process::abort()
        }
        "/hang" => {
            HUNG.store(true, Ordering::Relaxed);
            log_line(format_args!(
                "{} {} hang: no more answers",
                head.method, head.target
            ));
            std::future::pending::<Reply>().await
        }
        "/bad" => {
            return Action::Malformed(
                b"HTTP/1.1 abc nonsense\r\nX-Garbage\r\n\x01\x02 this is: not a header\r\n\r\n",
            )
        }
        "/bigheader" => match head.number("kb", 16, MAX_BIG_HEADER_KB) {
            Ok(kb) => {
                let mut reply = Reply::text(200, format!("X-Big is {kb} KiB\n"));
                reply
                    .headers
                    .push(("X-Big", "a".repeat(kb as usize * 1024)));
                reply
            }
            Err(reply) => reply,
        },
        "/echo" => echo(head, body),
        path => match path.strip_prefix("/status/") {
            Some(code) => status(code),
            None => Reply::text(404, format!("not found: {path}\n")),
        },
    };
    Action::Reply(reply)
}

/// `/status/{code}`: answer `code` itself.
fn status(code: &str) -> Reply {
    match code.parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => {
            Reply::text(code, format!("status {code} from {}\n", instance()))
        }
        _ => Reply::text(400, format!("bad request: no status code {code:?}\n")),
    }
}

/// `/leak`: allocate `mb` MiB, touch every page and keep it forever.
async fn leak(mb: u64) -> Reply {
    let Some(bytes) = usize::try_from(mb)
        .ok()
        .and_then(|mb| mb.checked_mul(1024 * 1024))
    else {
        return Reply::text(400, "bad request: mb too large\n");
    };
    let kept = tokio::task::spawn_blocking(move || {
        let mut block: Vec<u8> = Vec::new();
        block.try_reserve_exact(bytes).ok()?;
        // Write every byte so the pages are really resident, not just reserved.
        block.resize(bytes, 0x5a);
        let mut leaked = LEAKED.lock().unwrap_or_else(|e| e.into_inner());
        leaked.push(block);
        Some(leaked.iter().map(Vec::len).sum::<usize>())
    })
    .await;
    match kept {
        Ok(Some(total)) => Reply::text(
            200,
            format!("leaked {mb} MiB, {} MiB in total\n", total / (1024 * 1024)),
        ),
        _ => Reply::text(507, format!("could not allocate {mb} MiB\n")),
    }
}

/// `/cpu`: keep one thread busy for `ms` milliseconds, off the async workers.
async fn burn_cpu(ms: u64) -> Reply {
    let burned = tokio::task::spawn_blocking(move || {
        let end = std::time::Instant::now() + Duration::from_millis(ms);
        let mut x: u64 = 1;
        while std::time::Instant::now() < end {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        }
        x
    })
    .await;
    match burned {
        Ok(_) => Reply::text(200, format!("burned {ms} ms of CPU\n")),
        Err(_) => Reply::text(500, "cpu burner failed\n"),
    }
}

/// `/crash`: print a stack trace to stderr and exit with code 1, answering nothing.
fn crash(head: &Head) -> ! {
    log_line(format_args!("{} {} exit 1", head.method, head.target));
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "Traceback (most recent call last):\n  \
         File \"app.py\", line 42, in handler\n    \
         raise RuntimeError(\"crash requested via /crash\")\n\
         RuntimeError: crash requested via /crash (pid {})\n",
        std::process::id()
    );
    let _ = err.flush();
    let _ = std::io::stdout().flush();
    std::process::exit(1)
}

/// `/echo`: the request line, one `name: value` line per header, a blank line, the body.
fn echo(head: &Head, body: Vec<u8>) -> Reply {
    let mut text = format!("{} {}\n", head.method, head.target).into_bytes();
    for (name, value) in &head.headers {
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(b": ");
        text.extend_from_slice(value);
        text.push(b'\n');
    }
    text.push(b'\n');
    text.extend_from_slice(&body);
    Reply {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        headers: Vec::new(),
        body: text,
    }
}

/// Log `METHOD TARGET OUTCOME ELAPSEDms` for one request.
fn log_request(head: &Head, outcome: impl Display, started: Instant) {
    log_line(format_args!(
        "{} {} {} {}ms",
        head.method,
        head.target,
        outcome,
        started.elapsed().as_millis()
    ));
}

/// Write one line to stdout (the app output the supervisor captures), ignoring a closed pipe.
fn log_line(line: std::fmt::Arguments<'_>) {
    // Under `cargo test`, go through the captured `print!` so test output stays quiet.
    if cfg!(test) {
        println!("{line}");
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A parsed response as a client saw it.
    struct Seen {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// Start the demo app in-process on an ephemeral port.
    async fn start() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        addr
    }

    /// Read one response off `stream`; `buf` keeps bytes of later responses.
    async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Seen {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) = response.parse(buf).expect("valid response") {
                let status = response.code.unwrap();
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                buf.drain(..len);
                let mut seen = Seen {
                    status,
                    headers,
                    body: Vec::new(),
                };
                let length: usize = match seen.header("content-length") {
                    Some(v) if !head_only => v.parse().unwrap(),
                    _ => 0,
                };
                while buf.len() < length {
                    assert!(stream.read_buf(buf).await.unwrap() > 0, "body cut short");
                }
                seen.body = buf.drain(..length).collect();
                return seen;
            }
            assert!(stream.read_buf(buf).await.unwrap() > 0, "head cut short");
        }
    }

    /// Send `request` on a fresh connection and read one response.
    async fn exchange(addr: SocketAddr, request: &str) -> Seen {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        read_response(&mut stream, &mut Vec::new(), false).await
    }

    /// Fail instead of hanging when the server misbehaves.
    async fn within<T>(test: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), test)
            .await
            .expect("test timed out")
    }

    #[tokio::test]
    async fn root_says_hello_with_instance_and_pid() {
        within(async {
            let addr = start().await;
            let seen = exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert_eq!(seen.status, 200);
            assert_eq!(seen.text(), format!("hello from {}\n", instance()));
            assert_eq!(seen.header("x-instance"), Some(instance()));
            assert_eq!(
                seen.header("x-pid"),
                Some(std::process::id().to_string().as_str())
            );
            assert!(seen
                .header("content-type")
                .unwrap()
                .starts_with("text/plain"));
        })
        .await
    }

    #[tokio::test]
    async fn keep_alive_serves_two_requests_on_one_connection() {
        within(async {
            let addr = start().await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::new();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let first = read_response(&mut stream, &mut buf, false).await;
            assert_eq!(first.status, 200);
            assert_eq!(first.header("connection"), None);
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let second = read_response(&mut stream, &mut buf, false).await;
            assert_eq!(second.status, 200);
            assert_eq!(second.text(), "ok");

            // Pipelined: two requests in one write, two answers in order.
            stream
                .write_all(b"GET /status/201 HTTP/1.1\r\n\r\nGET /status/202 HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(
                read_response(&mut stream, &mut buf, false).await.status,
                201
            );
            assert_eq!(
                read_response(&mut stream, &mut buf, false).await.status,
                202
            );
        })
        .await
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        within(async {
            let addr = start().await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let seen = read_response(&mut stream, &mut buf, false).await;
            assert_eq!(seen.status, 200);
            assert_eq!(seen.header("connection"), Some("close"));
            assert_eq!(stream.read_buf(&mut buf).await.unwrap(), 0, "not closed");

            // HTTP/1.0 without keep-alive closes too.
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            let mut buf = Vec::new();
            assert_eq!(
                read_response(&mut stream, &mut buf, false).await.status,
                200
            );
            assert_eq!(stream.read_buf(&mut buf).await.unwrap(), 0, "not closed");
        })
        .await
    }

    #[tokio::test]
    async fn status_answers_the_requested_code() {
        within(async {
            let addr = start().await;
            let seen = exchange(addr, "GET /status/503 HTTP/1.1\r\n\r\n").await;
            assert_eq!(seen.status, 503);
            assert_eq!(seen.text(), format!("status 503 from {}\n", instance()));
            for bad in ["/status/99", "/status/600", "/status/abc", "/status/"] {
                let seen = exchange(addr, &format!("GET {bad} HTTP/1.1\r\n\r\n")).await;
                assert_eq!(seen.status, 400, "{bad}");
            }
        })
        .await
    }

    #[tokio::test]
    async fn status_204_has_no_body_and_keeps_the_connection() {
        within(async {
            let addr = start().await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /status/204 HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let first = read_response(&mut stream, &mut buf, false).await;
            assert_eq!(first.status, 204);
            assert_eq!(first.header("content-length"), None);
            let second = read_response(&mut stream, &mut buf, false).await;
            assert_eq!((second.status, second.text().as_str()), (200, "ok"));
        })
        .await
    }

    #[tokio::test]
    async fn bigheader_sends_the_requested_size() {
        within(async {
            let addr = start().await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /bigheader?kb=40 HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let seen = read_response(&mut stream, &mut buf, false).await;
            assert_eq!(seen.status, 200);
            let big = seen.header("x-big").expect("X-Big header");
            assert_eq!(big.len(), 40 * 1024);
            assert!(big.bytes().all(|b| b == b'a'));
        })
        .await
    }

    #[tokio::test]
    async fn bad_is_not_valid_http() {
        within(async {
            let addr = start().await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /bad HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            assert!(!raw.is_empty(), "nothing written");
            let mut fields = [httparse::EMPTY_HEADER; 16];
            let parsed = httparse::Response::new(&mut fields).parse(&raw);
            assert!(parsed.is_err(), "parsed as HTTP: {parsed:?}");
        })
        .await
    }

    #[tokio::test]
    async fn echo_round_trips_a_post_body() {
        within(async {
            let addr = start().await;
            let seen = exchange(
                addr,
                "POST /echo?x=1 HTTP/1.1\r\nHost: demo\r\nX-Test: yes\r\nContent-Length: 11\r\n\r\nhello world",
            )
            .await;
            assert_eq!(seen.status, 200);
            let text = seen.text();
            assert!(text.starts_with("POST /echo?x=1\n"), "{text}");
            assert!(text.contains("\nX-Test: yes\n"), "{text}");
            assert!(text.ends_with("\n\nhello world"), "{text}");

            let seen = exchange(
                addr,
                "PUT /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            )
            .await;
            assert_eq!(seen.status, 200);
            assert!(seen.text().starts_with("PUT /echo\n"));
            assert!(seen.text().ends_with("\n\nhello world"), "{}", seen.text());
        })
        .await
    }

    #[tokio::test]
    async fn slow_waits_before_answering() {
        within(async {
            let addr = start().await;
            let started = std::time::Instant::now();
            let seen = exchange(addr, "GET /slow?ms=50 HTTP/1.1\r\n\r\n").await;
            assert_eq!(seen.status, 200);
            assert!(started.elapsed() >= Duration::from_millis(50));
            let seen = exchange(addr, "GET /slow?ms=soon HTTP/1.1\r\n\r\n").await;
            assert_eq!(seen.status, 400);
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cpu_burns_without_blocking_healthz() {
        within(async {
            let addr = start().await;
            let burn = tokio::spawn(exchange(addr, "GET /cpu?ms=300 HTTP/1.1\r\n\r\n"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = std::time::Instant::now();
            let health = exchange(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
            assert_eq!(health.status, 200);
            assert!(started.elapsed() < Duration::from_millis(250));
            assert_eq!(burn.await.unwrap().status, 200);
        })
        .await
    }

    #[tokio::test]
    async fn leak_keeps_memory() {
        within(async {
            let addr = start().await;
            let seen = exchange(addr, "GET /leak?mb=1 HTTP/1.1\r\n\r\n").await;
            assert_eq!(seen.status, 200);
            assert!(seen.text().starts_with("leaked 1 MiB"), "{}", seen.text());
            let total: usize = LEAKED.lock().unwrap().iter().map(Vec::len).sum();
            assert!(total >= 1024 * 1024);
        })
        .await
    }

    #[tokio::test]
    async fn head_gets_headers_only_and_unknown_paths_404() {
        within(async {
            let addr = start().await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::new();
            stream
                .write_all(b"HEAD / HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let head = read_response(&mut stream, &mut buf, true).await;
            assert_eq!(head.status, 200);
            let expected = format!("hello from {}\n", instance()).len().to_string();
            assert_eq!(head.header("content-length"), Some(expected.as_str()));
            let missing = read_response(&mut stream, &mut buf, false).await;
            assert_eq!(missing.status, 404);
        })
        .await
    }

    #[tokio::test]
    async fn garbage_request_gets_400_and_close() {
        within(async {
            let addr = start().await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
            let mut buf = Vec::new();
            let seen = read_response(&mut stream, &mut buf, false).await;
            assert_eq!(seen.status, 400);
            assert_eq!(seen.header("connection"), Some("close"));
            assert_eq!(stream.read_buf(&mut buf).await.unwrap(), 0);
        })
        .await
    }
}
