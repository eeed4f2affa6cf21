//! The bodies of the fuzz targets in `fuzz/`, one function per target, named like it.
//!
//! Each function takes one input as bytes, runs the program's real decoder on it
//! and checks a property of the answer; it panics exactly when a property breaks.
//! The targets in `fuzz/fuzz_targets/` only call these, and a unit test runs every
//! one of them over its seed corpus (`fuzz/corpus/<target>/`), so targets and
//! corpus cannot drift apart. Not part of the program's interface.

use std::path::Path;
use std::time::Duration;

use coordinator_queue::{NewTask, Status, Task, TaskId};
use coordinator_transport::assembler::{Assembled, AssemblyError, FrameAssembler, FrameKind};
use coordinator_transport::protocol::{
    decode_agent_message, decode_coordinator_message, CoordinatorMessage, ErrorCode,
};
use coordinator_transport::server::{spawn_socket, SocketConfig, SocketEventKind};
use fastwebsockets::{OpCode, Role, WebSocket};
use hyper::header::HeaderValue;
use hyper::{HeaderMap, StatusCode};
use rusqlite::types::Value as Cell;
use rusqlite::Connection;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::server::api_error::ApiError;
use crate::server::db::{self, TaskFilter};
use crate::server::events;
use crate::server::http::body::{json_body, percent_decode, query_pairs};
use crate::server::http::handlers::events::{decode_filter, last_event_id};
use crate::server::http::handlers::tasks::{decode_batch, decode_list_query, MAX_BATCH};
use crate::server::task_json::parse_submission;

/// Whether the decoder took the input or refused it (with an error, cleanly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Decoded into a value (for the assembler: at least one whole message).
    Accepted,
    /// Refused with an error.
    Refused,
}

/// A target's body.
pub type Target = fn(&[u8]) -> Verdict;

/// Every fuzz target: its name (the file `fuzz/fuzz_targets/<name>.rs` and the
/// folder `fuzz/corpus/<name>/`) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("agent_message", agent_message),
    ("submit_body", submit_body),
    ("batch_body", batch_body),
    ("list_query", list_query),
    ("frame_assembler", frame_assembler),
    ("task_row", task_row),
    ("socket_stream", socket_stream),
];

/// The longest `detail` an agent's undecodable frame may be answered with: a
/// clipped quote of the input plus a few words.
const MAX_DETAIL_BYTES: usize = coordinator_transport::protocol::MAX_QUOTE_BYTES + 128;

/// The token name submissions are decoded for.
const SUBMITTER: &str = "fuzz";

fn verdict<T, E>(result: &Result<T, E>) -> Verdict {
    if result.is_ok() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// An agent's text frame through `decode_agent_message`. A decoded message
/// encodes and decodes to itself; an error has the code its input deserves
/// (`invalid_json` exactly when the input is not a JSON object) and a bounded
/// detail.
pub fn agent_message(data: &[u8]) -> Verdict {
    let decoded = decode_agent_message(data);
    match &decoded {
        Ok(message) => {
            let text = serde_json::to_vec(message).expect("a decoded message encodes");
            let again = decode_agent_message(&text).expect("a re-encoded message decodes");
            assert_eq!(
                &again,
                message,
                "re-encoded as {}",
                String::from_utf8_lossy(&text)
            );
        }
        Err(err) => {
            assert!(
                err.detail.len() <= MAX_DETAIL_BYTES,
                "a {}-byte detail",
                err.detail.len()
            );
            let is_object = serde_json::from_slice::<Value>(data).is_ok_and(|v| v.is_object());
            assert_eq!(
                err.code == ErrorCode::InvalidJson,
                !is_object,
                "{:?} for a frame that is {}a JSON object",
                err.code,
                if is_object { "" } else { "not " }
            );
            let reply = err.to_message().encode();
            assert!(serde_json::from_slice::<Value>(&reply).is_ok());
        }
    }
    verdict(&decoded)
}

/// A `POST /api/tasks` body through `json_body` and `parse_submission`, as the
/// handler takes it. An accepted task is well formed and, written back as a
/// submission, decodes to itself; a refusal is a 400 or a 422.
pub fn submit_body(data: &[u8]) -> Verdict {
    let decoded = json_body(data).and_then(|body| parse_submission(&body, SUBMITTER));
    match &decoded {
        Ok(task) => {
            check_new_task(task);
            let text = submission_json(task).to_string();
            let again = json_body(text.as_bytes())
                .and_then(|body| parse_submission(&body, SUBMITTER))
                .unwrap_or_else(|e| panic!("{text} is refused: {e:?}"));
            assert_eq!(same_id(again, task), *task, "re-encoded as {text}");
        }
        Err(err) => check_body_error(err),
    }
    verdict(&decoded)
}

/// A `POST /api/tasks/batch` body through `json_body` and `decode_batch`. A
/// batch is taken exactly when it holds 1 to `MAX_BATCH` submissions each of
/// which `POST /api/tasks` takes, and then as those tasks in order; a refused one
/// names the first bad submission. Taken batches written back decode to themselves.
pub fn batch_body(data: &[u8]) -> Verdict {
    let body = match json_body(data) {
        Ok(body) => body,
        Err(err) => {
            check_body_error(&err);
            return Verdict::Refused;
        }
    };
    let decoded = decode_batch(&body, SUBMITTER);
    let items = match &body {
        Value::Array(items) => Some(items),
        Value::Object(object) => object.get("tasks").and_then(Value::as_array),
        _ => None,
    };
    let Some(items) = items else {
        let err = decoded.expect_err("a batch that is no list is refused");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        return Verdict::Refused;
    };
    let singles: Vec<Result<NewTask, ApiError>> = items
        .iter()
        .map(|item| parse_submission(item, SUBMITTER))
        .collect();
    match &decoded {
        Ok(tasks) => {
            assert!((1..=MAX_BATCH).contains(&tasks.len()));
            assert_eq!(tasks.len(), singles.len());
            for (task, single) in tasks.iter().zip(&singles) {
                check_new_task(task);
                let single = single
                    .as_ref()
                    .expect("each task of a taken batch is valid");
                assert_eq!(same_id(single.clone(), task), *task);
            }
            let ids: std::collections::HashSet<&TaskId> = tasks.iter().map(|t| &t.id).collect();
            assert_eq!(ids.len(), tasks.len(), "ids are unique");
            let text = json!({"tasks": tasks.iter().map(submission_json).collect::<Vec<_>>()});
            let again = decode_batch(&text, SUBMITTER).expect("a re-encoded batch is taken");
            assert_eq!(again.len(), tasks.len());
            for (again, task) in again.into_iter().zip(tasks) {
                assert_eq!(same_id(again, task), *task);
            }
        }
        Err(err) => {
            check_body_error(err);
            if (1..=MAX_BATCH).contains(&items.len()) {
                let (i, first) = singles
                    .iter()
                    .enumerate()
                    .find_map(|(i, s)| s.as_ref().err().map(|e| (i, e)))
                    .expect("a refused batch of a valid size holds a bad submission");
                assert_eq!(err.status, first.status);
                assert_eq!(err.detail, format!("task {i}: {}", first.detail));
            } else {
                assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
            }
        }
    }
    verdict(&decoded)
}

/// A query string (the bytes as text) through the filter decoders: the task
/// list's and the dead letter's (`decode_list_query`) and the event stream's
/// (`decode_filter`, and `last_event_id` from the query or, the same bytes, from
/// the `Last-Event-ID` header). An accepted list filter has a limit of 1 to
/// 1000; every accepted filter and event id, written back as a query string,
/// decodes to itself; a refusal is a 422; every key and value survives
/// percent-encoding and `percent_decode`. The verdict is the list decoder's.
pub fn list_query(data: &[u8]) -> Verdict {
    let query = String::from_utf8_lossy(data);
    let mut result = Verdict::Refused;
    for forced in [None, Some(Status::DeadLetter)] {
        match decode_list_query(&query, forced) {
            Ok((filter, after)) => {
                result = Verdict::Accepted;
                assert!((1..=1000).contains(&filter.limit));
                assert_eq!(filter.after_seq, None);
                if forced.is_some() {
                    assert_eq!(filter.status, forced);
                }
                let text = list_query_text(&filter, after.as_deref());
                let again = decode_list_query(&text, forced)
                    .unwrap_or_else(|e| panic!("{text} is refused: {e:?}"));
                assert_eq!(again, (filter, after), "re-encoded as {text}");
            }
            Err(err) => check_query_error(&err),
        }
    }
    match decode_filter(&query) {
        Ok(filter) => {
            let text = events_query_text(&filter);
            let again = decode_filter(&text).unwrap_or_else(|e| panic!("{text} is refused: {e:?}"));
            assert_eq!(again, filter, "re-encoded as {text}");
        }
        Err(err) => check_query_error(&err),
    }
    for from_header in [false, true] {
        let mut headers = HeaderMap::new();
        if from_header {
            let Ok(value) = HeaderValue::from_bytes(data) else {
                continue;
            };
            headers.insert("last-event-id", value);
        }
        match last_event_id(&headers, if from_header { "" } else { &query }) {
            Ok(Some(id)) => {
                let text = format!("last_event_id={id}");
                assert_eq!(last_event_id(&HeaderMap::new(), &text), Ok(Some(id)));
            }
            Ok(None) => {}
            Err(err) => check_query_error(&err),
        }
    }
    for (key, value) in query_pairs(&query) {
        assert_eq!(percent_decode(&percent_encode(&key)), key);
        assert_eq!(percent_decode(&percent_encode(&value)), value);
    }
    result
}

/// Frames through one `FrameAssembler`, checked against the rules it documents.
///
/// The input is text lines: the first is the message limit in bytes (16 when it
/// is not a number; at most 65536), each other one a frame: a letter for its kind
/// (`t` text, `b` binary, `c` continuation, `p` ping, `o` pong, `x` close;
/// upper case when its FIN bit is set; lines starting otherwise are skipped) and
/// its payload, the rest of the line.
pub fn frame_assembler(data: &[u8]) -> Verdict {
    let mut lines = data.split(|b| *b == b'\n');
    let max = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<usize>().ok())
        .map_or(16, |n| n.min(1 << 16));
    let mut assembler = FrameAssembler::new(max);
    let mut model = AssemblyModel::Idle;
    let mut result = Verdict::Refused;
    for line in lines {
        let Some((&letter, payload)) = line.split_first() else {
            continue;
        };
        let kind = match letter.to_ascii_lowercase() {
            b't' => FrameKind::Text,
            b'b' => FrameKind::Binary,
            b'c' => FrameKind::Continuation,
            b'p' => FrameKind::Ping,
            b'o' => FrameKind::Pong,
            b'x' => FrameKind::Close,
            _ => continue,
        };
        let fin = letter.is_ascii_uppercase();
        let before = assembler.clone();
        let got = assembler.handle_frame(kind, fin, payload);
        let expected = model.handle(max, kind, fin, payload);
        assert_eq!(got, expected, "{kind:?} fin={fin}, {} bytes", payload.len());
        if got.is_err() {
            assert_eq!(assembler, before, "an error changes nothing");
        }
        if matches!(got, Ok(Assembled::Message(_))) {
            result = Verdict::Accepted;
        }
        if got == Ok(Assembled::Close) {
            break;
        }
    }
    result
}

/// The assembler's rules, stated plainly: what [`frame_assembler`] checks against.
enum AssemblyModel {
    /// Between messages.
    Idle,
    /// Inside a fragmented text message: every payload byte so far.
    Text(Vec<u8>),
    /// Inside a fragmented binary message.
    Binary,
    /// A message went over the limit.
    Overflowed,
}

impl AssemblyModel {
    fn handle(
        &mut self,
        max: usize,
        kind: FrameKind,
        fin: bool,
        payload: &[u8],
    ) -> Result<Assembled, AssemblyError> {
        use AssemblyModel as M;
        use FrameKind as K;
        match (kind, &mut *self) {
            (K::Close, _) => match payload {
                [] => Ok(Assembled::Close),
                [_] => Err(AssemblyError::CloseTooShort),
                [high, low, reason @ ..] => {
                    // RFC 6455 section 7.4 and the IANA registry: what a peer may send.
                    let code = u16::from_be_bytes([*high, *low]);
                    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                        Err(AssemblyError::CloseCodeNotAllowed(code))
                    } else if std::str::from_utf8(reason).is_err() {
                        Err(AssemblyError::CloseReasonNotUtf8)
                    } else {
                        Ok(Assembled::Close)
                    }
                }
            },
            (K::Ping | K::Pong, _) | (_, M::Overflowed) => Ok(Assembled::Ignored),
            (K::Continuation, M::Idle) => Err(AssemblyError::ContinuationWithoutMessage),
            (K::Text | K::Binary, M::Text(_) | M::Binary) => {
                Err(AssemblyError::MessageInsideFragmented)
            }
            (K::Binary, M::Idle) => {
                *self = if fin { M::Idle } else { M::Binary };
                Ok(Assembled::Binary)
            }
            (K::Continuation, M::Binary) => {
                if fin {
                    *self = M::Idle;
                }
                Ok(Assembled::Ignored)
            }
            (K::Text, M::Idle) | (K::Continuation, M::Text(_)) => {
                let mut message = match std::mem::replace(self, M::Idle) {
                    M::Text(bytes) => bytes,
                    _ => Vec::new(),
                };
                message.extend_from_slice(payload);
                if message.len() > max {
                    *self = M::Overflowed;
                    Ok(Assembled::TooLarge)
                } else if fin {
                    Ok(Assembled::Message(message))
                } else {
                    *self = M::Text(message);
                    Ok(Assembled::Incomplete)
                }
            }
        }
    }
}

/// The message limit of [`socket_stream`]'s socket: small, so that inputs reach it.
const SOCKET_MAX_MESSAGE_BYTES: usize = 256;

/// How long [`socket_stream`] waits for the socket to end; more is a hang.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// The bytes an agent sends on its WebSocket, then the end of the stream, read by
/// the real socket reader (`spawn_socket`: the frame parser, the mask check, the
/// frame assembler with a 256-byte limit, the UTF-8 check and the protocol
/// decoder) over an in-memory stream, as the coordinator closes it when told it
/// ended. The socket reports its end once, last, in time; everything it writes
/// back is well-formed frames: `error` messages, pongs and one close, last.
pub fn socket_stream(data: &[u8]) -> Verdict {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        tokio::time::timeout(SOCKET_WAIT, socket_session(data))
            .await
            .expect("the socket ends in time")
    })
}

async fn socket_session(data: &[u8]) -> Verdict {
    let (server, client) = tokio::io::duplex(1 << 16);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let config = SocketConfig {
        max_frame_bytes: SOCKET_MAX_MESSAGE_BYTES,
        ..SocketConfig::default()
    };
    let (events_tx, mut events) = mpsc::channel(16);
    let handle = spawn_socket(
        WebSocket::after_handshake(server, Role::Server),
        config,
        1,
        events_tx,
    );
    let written = tokio::spawn(async move {
        let mut written = Vec::new();
        let _ = client_read.read_to_end(&mut written).await;
        written
    });
    let sent = data.to_vec();
    tokio::spawn(async move {
        // The socket may stop reading before the end (after a protocol error).
        let _ = client_write.write_all(&sent).await;
        let _ = client_write.shutdown().await;
    });
    let mut messages = 0;
    let mut closed = false;
    while let Some(event) = events.recv().await {
        assert!(!closed, "an event after the close: {:?}", event.kind);
        match event.kind {
            SocketEventKind::Opened(_) => {}
            SocketEventKind::Message(_) => messages += 1,
            SocketEventKind::Closed(_) => closed = true,
        }
        if closed {
            // What the driver does when told: forget the socket, close it.
            handle.close(1000, "");
        }
    }
    assert!(closed, "the socket reports its end");
    drop(handle);
    let written = written.await.expect("the agent's side reads to the end");
    check_server_frames(written).await;
    if messages > 0 {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// Reads what the coordinator wrote to an agent, as the agent would.
async fn check_server_frames(written: Vec<u8>) {
    let (agent, mut feed) = tokio::io::duplex(written.len().max(1));
    feed.write_all(&written).await.expect("the bytes fit");
    feed.shutdown().await.expect("the feed ends");
    let mut agent = WebSocket::after_handshake(agent, Role::Client);
    agent.set_auto_close(false);
    agent.set_auto_pong(false);
    let mut closes = 0;
    loop {
        let frame = match agent.read_frame().await {
            Ok(frame) => frame,
            Err(err) => {
                let ended = matches!(
                    err,
                    fastwebsockets::WebSocketError::UnexpectedEOF
                        | fastwebsockets::WebSocketError::ConnectionClosed
                );
                assert!(ended, "the coordinator wrote a bad frame: {err}");
                break;
            }
        };
        assert_eq!(closes, 0, "a frame after the close");
        match frame.opcode {
            OpCode::Text => match decode_coordinator_message(&frame.payload) {
                Ok(CoordinatorMessage::Error { .. }) => {}
                other => panic!("the coordinator wrote {other:?}"),
            },
            OpCode::Pong => {}
            OpCode::Close => closes += 1,
            other => panic!("the coordinator wrote a {other:?} frame"),
        }
    }
}

thread_local! {
    /// An in-memory database with the real schema, one per thread.
    static ROWS_DB: Connection = rows_db();
}

fn rows_db() -> Connection {
    let conn = Connection::open_in_memory().expect("an in-memory database opens");
    db::migrate(&conn, Path::new(":memory:")).expect("the schema applies");
    conn
}

/// The number of columns of a `tasks` row.
const ROW_COLUMNS: usize = 22;

/// The longest description or metadata [`task_row`]'s start-up read keeps in
/// memory: short, so that inputs reach both sides.
const ROW_MAX_INLINE_BYTES: usize = 8;

/// A `tasks` row stored as SQLite takes it, then read back by the row decoder,
/// through `list_tasks` and through `load_live_tasks` (the start-up read, which
/// leaves long texts in storage). A row is listed either as a task or as a
/// damaged row, never fails the read; a listed task keeps what `Task` promises
/// (capabilities sorted, distinct and not empty), is read at start-up the same
/// (but for its long texts) when it is live, and, written with `write_task`
/// and listed again, is the same task; a row whose status is none of the known
/// ones stops the start-up read. A row the schema refuses is skipped.
///
/// The input is text lines, one per column in the order of the table (missing
/// ones are NULL): a letter for the storage class (`n` NULL, `i` integer, `r`
/// real, `t` text, `b` blob) and the value, the rest of the line. An integer or
/// real that does not parse is stored as text, and a line starting otherwise is
/// text as a whole. Text is stored as its bytes, UTF-8 or not.
pub fn task_row(data: &[u8]) -> Verdict {
    let mut lines = data.split(|b| *b == b'\n');
    let mut values = Vec::with_capacity(ROW_COLUMNS);
    let mut exprs = Vec::with_capacity(ROW_COLUMNS);
    for i in 1..=ROW_COLUMNS {
        let (value, as_text) = row_cell(lines.next());
        exprs.push(if as_text {
            format!("CAST(?{i} AS TEXT)")
        } else {
            format!("?{i}")
        });
        values.push(value);
    }
    let insert = format!(
        "INSERT INTO tasks (id, description, metadata, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history, reclaim_count) VALUES ({})",
        exprs.join(", ")
    );
    ROWS_DB.with(|conn| {
        conn.execute("DELETE FROM tasks", [])
            .expect("the table empties");
        if conn
            .execute(&insert, rusqlite::params_from_iter(values))
            .is_err()
        {
            return Verdict::Refused;
        }
        let filter = TaskFilter {
            limit: 10,
            ..TaskFilter::default()
        };
        let page = db::list_tasks(conn, &filter).expect("a row never fails a list");
        assert_eq!(
            page.tasks.len() + page.damaged.len(),
            1,
            "the row is listed"
        );
        let live = db::load_live_tasks(conn, ROW_MAX_INLINE_BYTES);
        let known_status = conn
            .query_row("SELECT status FROM tasks", [], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(text) => std::str::from_utf8(text)
                        .ok()
                        .and_then(|t| t.parse::<Status>().ok()),
                    _ => None,
                })
            })
            .expect("the status reads");
        if known_status.is_none() {
            assert!(
                matches!(live, Err(db::DbError::DamagedLive(_))),
                "a row of unknown status at start-up: {live:?}"
            );
        }
        let Some(task) = page.tasks.first() else {
            assert!(!page.damaged[0].reason.is_empty());
            return Verdict::Refused;
        };
        let names = &task.needed_capabilities();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]) && names.iter().all(|n| !n.is_empty()),
            "capabilities {names:?} are not sorted, distinct and non-empty"
        );
        let expected_live = if task.status().is_final() {
            vec![]
        } else {
            vec![elided(task, ROW_MAX_INLINE_BYTES)]
        };
        assert_eq!(
            live.expect("a listed task reads at start-up"),
            expected_live
        );
        db::write_task(conn, task, db::Texts::of(task)).expect("a decoded task is written");
        let again = db::list_tasks(conn, &filter).expect("a written task lists");
        assert_eq!(again.damaged, []);
        assert_eq!(again.tasks.as_slice(), std::slice::from_ref(task));
        Verdict::Accepted
    })
}

/// `task` as the start-up read gives it: texts over `max_inline_bytes` long
/// left in storage.
fn elided(task: &Task, max_inline_bytes: usize) -> Task {
    task.clone().with_payloads_elided(max_inline_bytes)
}

/// One column of [`task_row`]'s input: the value to bind and whether it is bound
/// as a blob to be stored as text.
fn row_cell(line: Option<&[u8]>) -> (Cell, bool) {
    let Some((&tag, rest)) = line.and_then(<[u8]>::split_first) else {
        return (Cell::Null, false);
    };
    let text = std::str::from_utf8(rest).ok();
    match tag {
        b'n' => (Cell::Null, false),
        b'i' => match text.and_then(|t| t.parse().ok()) {
            Some(n) => (Cell::Integer(n), false),
            None => (Cell::Blob(rest.to_vec()), true),
        },
        b'r' => match text.and_then(|t| t.parse().ok()) {
            Some(x) => (Cell::Real(x), false),
            None => (Cell::Blob(rest.to_vec()), true),
        },
        b't' => (Cell::Blob(rest.to_vec()), true),
        b'b' => (Cell::Blob(rest.to_vec()), false),
        _ => (Cell::Blob(line.unwrap_or_default().to_vec()), true),
    }
}

/// `again` with the id of `task` (ids are fresh on every decode).
fn same_id(mut again: NewTask, task: &NewTask) -> NewTask {
    again.id = task.id.clone();
    again
}

/// What every accepted submission is.
fn check_new_task(task: &NewTask) {
    assert!(!task.description.trim().is_empty());
    assert!(serde_json::from_str::<Value>(&task.metadata).is_ok_and(|m| m.is_object()));
    assert!(task.needed_capabilities.iter().all(|c| !c.is_empty()));
    assert!(task.max_retries.is_none_or(|n| n <= 1_000));
    assert_eq!(task.submitted_by.as_deref(), Some(SUBMITTER));
    assert_eq!(task.id.as_str().len(), 36, "a UUID");
}

/// What a refused body is answered with.
fn check_body_error(err: &ApiError) {
    let expected = match err.status {
        StatusCode::BAD_REQUEST => "invalid_body",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_field",
        other => panic!("a body refused with {other}: {err:?}"),
    };
    assert_eq!(err.code, expected);
}

/// A submission that `parse_submission` reads as `task` (but for its id).
fn submission_json(task: &NewTask) -> Value {
    let metadata: Value = serde_json::from_str(&task.metadata).unwrap_or(Value::Null);
    json!({
        "description": task.description,
        "metadata": metadata,
        "priority": task.priority.as_str(),
        "max_retries": task.max_retries,
        "complete_by": task.complete_by_ms,
        "needed_capabilities": task.needed_capabilities,
    })
}

/// What a refused query string is answered with.
fn check_query_error(err: &ApiError) {
    assert_eq!(
        (err.status, err.code),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
    );
}

/// A query string that asks the event stream for `filter`.
fn events_query_text(filter: &events::Filter) -> String {
    let mut pairs = Vec::new();
    if let Some(task_id) = &filter.task_id {
        pairs.push(format!("task_id={}", percent_encode(task_id)));
    }
    if let Some(agent_id) = &filter.agent_id {
        pairs.push(format!("agent_id={}", percent_encode(agent_id)));
    }
    if !filter.statuses.is_empty() {
        let names: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        pairs.push(format!("status={}", percent_encode(&names.join(","))));
    }
    pairs.join("&")
}

/// A query string that asks for `filter` and `after`.
fn list_query_text(filter: &TaskFilter, after: Option<&str>) -> String {
    let mut pairs = vec![("limit", filter.limit.to_string())];
    if let Some(status) = filter.status {
        pairs.push(("status", status.as_str().to_owned()));
    }
    if let Some(priority) = filter.priority {
        pairs.push(("priority", priority.as_str().to_owned()));
    }
    if let Some(agent) = &filter.assigned_to {
        pairs.push(("assigned_to", agent.clone()));
    }
    if let Some(capability) = &filter.capability {
        pairs.push(("capability", capability.clone()));
    }
    if let Some(search) = &filter.search {
        pairs.push(("q", search.clone()));
    }
    if let Some(after) = after {
        pairs.push(("after", after.to_owned()));
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Every byte but ASCII letters and digits as `%XX`.
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests;
