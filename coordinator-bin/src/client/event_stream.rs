//! A client of `GET /api/events`: opens the stream and hands out whole
//! server-sent events. The parsing of the text is a plain [`SseParser`].

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `id:`, if it had one.
    pub id: Option<String>,
    /// Its `event:` name (`message` when none was given).
    pub event: String,
    /// Its `data:` lines, joined with newlines.
    pub data: String,
}

/// Turns SSE text, in chunks cut anywhere, into events (comments and `retry:`
/// lines are skipped). Holds at most one unfinished line and event.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data {
                    let mut event = std::mem::take(&mut self.current);
                    if event.event.is_empty() {
                        event.event = "message".to_owned();
                    }
                    out.push(event);
                }
                self.current = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

/// Why a stream did not open.
#[derive(Debug)]
pub enum OpenError {
    /// The coordinator could not be reached, or the exchange broke.
    Io(std::io::Error),
    /// It answered, with a status other than 200.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The body, as text.
        body: String,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "GET /api/events: {e}"),
            OpenError::Refused { status, body } => {
                write!(f, "GET /api/events: HTTP {status}: {body}")
            }
        }
    }
}

impl std::error::Error for OpenError {}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> OpenError {
        OpenError::Io(e)
    }
}

/// An open event stream.
pub struct EventStream {
    body: Incoming,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
}

impl EventStream {
    /// Opens `GET /api/events?{query}` on `addr` (`host:port`) with `token`,
    /// resuming after `last_id` if given. Fails unless the answer is 200.
    pub async fn open(
        addr: &str,
        token: &str,
        query: &str,
        last_id: Option<&str>,
    ) -> std::io::Result<EventStream> {
        EventStream::try_open(addr, token, query, last_id)
            .await
            .map_err(|e| match e {
                OpenError::Io(e) => e,
                refused => std::io::Error::other(refused.to_string()),
            })
    }

    /// [`EventStream::open`], telling a coordinator that could not be reached
    /// from one that answered with a refusal (a standby's 503 `not_leader`).
    pub async fn try_open(
        addr: &str,
        token: &str,
        query: &str,
        last_id: Option<&str>,
    ) -> Result<EventStream, OpenError> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = if query.is_empty() {
            "/api/events".to_owned()
        } else {
            format!("/api/events?{query}")
        };
        let mut builder = Request::builder()
            .uri(path)
            .header("host", addr)
            .header("accept", "text/event-stream")
            .header("authorization", format!("Bearer {token}"));
        if let Some(id) = last_id {
            builder = builder.header("last-event-id", id);
        }
        let request = builder
            .body(Empty::<Bytes>::new())
            .map_err(std::io::Error::other)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            return Err(OpenError::Refused {
                status: status.as_u16(),
                body,
            });
        }
        Ok(EventStream {
            body: response.into_body(),
            parser: SseParser::default(),
            ready: std::collections::VecDeque::new(),
        })
    }

    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> std::io::Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.ready.extend(self.parser.push(&data));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
