//! `coordinator watch` and `coordinator submit --wait`: following committed
//! changes over `GET /api/events`, reconnecting (and resuming with
//! `Last-Event-ID`) when the stream breaks.

use std::time::Duration;

use serde_json::Value;

use coordinator_transport::failover::{Failover, Next as FailoverNext, Refused};

use crate::cli::ClientArgs;
use crate::client::api_client::{addr_of, Client};
use crate::client::commands::check;
use crate::client::event_stream::{EventStream, OpenError, SseEvent};

type BoxError = Box<dyn std::error::Error>;

/// Statuses a task does not leave by itself.
const FINAL: [&str; 3] = ["completed", "dead_letter", "cancelled"];

/// Longest wait between two reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The first wait after every coordinator refused the stream.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Prints a line; a closed stdout ends the program quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// Percent-encodes everything but unreserved characters (for paths and queries).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn addrs_and_token(args: &ClientArgs) -> Result<(Vec<String>, String), BoxError> {
    let addrs = super::commands::addrs(&args.url)?;
    let token = args
        .token
        .clone()
        .ok_or("no token: give --token or set COORDINATOR_TOKEN")?;
    Ok((addrs, token))
}

/// A stream that stays open: reconnects with back-off and resumes after the
/// last id seen. With several coordinators it reads from the leader: a
/// coordinator that cannot be reached, or a standby (503 `not_leader`), sends
/// it to the leader named or the next one ([`Failover`]); once every one
/// refused, it backs off.
struct Follower {
    addrs: Failover<String>,
    token: String,
    query: String,
    last_id: Option<String>,
    stream: Option<EventStream>,
    backoff: Duration,
}

/// What [`Follower::next`] brings.
enum Next {
    /// An event (a `task`, `agent`, `reset` or `dropped` one).
    Event(SseEvent),
    /// A new stream was opened (after the first one, events may have been
    /// missed unless it resumed: the caller may read the state again).
    Opened,
}

impl Follower {
    async fn next(&mut self) -> Result<Next, BoxError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                let addr = self.addrs.current().clone();
                let opened =
                    EventStream::try_open(&addr, &self.token, &self.query, self.last_id.as_deref())
                        .await;
                let refused = match opened {
                    Ok(stream) => {
                        eprintln!("event stream: following {addr}");
                        self.addrs.handle_success();
                        self.stream = Some(stream);
                        self.backoff = FIRST_BACKOFF;
                        return Ok(Next::Opened);
                    }
                    // Refusals that a retry cannot fix.
                    Err(OpenError::Refused {
                        status: 401 | 403 | 422,
                        body,
                    }) => return Err(format!("{addr}: GET /api/events: {body}").into()),
                    Err(OpenError::Refused { status: 503, body }) => {
                        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        if body["error"] == "not_leader" {
                            let leader = body["leader"].as_str().and_then(addr_of);
                            Refused::NotLeader { leader }
                        } else {
                            eprintln!("event stream: {addr}: HTTP 503: {body}");
                            Refused::Unreachable
                        }
                    }
                    Err(e) => {
                        eprintln!("event stream: {addr}: {e}");
                        Refused::Unreachable
                    }
                };
                if self.addrs.handle_refused(refused) == FailoverNext::GiveUp {
                    eprintln!(
                        "event stream: no coordinator serves; retrying in {:?}",
                        self.backoff
                    );
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                continue;
            };
            match stream.next().await {
                Ok(Some(event)) => {
                    if event.id.is_some() {
                        self.last_id.clone_from(&event.id);
                    }
                    return Ok(Next::Event(event));
                }
                Ok(None) | Err(_) => {
                    eprintln!("event stream ended; reconnecting");
                    self.stream = None;
                }
            }
        }
    }
}

fn follower(args: &ClientArgs, query: String) -> Result<Follower, BoxError> {
    let (addrs, token) = addrs_and_token(args)?;
    Ok(Follower {
        addrs: Failover::new(addrs).ok_or("--url names no coordinator")?,
        token,
        query,
        last_id: None,
        stream: None,
        backoff: FIRST_BACKOFF,
    })
}

fn is_final(status: &str) -> bool {
    FINAL.contains(&status)
}

/// Follows task `id` until it is final and returns its stored record. The
/// stream is opened before the record is read, so no change can fall between.
pub async fn until_final(
    args: &ClientArgs,
    http: &mut Client,
    id: &str,
    mut on_event: impl FnMut(&Value),
) -> Result<Value, BoxError> {
    let mut follow = follower(args, format!("task_id={}", escape(id)))?;
    loop {
        let read_again = match follow.next().await? {
            Next::Opened => true,
            Next::Event(event) => match event.event.as_str() {
                "task" => {
                    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    on_event(&data);
                    data["status"].as_str().is_some_and(is_final)
                }
                "reset" => true,
                _ => false,
            },
        };
        if read_again {
            // A read cut by a coordinator going away is made again once the
            // stream is open again (on the leader then).
            match http.get(&format!("/api/tasks/{}", escape(id))).await {
                Ok(reply) => {
                    let task = check(reply)?;
                    if task["status"].as_str().is_some_and(is_final) {
                        return Ok(task);
                    }
                }
                Err(e) => {
                    eprintln!("reading task {id}: {e}; trying again");
                    follow.stream = None;
                    tokio::time::sleep(follow.backoff).await;
                }
            }
        }
    }
}

/// `hh:mm:ss.mmm` (UTC) of a time in ms since the epoch.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line for a person.
pub fn describe(event: &SseEvent) -> String {
    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    match event.event.as_str() {
        "task" => {
            let mut line = format!(
                "{} task {} {} -> {} gen {} agent {}",
                clock(data["at"].as_u64().unwrap_or(0)),
                text(&data["task_id"]),
                text(&data["event"]),
                text(&data["status"]),
                text(&data["generation"]),
                text(&data["agent_id"]),
            );
            if !data["last_error"].is_null() {
                line += &format!(" error {}", text(&data["last_error"]));
            }
            line
        }
        "agent" => {
            let mut line = format!(
                "{} agent {} {}",
                clock(data["state_since"].as_u64().unwrap_or(0)),
                text(&data["agent_id"]),
                text(&data["state"]),
            );
            if !data["current_task"].is_null() {
                line += &format!(" task {}", text(&data["current_task"]));
            }
            if data["drained"] == Value::Bool(true) {
                line += " drained";
            }
            if data["connected"] == Value::Bool(false) {
                line += " disconnected";
            }
            line
        }
        other => format!("-- {other}: {}", event.data),
    }
}

/// `coordinator watch`: prints every change passing the filters as it is
/// committed; with `task`, ends when that task is final.
pub async fn watch(
    args: &ClientArgs,
    task: Option<String>,
    agent: Option<String>,
    statuses: Vec<String>,
) -> Result<(), BoxError> {
    let mut query = Vec::new();
    if let Some(task) = &task {
        query.push(format!("task_id={}", escape(task)));
    }
    if let Some(agent) = &agent {
        query.push(format!("agent_id={}", escape(agent)));
    }
    if !statuses.is_empty() {
        query.push(format!("status={}", escape(&statuses.join(","))));
    }
    let print = |event: &SseEvent| {
        if args.json {
            out!("{}", event.data);
        } else {
            out!("{}", describe(event));
        }
    };
    let Some(task) = task else {
        let mut follow = follower(args, query.join("&"))?;
        loop {
            if let Next::Event(event) = follow.next().await? {
                print(&event);
            }
        }
    };
    // One task: its current state first (read once the stream is open), then
    // its changes until it is final.
    let mut http = Client::new(&addrs_and_token(args)?.0.join(","), args.token.as_deref());
    let record = until_final(args, &mut http, &task, |data| {
        let event = SseEvent {
            id: None,
            event: "task".to_owned(),
            data: data.to_string(),
        };
        print(&event);
    })
    .await?;
    let status = text(&record["status"]);
    if !args.json {
        out!("{task} is {status}");
    }
    if status != "completed" {
        return Err(format!(
            "task {task} ended {status}: {}",
            text(&record["last_error"])
        )
        .into());
    }
    Ok(())
}
