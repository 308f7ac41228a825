//! Prometheus metrics at `/metrics` (metrics + metrics-exporter-prometheus, rendered by our own
//! route). Request counts and latency by route and status are recorded by the request guard; the log
//! records fsync latency and group-commit batch sizes as it writes; store-wide figures (head,
//! commits, bytes, segments, read-only, disk free, watchers) are read at scrape time.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// Latency buckets, in seconds: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Group-commit batch size buckets, in commits.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and describes every metric.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("llmcm_group_commit_batch_commits".into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are non-empty")
            .install_recorder()
            .expect("one recorder per process");
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(
        "llmcm_http_requests_total",
        "HTTP requests answered, by route, method and status."
    );
    describe_histogram!(
        "llmcm_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency, by route and method."
    );
    describe_histogram!(
        "llmcm_fsync_seconds",
        metrics::Unit::Seconds,
        "Latency of each group-commit batch's fdatasync."
    );
    describe_histogram!(
        "llmcm_group_commit_batch_commits",
        "Commits carried by each group-commit batch (one write and one fsync)."
    );
    describe_gauge!("llmcm_head_revision", "The newest durable revision.");
    describe_gauge!(
        "llmcm_commits_since_start",
        "Commits written since the server started."
    );
    describe_gauge!(
        "llmcm_log_bytes",
        metrics::Unit::Bytes,
        "Bytes in the log's segments."
    );
    describe_gauge!("llmcm_segments", "Segments in the log (sealed and active).");
    describe_gauge!(
        "llmcm_read_only",
        "1 while the store refuses writes (fsync failure, disk full, or operator switch)."
    );
    describe_gauge!(
        "llmcm_disk_free_bytes",
        metrics::Unit::Bytes,
        "Free bytes on the data directory's file system (for unprivileged users)."
    );
    describe_gauge!("llmcm_watchers", "Open watch streams.");
    describe_counter!(
        "llmcm_auth_failures_total",
        "Requests refused 401, by reason: missing (no token), malformed (not `Bearer <token>`), invalid (no such token)."
    );
    describe_gauge!("llmcm_http_connections", "Open HTTP connections.");
    describe_counter!(
        "llmcm_http_connections_refused_total",
        "Connections closed at once: more than http.connections_max plus the reserve for probes."
    );
    describe_counter!(
        "llmcm_http_connections_evicted_total",
        "Connections with no request in progress closed to make room for a new one (over http.connections_max)."
    );
    describe_counter!(
        "llmcm_http_accept_errors_total",
        "Failed accepts (out of descriptors, say)."
    );
    describe_counter!(
        "llmcm_http_timeouts_total",
        "Connections or requests ended by a timeout, by kind: idle, header, body, send."
    );
    describe_counter!(
        "llmcm_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out."
    );
    describe_counter!(
        "llmcm_tls_reload_failures_total",
        "SIGHUP reloads whose TLS certificate did not load (the old one stays in use)."
    );
    describe_gauge!(
        "llmcm_watch_buffered_bytes",
        "Bytes of watch events waiting for their clients, over every watcher."
    );
    describe_gauge!(
        "llmcm_snapshot_revision",
        "Revision of the newest snapshot (0: none)."
    );
    describe_gauge!(
        "llmcm_snapshot_age_seconds",
        metrics::Unit::Seconds,
        "Age of the newest snapshot (absent when there is none)."
    );
    describe_gauge!("llmcm_snapshots", "Snapshots on disk.");
    describe_counter!(
        "llmcm_snapshot_failures_total",
        "Snapshots that failed to be written since start."
    );
    describe_gauge!(
        "llmcm_compaction_horizon_revision",
        "The compaction horizon: points before it answer 410 (0: never compacted)."
    );
    describe_gauge!(
        "llmcm_compaction_horizon_age_seconds",
        metrics::Unit::Seconds,
        "Age of the compaction horizon's commit (absent when never compacted)."
    );
    describe_counter!("llmcm_compactions_total", "Compactions done since start.");
    describe_gauge!(
        "llmcm_backup_last_success_timestamp_seconds",
        metrics::Unit::Seconds,
        "When the newest successful backup of each kind was taken (Unix time)."
    );
    describe_gauge!(
        "llmcm_backup_last_bytes",
        metrics::Unit::Bytes,
        "Bytes uploaded by the newest successful backup of each kind."
    );
    describe_gauge!(
        "llmcm_backup_last_duration_seconds",
        metrics::Unit::Seconds,
        "How long the newest successful backup of each kind took."
    );
    describe_gauge!(
        "llmcm_backup_age_seconds",
        metrics::Unit::Seconds,
        "Age of the newest successful backup of any kind (absent before the first)."
    );
    describe_gauge!(
        "llmcm_backup_verify_last_timestamp_seconds",
        metrics::Unit::Seconds,
        "When each repository's latest `backup verify` finished (Unix time; absent before the first)."
    );
    describe_gauge!(
        "llmcm_backup_verify_last_success",
        "1 if each repository's latest `backup verify` found no problem, 0 if it failed."
    );
    describe_gauge!(
        "llmcm_scrub_damaged_segments",
        "Sealed segments in which the background scrub found damage (0: none found)."
    );
    describe_gauge!(
        "llmcm_scrub_last_pass_timestamp_seconds",
        metrics::Unit::Seconds,
        "When the background scrub last finished a pass over every sealed segment (absent before the first)."
    );
    describe_gauge!(
        "llmcm_ready",
        "1 while /health/ready answers 200 (writable, not shutting down), else 0."
    );
    describe_gauge!(
        "llmcm_archive_lag_seconds",
        metrics::Unit::Seconds,
        "Time since the archive of each repository last held every sealed segment."
    );
    describe_gauge!(
        "llmcm_archive_revision",
        "Newest revision archived in each repository."
    );
    describe_gauge!(
        "llmcm_backup_safe_revision",
        "Newest revision safe in a backup repository; compaction never passes it (absent without repositories)."
    );
    describe_counter!(
        "llmcm_compaction_reclaimed_bytes_total",
        metrics::Unit::Bytes,
        "Bytes reclaimed by compactions since start."
    );
    describe_counter!(
        "llmcm_watchers_lagged_total",
        "Watch streams ended with `lagged` (the client fell too far behind)."
    );
}

/// Counts and times one answered request by its route template (never the raw path: keys would
/// make unbounded label sets). The metric handles of each (route, method, status) are kept per
/// thread, so recording touches no shared lock, registry or label allocation (`route` and
/// `method` are interned: equal labels are the same pointer).
pub fn record_request(
    route: &'static str,
    method: &'static str,
    status: axum::http::StatusCode,
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    if HANDLE.get().is_none() {
        // No recorder (a router built without `serve`): nothing records; cache nothing.
        return;
    }
    let key = (
        route.as_ptr() as usize,
        method.as_ptr() as usize,
        status.as_u16(),
    );
    REQUEST_HANDLES.with_borrow_mut(|handles| {
        if handles.len() >= REQUEST_HANDLES_MAX {
            handles.clear();
        }
        let (count, latency) = handles.entry(key).or_insert_with(|| {
            let status = intern(status.as_str());
            (
                counter!("llmcm_http_requests_total", "route" => route, "method" => method, "status" => status),
                histogram!("llmcm_http_request_duration_seconds", "route" => route, "method" => method),
            )
        });
        count.increment(1);
        latency.record(seconds);
    });
}

thread_local! {
    /// Request metric handles by (route, method, status), per thread.
    static REQUEST_HANDLES: std::cell::RefCell<RequestHandles> = Default::default();
    /// Route templates by the address of the router's string, per thread (checked by content).
    static ROUTE_LABELS: std::cell::RefCell<std::collections::HashMap<usize, &'static str>> =
        Default::default();
}

/// A request's count and latency handles by (route, method, status) address and code.
type RequestHandles =
    std::collections::HashMap<(usize, usize, u16), (metrics::Counter, metrics::Histogram)>;

/// Entries of each per-thread cache, at most (then it starts over).
const REQUEST_HANDLES_MAX: usize = 1024;

/// `route` (a matched route template) interned, through a per-thread cache keyed by the
/// template's address (the router keeps one string per route), so the common case takes no lock.
pub fn route_label(route: &str) -> &'static str {
    let address = route.as_ptr() as usize;
    ROUTE_LABELS.with_borrow_mut(|labels| {
        if let Some(label) = labels.get(&address)
            && *label == route
        {
            return *label;
        }
        if labels.len() >= REQUEST_HANDLES_MAX {
            labels.clear();
        }
        let label = intern(route);
        labels.insert(address, label);
        label
    })
}

/// A request method as an interned label (the standard ones without a lookup).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => intern(method.as_str()),
    }
}

/// Label values as `&'static str`, so recording a request allocates nothing. The values come
/// from a small closed set (route templates, methods, status codes); anything beyond
/// `LABEL_VALUES_MAX` distinct values is recorded as `other`.
pub fn intern(value: &str) -> &'static str {
    static VALUES: OnceLock<parking_lot::RwLock<std::collections::HashSet<&'static str>>> =
        OnceLock::new();
    let values = VALUES.get_or_init(Default::default);
    if let Some(found) = values.read().get(value) {
        return found;
    }
    let mut values = values.write();
    if let Some(found) = values.get(value) {
        return found;
    }
    if values.len() >= LABEL_VALUES_MAX {
        return "other";
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    values.insert(leaked);
    leaked
}

/// Distinct label values kept (routes, methods, statuses), at most.
const LABEL_VALUES_MAX: usize = 256;

/// The Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
pub async fn serve_metrics(State(state): State<AppState>) -> Response {
    let store = state.store();
    let head = store.head();
    let segments = store.segments_summary();
    gauge!("llmcm_head_revision").set(head.revision as f64);
    gauge!("llmcm_commits_since_start").set(store.stats().commits as f64);
    gauge!("llmcm_log_bytes").set(segments.bytes as f64);
    gauge!("llmcm_segments").set(segments.count as f64);
    gauge!("llmcm_read_only").set(if store.read_only_reason().is_some() {
        1.0
    } else {
        0.0
    });
    let ready = store.read_only_reason().is_none() && !state.shutting_down();
    gauge!("llmcm_ready").set(if ready { 1.0 } else { 0.0 });
    if let Some(free) = disk_free_bytes(&state.config().data_dir) {
        gauge!("llmcm_disk_free_bytes").set(free as f64);
    }
    let hub = state.watch_hub();
    gauge!("llmcm_watchers").set(hub.open() as f64);
    gauge!("llmcm_http_connections").set(super::connection::open_connections() as f64);
    gauge!("llmcm_watch_buffered_bytes").set(hub.buffered_bytes() as f64);
    let now_us = crate::clock::now_us();
    let age = |us: u64| now_us.saturating_sub(us) as f64 / 1e6;
    let snapshots = store.snapshots();
    gauge!("llmcm_snapshots").set(snapshots.len() as f64);
    gauge!("llmcm_snapshot_revision").set(snapshots.last().map_or(0.0, |s| s.revision as f64));
    if let Some(newest) = snapshots.last() {
        gauge!("llmcm_snapshot_age_seconds").set(age(newest.created_unix_us));
    }
    let horizon = store.horizon();
    gauge!("llmcm_compaction_horizon_revision").set(horizon.revision as f64);
    if horizon.revision > 0 {
        gauge!("llmcm_compaction_horizon_age_seconds").set(age(horizon.timestamp_us));
    }
    let backups = state.backups().last_backups();
    for (kind, b) in &backups {
        let kind: &'static str = kind;
        gauge!("llmcm_backup_last_success_timestamp_seconds", "kind" => kind)
            .set(b.created_us as f64 / 1e6);
        gauge!("llmcm_backup_last_bytes", "kind" => kind).set(b.bytes as f64);
        gauge!("llmcm_backup_last_duration_seconds", "kind" => kind).set(b.seconds);
    }
    if let Some(newest) = backups.values().map(|b| b.created_us).max() {
        gauge!("llmcm_backup_age_seconds").set(age(newest));
    }
    for (repo, a) in state.backups().archive_status() {
        let repo = intern(&repo);
        if a.caught_up_us > 0 {
            gauge!("llmcm_archive_lag_seconds", "repo" => repo).set(age(a.caught_up_us));
        }
        gauge!("llmcm_archive_revision", "repo" => repo).set(a.archived_revision as f64);
    }
    for (repo, v) in state.backups().verifications() {
        let repo = intern(&repo);
        gauge!("llmcm_backup_verify_last_timestamp_seconds", "repo" => repo)
            .set(v.verified_us as f64 / 1e6);
        gauge!("llmcm_backup_verify_last_success", "repo" => repo).set(if v.ok {
            1.0
        } else {
            0.0
        });
    }
    if let Some(safe) = store.backup_safe_revision() {
        gauge!("llmcm_backup_safe_revision").set(safe as f64);
    }
    let scrub = store.scrub_status();
    gauge!("llmcm_scrub_damaged_segments").set(scrub.damage.len() as f64);
    if scrub.last_pass_us > 0 {
        gauge!("llmcm_scrub_last_pass_timestamp_seconds").set(scrub.last_pass_us as f64 / 1e6);
    }
    let maintenance = store.maintenance_stats();
    counter!("llmcm_snapshot_failures_total").absolute(maintenance.snapshot_failures);
    counter!("llmcm_compactions_total").absolute(maintenance.compactions);
    counter!("llmcm_compaction_reclaimed_bytes_total").absolute(maintenance.bytes_reclaimed);
    let body = install().render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Free bytes available to unprivileged users on the file system holding `dir`.
pub fn disk_free_bytes(dir: &std::path::Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
