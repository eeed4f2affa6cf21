//! A tiny HTTP/1.1 JSON client of the coordinator API on hyper, over one or
//! several coordinators: it follows a standby's 503 `not_leader` to the leader
//! and moves past a coordinator it cannot reach (the decision is
//! [`coordinator_transport::failover::Failover`]'s).

use bytes::Bytes;
use coordinator_transport::failover::{Failover, Next, Refused};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// One keep-alive connection to the coordinator that leads.
pub struct Client {
    /// The coordinators (`host:port`), at the one to use.
    addrs: Failover<String>,
    token: Option<String>,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

enum Attempt {
    /// The coordinator could not be reached: nothing was sent.
    Unreachable(std::io::Error),
    NotSent(std::io::Error),
    Failed(std::io::Error),
}

/// `host:port` of a coordinator URL (`http://host:port`, with or without the
/// scheme and a trailing `/`); `None` for anything else (`https://`, a path).
pub fn addr_of(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return None,
        None => url,
    };
    let addr = rest.trim_end_matches('/');
    (!addr.is_empty() && !addr.contains(['/', '?', '#', '@', ' '])).then(|| addr.to_owned())
}

/// A response: status, headers and JSON body (or the raw text as a JSON string).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Value,
}

impl Client {
    /// A client for `addr` (`127.0.0.1:PORT`, or several separated by commas,
    /// each maybe with `http://`) sending `token` as a bearer token.
    pub fn new(addr: &str, token: Option<&str>) -> Client {
        let addrs: Vec<String> = addr
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .map(|a| addr_of(a).unwrap_or_else(|| a.trim().to_owned()))
            .collect();
        Client {
            addrs: Failover::new(addrs)
                .unwrap_or_else(|| Failover::new(vec![addr.to_owned()]).expect("one address")),
            token: token.map(str::to_owned),
            sender: None,
        }
    }

    /// The coordinator requests go to now (`host:port`).
    pub fn addr(&self) -> &str {
        self.addrs.current()
    }

    async fn connect(&mut self) -> std::io::Result<&mut http1::SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addrs.current()).await?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just connected"))
    }

    /// Sends a request with a raw body to the leader: a standby's 503
    /// `not_leader` sends it to the leader it names (else the next
    /// coordinator), and so does a coordinator that cannot be reached; both
    /// changed nothing, so any request may go again. Bounded: once every
    /// coordinator refused, the last 503 is the answer, or the error names
    /// what each said.
    pub async fn raw(&mut self, method: &str, path: &str, body: Vec<u8>) -> std::io::Result<Reply> {
        let mut tried = Vec::new();
        loop {
            let addr = self.addrs.current().clone();
            let (refused, outcome) = match self.raw_here(method, path, body.clone()).await {
                Err(Attempt::Unreachable(e)) => {
                    tried.push(format!("{addr}: {e}"));
                    (Refused::Unreachable, Err(e))
                }
                Ok(reply) if is_not_leader(&reply) => {
                    let leader = reply.body["leader"].as_str().and_then(addr_of);
                    tried.push(format!("{addr}: not the leader"));
                    (Refused::NotLeader { leader }, Ok(reply))
                }
                Ok(reply) => {
                    self.addrs.handle_success();
                    return Ok(reply);
                }
                Err(Attempt::NotSent(e) | Attempt::Failed(e)) => return Err(e),
            };
            self.sender = None;
            if self.addrs.handle_refused(refused) == Next::GiveUp {
                return outcome.map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("no coordinator serves: {}", tried.join("; ")),
                    )
                });
            }
        }
    }

    /// [`Client::raw`] at the current coordinator. A request the server never
    /// saw (its keep-alive connection had just closed) is sent once more on a
    /// new connection.
    async fn raw_here(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, Attempt> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_once(method, path, body.clone()).await {
                Err(Attempt::NotSent(_)) if attempts < 3 => {
                    self.sender = None;
                }
                Err(e) => {
                    self.sender = None;
                    return Err(e);
                }
                Ok(reply) => return Ok(reply),
            }
        }
    }

    async fn try_once(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, Attempt> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addrs.current().clone())
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Attempt::Failed(std::io::Error::other(e)))?;
        let sender = self.connect().await.map_err(Attempt::Unreachable)?;
        sender
            .ready()
            .await
            .map_err(|e| Attempt::NotSent(std::io::Error::other(e)))?;
        let idempotent = matches!(method, "GET" | "HEAD" | "DELETE");
        let response = sender.send_request(request).await.map_err(|e| {
            // Not sent, or (for a request that may be repeated) cut before any answer
            // because the server had just closed the keep-alive connection.
            if e.is_canceled() || (idempotent && e.is_incomplete_message()) {
                Attempt::NotSent(std::io::Error::other(e))
            } else {
                Attempt::Failed(std::io::Error::other(e))
            }
        })?;
        let status = response.status().as_u16();
        let closing = response
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| Attempt::Failed(std::io::Error::other(e)))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if closing {
            self.sender = None;
        }
        Ok(Reply {
            status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a JSON request.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<Reply> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, path, bytes).await
    }

    /// GET.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Reply> {
        self.send("GET", path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&mut self, path: &str, body: &Value) -> std::io::Result<Reply> {
        self.send("POST", path, Some(body)).await
    }
}

/// A standby's answer: 503 `not_leader`.
fn is_not_leader(reply: &Reply) -> bool {
    reply.status == 503 && reply.body["error"] == "not_leader"
}

#[cfg(test)]
mod tests;
