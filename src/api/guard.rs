//! The one layer every API request passes, applied per route (so the route template is known):
//! at most `http.concurrent_requests_max` requests at once (the rest wait), an answer within
//! `http.request_timeout` (else 503 `timeout`; a write may still commit), a panic answered 500 in
//! the error shape, and the request counted and timed by route, method and status. One boxed
//! future per request: the same work as three middlewares, without their per-layer boxing.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::error::ApiError;
use super::metrics::{method_label, record_request, route_label};

/// The bounds, shared by every route; the timeout changes on SIGHUP.
pub struct Limits {
    pub permits: Semaphore,
    pub timeout_ms: AtomicU64,
}

impl Limits {
    pub fn new(concurrent_requests_max: usize, timeout: Duration) -> Limits {
        Limits {
            permits: Semaphore::new(concurrent_requests_max),
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
        }
    }
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
        // The inner service is axum's route, whose future does nothing until polled: calling
        // it here (the service that was polled ready) needs no clone of it, and the handler
        // still runs only once the permit is held.
        let answer = self.inner.call(request);
        Box::pin(async move {
            let started = Instant::now();
            let response = match limits.permits.acquire().await {
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
