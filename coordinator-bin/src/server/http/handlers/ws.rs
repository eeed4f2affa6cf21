//! `GET /ws`: the WebSocket upgrade; the socket then talks to the engine.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use coordinator_transport::server::spawn_socket;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::server::api_error::ApiError;
use crate::server::http::response::{full, Resp};
use crate::server::http::AppState;

/// Answers 101 and, once the upgrade completes, hands the socket (with a fresh
/// connection id) to the engine's socket inbox. 426 without an upgrade request
/// (a `HEAD` is never one).
pub fn upgrade(mut req: Request<Incoming>, state: &AppState) -> Result<Resp, ApiError> {
    if req.method() != Method::GET || !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /ws needs a WebSocket upgrade",
        ));
    }
    let (response, fut) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| ApiError::bad_body(format!("bad WebSocket upgrade: {e}")))?;
    let connection = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let config = state.socket_config.clone();
    let events = state.sockets.clone();
    tokio::spawn(async move {
        match fut.await {
            Ok(ws) => {
                spawn_socket(ws, config, connection, events);
            }
            Err(e) => tracing::warn!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, full(Bytes::new())))
}
