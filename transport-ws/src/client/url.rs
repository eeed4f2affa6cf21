//! Hub URLs: `ws://`, `wss://`, and their `http://` / `https://` spellings, with
//! the default port of the scheme when none is given.

use std::fmt;

#[cfg(test)]
mod tests;

/// A parsed coordinator WebSocket address.
///
/// | written | connects to |
/// |---|---|
/// | `ws://host:4000/ws` | `host:4000`, path `/ws`, plain TCP |
/// | `ws://host` | `host:80`, path `/ws` (the coordinator's endpoint) |
/// | `wss://host/agents` | `host:443`, path `/agents`, TLS |
/// | `http://…`, `https://…` | as `ws://…`, `wss://…` |
/// | `ws://[::1]:4000/ws` | the IPv6 loopback, port 4000 |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubUrl {
    tls: bool,
    host: String,
    port: u16,
    path: String,
    explicit_port: bool,
}

/// Why a hub URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid coordinator URL `{url}`: {reason} (expected ws://HOST[:PORT][/PATH] or wss://…)")]
pub struct HubUrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl HubUrl {
    /// Parses `url`; see the type's doc for what is accepted.
    pub fn parse(url: &str) -> Result<HubUrl, HubUrlError> {
        let refuse = |reason| HubUrlError {
            url: url.to_owned(),
            reason,
        };
        let trimmed = url.trim();
        let (scheme, rest) = trimmed
            .split_once("://")
            .ok_or_else(|| refuse("no scheme"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            _ => return Err(refuse("the scheme must be ws, wss, http or https")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
            Some(i) => (&rest[..i], "/ws"),
            None => (rest, "/ws"),
        };
        if authority.contains('@') {
            return Err(refuse("credentials in the URL are not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| refuse("bad host or port"))?;
        if host.is_empty() {
            return Err(refuse("no host"));
        }
        if host.contains(|c: char| c.is_whitespace() || c == '#') {
            return Err(refuse("bad host"));
        }
        let path = path.split('#').next().unwrap_or("/ws");
        Ok(HubUrl {
            tls,
            host: host.to_owned(),
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            path: path.to_owned(),
            explicit_port: port.is_some(),
        })
    }

    /// True for `wss://` (and `https://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host name or address, without brackets for IPv6.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port: the one written, else 80 (`ws`) or 443 (`wss`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request path (with its query, if any); `/ws` when the URL has none.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The value of the `Host` header: the host, with the port unless it is the
    /// scheme's default and was not written.
    pub fn host_header(&self) -> String {
        let host = self.bracketed_host();
        if self.explicit_port {
            format!("{host}:{}", self.port)
        } else {
            host
        }
    }

    /// `host:port` to connect to (IPv6 in brackets).
    pub fn socket_address(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for HubUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        write!(f, "{scheme}://{}{}", self.socket_address(), self.path)
    }
}

/// `host[:port]` or `[v6]:port`: the host without brackets and the port, if any.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !host.contains(':') {
            return None;
        }
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(parse_port(after.strip_prefix(':')?)?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => None, // IPv6 needs brackets
        Some((host, port)) => Some((host, Some(parse_port(port)?))),
        None => Some((authority, None)),
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|port| *port != 0)
}
