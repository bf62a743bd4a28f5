//! The admin HTTP server of the meta service (shared/spec/rest_api.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use memcache_core::Key;
use memcache_tls::{Peer, Roles};

use crate::ptracer::table;
use crate::rpc::Server;
use crate::Shared;

pub fn router(server: Server) -> Router {
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/get_all_keys", get(all_keys))
        .route("/query_key", get(query_key))
        .route("/get_all_segments", get(all_segments))
        .route("/metrics", get(metrics))
        .route("/metrics/summary", get(summary))
        .route("/metrics/ptracer", get(ptracer))
        .route("/role", get(role))
        .route("/leader", get(leader))
        .with_state(server)
}

/// Serves the admin pages on one connection, over HTTPS with a client certificate
/// where TLS is on (the pages that list keys need the admin role).
pub(crate) fn serve_connection(
    limits: memcache_tls::Limits,
) -> impl Fn(Arc<Shared>, memcache_tls::Stream, Peer, SocketAddr) -> BoxFuture<'static, ()> + Clone
{
    move |shared, stream, peer, from| {
        let app = TowerToHyperService::new(router(Server(shared, peer)));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle.min(HTTP_IDLE))
            .serve_connection(TokioIo::new(stream), app);
        Box::pin(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %from, error = %e, "admin HTTP connection");
            }
        })
    }
}

/// An admin HTTP connection that sends no request for this long is closed.
const HTTP_IDLE: Duration = Duration::from_secs(30);

/// 403 unless the caller's certificate grants the admin role (always, without TLS).
fn admin_only(s: &Server, page: &'static str) -> Option<Response> {
    if s.1.roles.has(Roles::ADMIN) {
        return None;
    }
    tracing::warn!(page, roles = ?s.1.roles, "admin HTTP: refused a page: the caller's certificate lacks the admin role");
    s.0.metrics.rpc_refused.with_label_values(&[page]).inc();
    Some(
        (
            StatusCode::FORBIDDEN,
            "permission denied: this page needs the admin role\n",
        )
            .into_response(),
    )
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn all_keys(State(s): State<Server>) -> Response {
    if let Some(refused) = admin_only(&s, "http_get_all_keys") {
        return refused;
    }
    let mut body = String::new();
    for k in s.keys_with_prefix(b"", usize::MAX) {
        body.push_str(&k.to_string());
        body.push('\n');
    }
    text(body)
}

async fn query_key(State(s): State<Server>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(refused) = admin_only(&s, "http_query_key") {
        return refused;
    }
    let Some(raw) = q.get("key") else {
        return (StatusCode::BAD_REQUEST, "missing parameter: key\n").into_response();
    };
    let key = match Key::new(raw) {
        Ok(k) => k,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let info =
        s.0.group
            .read(|leader, sm, now| leader.key_info(sm, std::slice::from_ref(&key), now))
            .remove(0);
    if info.status != 0 {
        return (StatusCode::NOT_FOUND, format!("key {key} not found\n")).into_response();
    }
    let blobs: Vec<Value> = info
        .locations
        .iter()
        .map(|l| json!({"medium": l.medium.name(), "rank": l.service}))
        .collect();
    Json(json!({
        "blobs": blobs,
        "key": key.to_string(),
        "numBlobs": info.locations.len(),
        "prot": 0,
        "size": info.size,
        "valid": true,
    }))
    .into_response()
}

async fn all_segments(State(s): State<Server>) -> Response {
    let segments: Vec<Value> = s.0.group.read(|_, sm, _| {
        sm.segments()
            .map(|seg| {
                json!({
                    "allocatedSize": seg.used(),
                    "bmAddr": seg.spec.base,
                    "capacity": seg.capacity(),
                    "medium": seg.spec.medium.name(),
                    "rank": seg.service,
                })
            })
            .collect()
    });
    Json(Value::Array(segments)).into_response()
}

async fn metrics(State(s): State<Server>) -> Response {
    s.0.observe();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.0.metrics.text(),
    )
        .into_response()
}

async fn summary(State(s): State<Server>) -> Response {
    s.0.observe();
    text(s.0.metrics.summary())
}

async fn ptracer(State(s): State<Server>) -> Response {
    text(table(&s.0.tracer.rows(), SystemTime::now()))
}

/// `leader`, `follower`, `candidate` or `learner`.
async fn role(State(s): State<Server>) -> Response {
    text(format!("{}\n", s.0.group.role().role))
}

/// The leader's id and address as this node knows them; 503 during an election.
async fn leader(State(s): State<Server>) -> Response {
    let r = s.0.group.role();
    match (r.leader, r.leader_addr) {
        (Some(id), Some(addr)) => Json(json!({
            "id": id,
            "addr": addr.to_string(),
            "term": r.term,
        }))
        .into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "no leader known\n").into_response(),
    }
}
