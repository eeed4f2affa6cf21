//! `coordinator watch` and `coordinator submit --wait`: following committed
//! changes over `GET /api/events`, reconnecting (and resuming with
//! `Last-Event-ID`) when the stream breaks.

use std::time::Duration;

use serde_json::Value;

use crate::cli::ClientArgs;
use crate::client::api_client::Client;
use crate::client::commands::check;
use crate::client::event_stream::{EventStream, SseEvent};

type BoxError = Box<dyn std::error::Error>;

/// Statuses a task does not leave by itself.
const FINAL: [&str; 3] = ["completed", "dead_letter", "cancelled"];

/// Longest wait between two reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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

fn addr_and_token(args: &ClientArgs) -> Result<(String, String), BoxError> {
    // The event stream reads from the first coordinator given.
    let addr = super::commands::addrs(&args.url)?.remove(0);
    let token = args
        .token
        .clone()
        .ok_or("no token: give --token or set COORDINATOR_TOKEN")?;
    Ok((addr, token))
}

/// A stream that stays open: reconnects with back-off and resumes after the
/// last id seen.
struct Follower {
    addr: String,
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
                match EventStream::open(
                    &self.addr,
                    &self.token,
                    &self.query,
                    self.last_id.as_deref(),
                )
                .await
                {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        self.backoff = Duration::from_millis(250);
                        return Ok(Next::Opened);
                    }
                    Err(e) => {
                        let text = e.to_string();
                        // Refusals that a retry cannot fix.
                        if text.contains("HTTP 401")
                            || text.contains("HTTP 403")
                            || text.contains("HTTP 422")
                        {
                            return Err(text.into());
                        }
                        eprintln!("event stream: {text}; retrying in {:?}", self.backoff);
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
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
    let (addr, token) = addr_and_token(args)?;
    Ok(Follower {
        addr,
        token,
        query,
        last_id: None,
        stream: None,
        backoff: Duration::from_millis(250),
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
            let task = check(http.get(&format!("/api/tasks/{}", escape(id))).await?)?;
            if task["status"].as_str().is_some_and(is_final) {
                return Ok(task);
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
    let mut http = Client::new(&addr_and_token(args)?.0, args.token.as_deref());
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
