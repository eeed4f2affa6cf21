//! Tests of the SSE parser.

use super::{SseEvent, SseParser};

fn ev(id: Option<&str>, event: &str, data: &str) -> SseEvent {
    SseEvent {
        id: id.map(str::to_owned),
        event: event.to_owned(),
        data: data.to_owned(),
    }
}

#[test]
fn events_cut_anywhere_come_out_whole() {
    let text = "retry: 2000\n: connected\n\nid: 7\nevent: task\ndata: {\"a\":1}\n\nevent: reset\ndata: {}\n\n";
    for cut in 0..text.len() {
        let mut p = SseParser::default();
        let mut got = p.push(&text.as_bytes()[..cut]);
        got.extend(p.push(&text.as_bytes()[cut..]));
        assert_eq!(
            got,
            vec![ev(Some("7"), "task", "{\"a\":1}"), ev(None, "reset", "{}")],
            "cut at {cut}"
        );
    }
}

#[test]
fn comments_crlf_and_multi_line_data() {
    let mut p = SseParser::default();
    assert_eq!(
        p.push(b": keepalive\r\n\r\ndata: one\r\ndata:two\r\n\r\n"),
        vec![ev(None, "message", "one\ntwo")]
    );
    // An event without data is no event.
    assert_eq!(p.push(b"id: 3\nevent: x\n\n"), vec![]);
}
