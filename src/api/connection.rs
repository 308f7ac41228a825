//! Accepting and serving connections, with a bound on everything a peer can hold.
//!
//! - **How many.** At most `http.connections_max` connections are served; the next
//!   `CONNECTIONS_RESERVED` are kept for operators' probes: they get only `/health*` and
//!   `/metrics` (anything else 503 `too_many_connections`), one request each. Beyond those a
//!   connection is closed as soon as it is accepted. `connections_max` is lowered at start to
//!   fit the process's descriptor limit (raised to its hard limit first), keeping
//!   `DESCRIPTOR_HEADROOM` descriptors for the store's files, repositories and logs.
//! - **How long.** Every connection's I/O goes through `TimedIo`: a new connection must send a
//!   request's headers (after the TLS handshake, if any) within `http.header_read_timeout`; a
//!   kept-alive connection with no request in progress is closed after `http.idle_timeout`, and
//!   one whose next request has begun must finish its headers within the header timeout again;
//!   a write that makes no progress for `http.send_timeout` (a client that stopped reading)
//!   closes the connection. A request's body has `http.body_read_timeout` (`guard.rs`, 408).
//! - **How much.** hyper's buffers are capped at `CONNECTION_BUFFER_BYTES_MAX` (which also
//!   bounds a request's headers), at most `REQUEST_HEADERS_MAX` headers.
//! - HTTP/1.1 only (TLS advertises `http/1.1`); every request carries the peer's address as
//!   `ConnectInfo` (failed authentications are logged with it).
//!
//! On shutdown the accept loop stops, each connection finishes its request in flight and
//! closes (`graceful_shutdown`), and `serve` returns once every connection is gone.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::tls::Tls;

/// Connections beyond `http.connections_max` still accepted, for `/health*` and `/metrics` only.
pub const CONNECTIONS_RESERVED: usize = 32;
/// Descriptors kept free for everything but connections.
pub const DESCRIPTOR_HEADROOM: usize = 256;
/// hyper's read and write buffers per connection, at most (also the largest request head).
pub const CONNECTION_BUFFER_BYTES_MAX: usize = 64 << 10;
/// Headers in one request, at most.
pub const REQUEST_HEADERS_MAX: usize = 100;
/// How long the accept loop pauses after an accept error (out of descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// A reserve connection (probes and metrics only) must send its request this fast.
pub const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The time bounds of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub header_read: Duration,
    pub send: Duration,
}

/// What `serve` needs.
pub struct Connections {
    /// The whole API.
    pub app: Router,
    /// What a connection over `connections_max` gets: probes and metrics only.
    pub reserve_app: Router,
    pub connections_max: usize,
    pub timeouts: Timeouts,
    pub tls: Option<Arc<Tls>>,
}

/// Connections open now (gauge `llmcm_http_connections`).
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Raises the soft descriptor limit to the hard one; the number of connections that fits in
/// it, at most `configured`.
pub fn fit_descriptor_limit(configured: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    let descriptors = limit.current.map_or(usize::MAX, |n| n as usize);
    let fits = descriptors.saturating_sub(DESCRIPTOR_HEADROOM + CONNECTIONS_RESERVED);
    if fits < configured {
        tracing::warn!(
            configured,
            serving = fits,
            descriptors,
            "http.connections_max does not fit the descriptor limit (ulimit -n); serving fewer"
        );
    }
    configured.min(fits).max(1)
}

/// Serves `listener` until `stop` turns true, then lets every connection finish its request in
/// flight; returns once none is left, or (`drain` false) as soon as it stops accepting (the
/// connections finish on their own).
pub async fn serve(
    listener: TcpListener,
    connections: Connections,
    mut stop: tokio::sync::watch::Receiver<bool>,
    drain: bool,
) {
    let connections = Arc::new(connections);
    let all_closed = Arc::new(tokio::sync::Notify::new());
    let mut last_error_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                metrics::counter!("llmcm_http_accept_errors_total").increment(1);
                if last_error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(%error, "cannot accept a connection; pausing briefly");
                    last_error_logged = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let open = OPEN.fetch_add(1, Ordering::SeqCst) + 1;
        let count = OpenCount(all_closed.clone());
        // Over the cap: the oldest connection with no request in progress (an idle kept-alive
        // one, or one that never finished a request head) makes room; only when every one is
        // busy does the newcomer get the probes' reserve, or nothing.
        let reserve = open > connections.connections_max && !evict_one_idle();
        if reserve && open > connections.connections_max + CONNECTIONS_RESERVED {
            metrics::counter!("llmcm_http_connections_refused_total").increment(1);
            drop((stream, count));
            continue;
        }
        let phase = Arc::new(Phase::default());
        register(&phase, connections.connections_max);
        let connections = connections.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _count = count;
            serve_one(stream, peer, &connections, reserve, phase, stop).await;
        });
    }
    if !drain {
        return;
    }
    // Wait for the connections to finish (each was told through `stop`).
    loop {
        let closed = all_closed.notified();
        if OPEN.load(Ordering::SeqCst) == 0 {
            return;
        }
        closed.await;
    }
}

/// Every open connection's phase, oldest first (closed ones drop out lazily): where an idle
/// connection is found to make room for a new one.
static CONNECTIONS: parking_lot::Mutex<std::collections::VecDeque<std::sync::Weak<Phase>>> =
    parking_lot::Mutex::new(std::collections::VecDeque::new());

fn register(phase: &Arc<Phase>, connections_max: usize) {
    let mut all = CONNECTIONS.lock();
    all.push_back(Arc::downgrade(phase));
    // Closed connections' entries are dropped before they outnumber the open ones.
    if all.len() > 2 * (connections_max + CONNECTIONS_RESERVED) + 64 {
        all.retain(|w| w.strong_count() > 0);
    }
}

/// Tells the oldest connection with no request in progress to close; whether there was one.
fn evict_one_idle() -> bool {
    let mut all = CONNECTIONS.lock();
    while let Some(weak) = all.pop_front() {
        let Some(phase) = weak.upgrade() else {
            continue;
        };
        if phase.busy.load(Ordering::SeqCst) || phase.evicted.load(Ordering::SeqCst) {
            // Busy now; it stays, in its place.
            all.push_front(weak);
            break;
        }
        phase.evicted.store(true, Ordering::SeqCst);
        phase.reader.wake();
        metrics::counter!("llmcm_http_connections_evicted_total").increment(1);
        return true;
    }
    // The front is busy: look further (a busy watch at the front must not shield idle ones).
    for weak in all.iter() {
        if let Some(phase) = weak.upgrade()
            && !phase.busy.load(Ordering::SeqCst)
            && !phase.evicted.swap(true, Ordering::SeqCst)
        {
            phase.reader.wake();
            metrics::counter!("llmcm_http_connections_evicted_total").increment(1);
            return true;
        }
    }
    false
}

/// Counts a connection open until dropped.
struct OpenCount(Arc<tokio::sync::Notify>);

impl Drop for OpenCount {
    fn drop(&mut self) {
        if OPEN.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.notify_waiters();
        }
    }
}

async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    connections: &Connections,
    reserve: bool,
    phase: Arc<Phase>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut timeouts = connections.timeouts;
    if reserve {
        // A probe sends its request at once; a reserve slot is not for holding.
        timeouts.header_read = timeouts.header_read.min(RESERVE_HEADER_TIMEOUT);
    }
    let app = if reserve {
        connections.reserve_app.clone()
    } else {
        connections.app.clone()
    };
    let request_phase = phase.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request_phase.begin();
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let phase = request_phase.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| PhaseBody { body, phase }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(!reserve)
        .max_buf_size(CONNECTION_BUFFER_BYTES_MAX)
        .max_headers(REQUEST_HEADERS_MAX);
    // Each connection's state is boxed at the size of its own kind: inline, every plain
    // connection's task would be as large as a TLS one's (5.6 KB instead of a pointer).
    match &connections.tls {
        None => {
            let io = TimedIo::new(stream, phase, timeouts);
            let connection = Box::pin(builder.serve_connection(TokioIo::new(io), service));
            drive(connection, &mut stop).await;
        }
        Some(tls) => {
            let acceptor = tls.acceptor();
            let handshake =
                tokio::time::timeout(timeouts.header_read, Box::pin(acceptor.accept(stream))).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    metrics::counter!("llmcm_tls_handshake_failures_total").increment(1);
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics::counter!("llmcm_tls_handshake_failures_total").increment(1);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let io = TimedIo::new(stream, phase, timeouts);
            let connection = Box::pin(builder.serve_connection(TokioIo::new(io), service));
            drive(connection, &mut stop).await;
        }
    }
}

/// Runs one connection to its end; on shutdown, lets its request in flight finish.
async fn drive<C>(mut connection: Pin<Box<C>>, stop: &mut tokio::sync::watch::Receiver<bool>)
where
    C: Future<Output = Result<(), hyper::Error>> + GracefulShutdown,
{
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    connection.as_mut().shut_down();
    let _ = connection.await;
}

/// hyper's connection, told to finish its request in flight and close.
trait GracefulShutdown {
    fn shut_down(self: Pin<&mut Self>);
}

impl<I, S> GracefulShutdown for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Whether the connection has a request in progress: from the moment its head is parsed until
/// its answer's body is done (or dropped).
#[derive(Default)]
struct Phase {
    busy: AtomicBool,
    /// Bumped at every change, so the I/O wrapper restarts its clock once per change.
    changes: AtomicUsize,
    /// The read waiting for the next bytes: woken when a request ends (so that the idle
    /// clock starts: hyper may not read again by itself until bytes arrive) and on eviction.
    reader: AtomicWaker,
    /// Told to close (to make room for a new connection) while no request was in progress.
    evicted: AtomicBool,
}

impl Phase {
    fn begin(&self) {
        self.busy.store(true, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        self.busy.store(false, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.reader.wake();
    }
}

/// An answer's body that ends its request's phase when it is done or dropped.
struct PhaseBody {
    body: Body,
    phase: Arc<Phase>,
}

impl Drop for PhaseBody {
    fn drop(&mut self) {
        self.phase.end();
    }
}

impl http_body::Body for PhaseBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() {
            self.phase.end();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's byte stream with the idle, header and send timeouts of `Timeouts`.
///
/// Reads: while no request is in progress, a read that waits is bounded — by the idle timeout
/// until the next request's first byte arrives, then by the header timeout (a new connection
/// starts in the header state: it connected to send a request). While a request is in
/// progress the body timeout (`guard.rs`) and the request timeout apply instead. Writes: a
/// write that waits longer than the send timeout fails.
struct TimedIo<T> {
    inner: T,
    phase: Arc<Phase>,
    seen_changes: usize,
    timeouts: Timeouts,
    /// Between requests: whether the next request's first byte has arrived.
    reading_head: bool,
    read_deadline: Pin<Box<Sleep>>,
    write_waiting: bool,
    write_deadline: Pin<Box<Sleep>>,
}

impl<T> TimedIo<T> {
    fn new(inner: T, phase: Arc<Phase>, timeouts: Timeouts) -> TimedIo<T> {
        let now = Instant::now();
        TimedIo {
            inner,
            phase,
            seen_changes: 0,
            timeouts,
            reading_head: true,
            read_deadline: Box::pin(tokio::time::sleep_until(now + timeouts.header_read)),
            write_waiting: false,
            write_deadline: Box::pin(tokio::time::sleep_until(now + timeouts.send)),
        }
    }

    /// Restarts the read clock after a request began or ended.
    fn follow_phase(&mut self) {
        let changes = self.phase.changes.load(Ordering::SeqCst);
        if changes != self.seen_changes {
            self.seen_changes = changes;
            self.reading_head = false;
            let idle = Instant::now() + self.timeouts.idle;
            self.read_deadline.as_mut().reset(idle);
        }
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned())
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.follow_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before
                    && !this.reading_head
                    && !this.phase.busy.load(Ordering::SeqCst)
                {
                    // The next request's first bytes: its headers now have the header timeout.
                    this.reading_head = true;
                    let deadline = Instant::now() + this.timeouts.header_read;
                    this.read_deadline.as_mut().reset(deadline);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.phase.reader.register(cx.waker());
                if this.phase.busy.load(Ordering::SeqCst) {
                    // It may have ended in between: then the clock must start now.
                    if this.phase.busy.load(Ordering::SeqCst) {
                        return Poll::Pending;
                    }
                    this.follow_phase();
                }
                if this.phase.evicted.load(Ordering::SeqCst) {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "closed to make room for a new connection",
                    )));
                }
                match this.read_deadline.as_mut().poll(cx) {
                    Poll::Ready(()) if this.reading_head => {
                        metrics::counter!("llmcm_http_timeouts_total", "kind" => "header")
                            .increment(1);
                        Poll::Ready(Err(timed_out("request headers too slow")))
                    }
                    Poll::Ready(()) => {
                        metrics::counter!("llmcm_http_timeouts_total", "kind" => "idle")
                            .increment(1);
                        Poll::Ready(Err(timed_out("idle connection")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> TimedIo<T> {
    /// A write-side poll: clears the send clock on progress, fails when it runs out.
    fn timed<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.write_waiting = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.write_waiting {
                    self.write_waiting = true;
                    let deadline = Instant::now() + self.timeouts.send;
                    self.write_deadline.as_mut().reset(deadline);
                }
                match self.write_deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics::counter!("llmcm_http_timeouts_total", "kind" => "send")
                            .increment(1);
                        Poll::Ready(Err(timed_out("the client does not read")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(cx, polled)
    }
}
