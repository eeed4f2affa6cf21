//! `GET /api/events`: server-sent events of every committed task and agent
//! change, filtered by `task_id`, `status` and `agent_id`, resumable with
//! `Last-Event-ID`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Response};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::server::api_error::ApiError;
use crate::server::events::{sse_control, sse_text, Filter, Resume, Subscription};
use crate::server::http::body::query_pairs;
use crate::server::http::response::{Resp, StreamedBody};
use crate::server::http::AppState;
use crate::session::Event;

/// A comment line sent when nothing else was, so that proxies and clients see
/// the stream alive.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The longest one chunk may wait for a watcher to read; past it the watcher
/// is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Chunks waiting for a watcher to read.
const CHUNKS: usize = 64;

/// Opens a watcher's stream: 422 on a bad filter, else 200 and the events.
pub fn stream(state: &AppState, headers: &HeaderMap, query: &str) -> Result<Resp, ApiError> {
    let filter = decode_filter(query)?;
    let last_id = last_event_id(headers, query)?;
    let subscription = state.events.subscribe(last_id);
    let (chunks, body) = mpsc::channel(CHUNKS);
    tokio::spawn(pump(subscription, filter, chunks));
    Ok(Response::builder()
        .header(CONTENT_TYPE, "text/event-stream")
        .header(CACHE_CONTROL, "no-store")
        .header("x-accel-buffering", "no")
        .body(StreamedBody::new(body))
        .expect("static response parts are valid"))
}

/// The filter of the query (`task_id`, `status` as a comma-separated list,
/// `agent_id`); other keys are ignored, empty values too.
pub fn decode_filter(query: &str) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    for (key, value) in query_pairs(query) {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "task_id" => filter.task_id = Some(value),
            "agent_id" => filter.agent_id = Some(value),
            "status" => {
                for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let status = name
                        .parse()
                        .map_err(|e: coordinator_queue::UnknownStatus| {
                            ApiError::invalid_field(e.to_string())
                        })?;
                    filter.statuses.push(status);
                }
            }
            _ => {}
        }
    }
    Ok(filter)
}

/// The id the watcher saw last: the `Last-Event-ID` header (sent by
/// `EventSource` when it reconnects), else a `last_event_id` query key.
pub fn last_event_id(headers: &HeaderMap, query: &str) -> Result<Option<u64>, ApiError> {
    let text = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::invalid_field("Last-Event-ID must be an event id"))?
                .trim()
                .to_owned(),
        ),
        None => query_pairs(query)
            .into_iter()
            .find(|(k, _)| k == "last_event_id")
            .map(|(_, v)| v),
    };
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid_field("Last-Event-ID must be an event id")),
    }
}

/// Sends a chunk, or says the watcher is gone or too slow.
async fn send(chunks: &mpsc::Sender<Bytes>, text: String) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, chunks.send(Bytes::from(text))).await,
        Ok(Ok(()))
    )
}

/// One watcher: the replay or a reset, then live events until the watcher
/// leaves, falls too far behind (a final `dropped` event) or the service stops.
async fn pump(subscription: Subscription, filter: Filter, chunks: mpsc::Sender<Bytes>) {
    if !send(&chunks, "retry: 2000\n: connected\n\n".to_owned()).await {
        return;
    }
    match subscription.resume {
        Resume::Reset => {
            let reset = json!({"reason": "missed", "detail": "events after the given id are no longer kept; read the state again"});
            if !send(&chunks, sse_control("reset", &reset)).await {
                return;
            }
        }
        Resume::Replay(events) => {
            for event in events.iter().filter(|e| filter.admits(e)) {
                if !send(&chunks, sse_text(event)).await {
                    return;
                }
            }
        }
    }
    let Some(mut live) = subscription.live else {
        return;
    };
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let next: Result<Arc<Event>, broadcast::error::RecvError> = tokio::select! {
            next = live.recv() => next,
            _ = keepalive.tick() => {
                if !send(&chunks, ": keepalive\n\n".to_owned()).await {
                    return;
                }
                continue;
            }
            () = chunks.closed() => return,
        };
        match next {
            Ok(event) => {
                if filter.admits(&event) && !send(&chunks, sse_text(&event)).await {
                    return;
                }
                keepalive.reset();
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // The last chunk, if the watcher reads it within the send timeout.
                let dropped = json!({"reason": "slow_consumer", "missed": missed, "detail": "this watcher fell too far behind; reconnect with Last-Event-ID"});
                let _ = send(&chunks, sse_control("dropped", &dropped)).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
