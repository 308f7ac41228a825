//! The one layer every API request passes, applied per route (so the route template is known):
//! at most `http.concurrent_requests_max` requests at once (the rest wait; health probes and
//! metrics never wait behind them), a body within `http.body_read_timeout` of its first read and
//! arriving at `BODY_RATE_MIN_BYTES_PER_SEC` after a short grace (else 408 `body_timeout`), an answer within `http.request_timeout` (else 503
//! `timeout`; a write may still commit), a panic answered 500 in the error shape, and the
//! request counted and timed by route, method and status. One boxed future per request: the
//! same work as three middlewares, without their per-layer boxing.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::error::ApiError;
use super::metrics::{method_label, record_request, route_label};

/// The bounds, shared by every route; the timeouts change on SIGHUP.
pub struct Limits {
    pub permits: Semaphore,
    pub timeout_ms: AtomicU64,
    pub body_timeout_ms: AtomicU64,
}

impl Limits {
    pub fn new(
        concurrent_requests_max: usize,
        timeout: Duration,
        body_timeout: Duration,
    ) -> Limits {
        Limits {
            permits: Semaphore::new(concurrent_requests_max),
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
            body_timeout_ms: AtomicU64::new(body_timeout.as_millis() as u64),
        }
    }
}

/// A body must keep arriving at this rate on average, after `BODY_RATE_GRACE`: a client that
/// declares a body and trickles it holds a request permit for seconds, not for the whole
/// `http.body_read_timeout`.
pub const BODY_RATE_MIN_BYTES_PER_SEC: u64 = 16 << 10;
/// How long a body may take before the rate applies.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(2);

/// Why a request body's read failed: not within `http.body_read_timeout`, or slower than
/// `BODY_RATE_MIN_BYTES_PER_SEC`.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    #[error("the request body did not arrive within {0:?}")]
    Total(Duration),
    #[error(
        "the request body arrives too slowly: {received} bytes in {elapsed:?}, under {BODY_RATE_MIN_BYTES_PER_SEC} bytes per second"
    )]
    TooSlow { received: u64, elapsed: Duration },
}

/// A request body read under `BodyTimeout`'s rules. The clock starts at the first read (once
/// the handler runs, after any wait for a permit), not when the request arrived.
struct DeadlineBody {
    body: Body,
    timeout: Duration,
    /// From the first read: its start, and the next check (of the total and of the rate).
    clock: Option<(tokio::time::Instant, Pin<Box<tokio::time::Sleep>>)>,
    received: u64,
}

impl DeadlineBody {
    /// After a check time passed: the failure, if the body is late or slow; else the next
    /// check is armed.
    fn check(&mut self) -> Option<BodyTimeout> {
        let (started, next) = self.clock.as_mut()?;
        let elapsed = started.elapsed();
        if elapsed >= self.timeout {
            return Some(BodyTimeout::Total(self.timeout));
        }
        let due = elapsed.saturating_sub(BODY_RATE_GRACE).as_secs_f64()
            * BODY_RATE_MIN_BYTES_PER_SEC as f64;
        if elapsed >= BODY_RATE_GRACE && (self.received as f64) < due {
            return Some(BodyTimeout::TooSlow {
                received: self.received,
                elapsed,
            });
        }
        let at =
            (*started + self.timeout).min(tokio::time::Instant::now() + Duration::from_secs(1));
        next.as_mut().reset(at);
        None
    }
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.clock.is_none() {
            let now = tokio::time::Instant::now();
            let first_check = (now + BODY_RATE_GRACE).min(now + this.timeout);
            this.clock = Some((now, Box::pin(tokio::time::sleep_until(first_check))));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => loop {
                let Some((_, next)) = this.clock.as_mut() else {
                    return Poll::Pending;
                };
                if next.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(failure) = this.check() {
                    metrics::counter!("llmcm_http_timeouts_total", "kind" => "body").increment(1);
                    return Poll::Ready(Some(Err(axum::Error::new(failure))));
                }
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Routes that answer without waiting for a request permit: probes and metrics must answer
/// while the API is saturated.
fn unqueued(route: &str) -> bool {
    route.starts_with("/health") || route == "/metrics"
}

#[derive(Clone)]
pub struct GuardLayer {
    pub limits: Arc<Limits>,
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = route_label(
            request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |p| p.as_str()),
        );
        let method = method_label(request.method());
        let limits = self.limits.clone();
        let body_timeout = Duration::from_millis(limits.body_timeout_ms.load(Ordering::Relaxed));
        let request = request.map(|body| {
            Body::new(DeadlineBody {
                body,
                timeout: body_timeout,
                clock: None,
                received: 0,
            })
        });
        let queued = !unqueued(route);
        // The inner service is axum's route, whose future does nothing until polled: calling
        // it here (the service that was polled ready) needs no clone of it, and the handler
        // still runs only once the permit is held.
        let answer = self.inner.call(request);
        Box::pin(async move {
            let started = Instant::now();
            let permit = if queued {
                limits.permits.acquire().await.map(Some)
            } else {
                Ok(None)
            };
            let response = match permit {
                Err(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "shutting down",
                )
                .into_response(),
                Ok(_permit) => {
                    let timeout = Duration::from_millis(limits.timeout_ms.load(Ordering::Relaxed));
                    // Most answers are ready at the first poll (reads of the store): the timer is
                    // armed only for an answer that has to wait.
                    let mut answer = std::pin::pin!(answer);
                    let first =
                        AssertUnwindSafe(futures_util::future::poll_immediate(answer.as_mut()))
                            .catch_unwind()
                            .await;
                    let answer = match first {
                        Ok(Some(ready)) => Ok(Ok(ready)),
                        Ok(None) => {
                            AssertUnwindSafe(tokio::time::timeout(timeout, answer))
                                .catch_unwind()
                                .await
                        }
                        Err(panic) => Err(panic),
                    };
                    match answer {
                        Ok(Ok(Ok(response))) => response,
                        Ok(Ok(Err(never))) => match never {},
                        Ok(Err(_elapsed)) => ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "timeout",
                            format!(
                                "no answer within {timeout:?}; a write may still commit: read it back before retrying"
                            ),
                        )
                        .into_response(),
                        Err(panic) => panic_response(panic),
                    }
                }
            };
            record_request(route, method, response.status(), started);
            Ok(response)
        })
    }
}

/// A handler's panic as a 500 in the error shape (the server keeps running).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    ApiError::internal(format!("the request failed: {what}")).into_response()
}
