//! Tests of hub URL parsing: schemes, default ports and paths, IPv6, refusals.

use super::*;

fn parts(url: &str) -> (bool, String, u16, String, String) {
    let hub = HubUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    (
        hub.is_tls(),
        hub.host().to_owned(),
        hub.port(),
        hub.path().to_owned(),
        hub.host_header(),
    )
}

fn p(
    tls: bool,
    host: &str,
    port: u16,
    path: &str,
    header: &str,
) -> (bool, String, u16, String, String) {
    (tls, host.into(), port, path.into(), header.into())
}

#[test]
fn each_scheme_has_its_default_port_and_the_path_defaults_to_ws() {
    assert_eq!(
        parts("ws://hub.example"),
        p(false, "hub.example", 80, "/ws", "hub.example")
    );
    assert_eq!(
        parts("wss://hub.example"),
        p(true, "hub.example", 443, "/ws", "hub.example")
    );
    assert_eq!(
        parts("http://hub.example/ws"),
        p(false, "hub.example", 80, "/ws", "hub.example")
    );
    assert_eq!(
        parts("HTTPS://hub.example/a/b?x=1"),
        p(true, "hub.example", 443, "/a/b?x=1", "hub.example")
    );
    assert_eq!(
        parts("ws://hub.example?x=1"),
        p(false, "hub.example", 80, "/ws", "hub.example")
    );
}

#[test]
fn a_written_port_is_kept_and_named_in_the_host_header() {
    assert_eq!(
        parts("ws://127.0.0.1:4000/ws"),
        p(false, "127.0.0.1", 4000, "/ws", "127.0.0.1:4000")
    );
    assert_eq!(parts("wss://h:443/ws"), p(true, "h", 443, "/ws", "h:443"));
    assert_eq!(parts(" ws://h:8080 "), p(false, "h", 8080, "/ws", "h:8080"));
}

#[test]
fn ipv6_hosts_are_written_in_brackets() {
    assert_eq!(
        parts("ws://[::1]:4000/ws"),
        p(false, "::1", 4000, "/ws", "[::1]:4000")
    );
    assert_eq!(parts("wss://[::1]"), p(true, "::1", 443, "/ws", "[::1]"));
    let hub = HubUrl::parse("ws://[::1]:4000/ws").unwrap();
    assert_eq!(hub.socket_address(), "[::1]:4000");
    assert_eq!(hub.to_string(), "ws://[::1]:4000/ws");
}

#[test]
fn bad_urls_are_refused_with_a_reason() {
    for (url, reason) in [
        ("127.0.0.1:4000", "no scheme"),
        ("ftp://h/ws", "the scheme must be ws, wss, http or https"),
        ("ws://", "no host"),
        ("ws://:4000/ws", "no host"),
        ("ws://h:/ws", "bad host or port"),
        ("ws://h:0/ws", "bad host or port"),
        ("ws://h:70000/ws", "bad host or port"),
        ("ws://h:x/ws", "bad host or port"),
        ("ws://::1/ws", "bad host or port"),
        ("ws://[h]:1/ws", "bad host or port"),
        (
            "ws://user:pw@h/ws",
            "credentials in the URL are not supported",
        ),
        ("ws://h h/ws", "bad host"),
    ] {
        let err = HubUrl::parse(url).expect_err(url);
        assert_eq!(err.reason, reason, "{url}");
        assert!(err.to_string().contains(url), "{err}");
    }
}
