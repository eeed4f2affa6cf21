//! Protocol tests: decoding of every message, error classification, proptests.

use proptest::prelude::*;
use serde_json::{json, Value};

#[cfg(feature = "client")]
use crate::client::Backoff;
use crate::protocol::*;

#[test]
fn identify_accepts_string_and_object_capabilities_and_extra_fields() {
    let m = decode_agent_message(
        br#"{"type":"identify","agent_id":"a","token":"t","capabilities":["gpu",{"name":"arm","version":2}],"client_type":"x","protocol_version":1}"#,
    )
    .unwrap();
    let AgentMessage::Identify { capabilities, .. } = m else {
        panic!()
    };
    let names: Vec<&str> = capabilities.iter().map(CapabilityEntry::name).collect();
    assert_eq!(names, ["gpu", "arm"]);
}

#[test]
fn failed_reads_error_or_reason() {
    let e =
        decode_agent_message(br#"{"type":"task_failed","task_id":"t","generation":1,"error":"x"}"#)
            .unwrap();
    assert_eq!(e.failure_text(), Some("x"));
    let r = decode_agent_message(
        br#"{"type":"task_failed","task_id":"t","generation":1,"reason":"y"}"#,
    )
    .unwrap();
    assert_eq!(r.failure_text(), Some("y"));
}

#[test]
fn tokens_used_comes_from_the_message_or_the_result() {
    let a = decode_agent_message(
        br#"{"type":"task_complete","task_id":"t","generation":1,"result":{},"tokens_used":5}"#,
    )
    .unwrap();
    assert_eq!(a.tokens_used(), Some(5));
    let b = decode_agent_message(
        br#"{"type":"task_complete","task_id":"t","generation":1,"result":{"tokens_used":9}}"#,
    )
    .unwrap();
    assert_eq!(b.tokens_used(), Some(9));
}

#[test]
fn errors_are_classified() {
    assert_eq!(
        decode_agent_message(b"{nope").unwrap_err().code,
        ErrorCode::InvalidJson
    );
    assert_eq!(
        decode_agent_message(b"[1,2]").unwrap_err().code,
        ErrorCode::InvalidJson
    );
    assert_eq!(
        decode_agent_message(br#"{"type":"dance"}"#)
            .unwrap_err()
            .code,
        ErrorCode::UnknownType
    );
    assert_eq!(
        decode_agent_message(br#"{"task_id":"t"}"#)
            .unwrap_err()
            .code,
        ErrorCode::UnknownType
    );
    assert_eq!(
        decode_agent_message(br#"{"type":"task_complete","task_id":"t"}"#)
            .unwrap_err()
            .code,
        ErrorCode::InvalidMessage
    );
}

/// How many bytes of the run of `x` in `detail` it quotes.
fn quoted_xs(detail: &str) -> usize {
    detail.split(|c| c != 'x').map(str::len).max().unwrap_or(0)
}

#[test]
fn an_unknown_type_is_quoted_at_most_256_bytes_and_marked_as_cut() {
    let long = "x".repeat(100_000);
    let frame = format!(r#"{{"type":"{long}"}}"#);
    let err = decode_agent_message(frame.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownType);
    assert_eq!(quoted_xs(&err.detail), MAX_QUOTE_BYTES);
    assert!(
        err.detail.contains("cut; 100000 bytes in all"),
        "{}",
        err.detail
    );
    assert!(err.detail.len() < 400, "{}", err.detail.len());
}

#[test]
fn a_wrong_value_quoted_by_serde_is_cut_too() {
    // serde's message quotes the string given where a number was expected.
    let long = "x".repeat(100_000);
    let frame = format!(r#"{{"type":"task_complete","task_id":"t","generation":"{long}"}}"#);
    let err = decode_agent_message(frame.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidMessage);
    assert!(
        quoted_xs(&err.detail) <= MAX_QUOTE_BYTES,
        "{}",
        err.detail.len()
    );
    assert!(err.detail.len() < 400, "{}", err.detail.len());
    let reply = err.to_message().encode();
    assert!(reply.len() < 512, "{}", reply.len());
}

#[test]
fn a_short_input_is_quoted_whole() {
    let err = decode_agent_message(br#"{"type":"dance"}"#).unwrap_err();
    assert_eq!(err.detail, "unknown message type `dance`");
    assert_eq!(
        clip_quote(&"y".repeat(MAX_QUOTE_BYTES)),
        "y".repeat(MAX_QUOTE_BYTES)
    );
}

#[test]
fn a_quote_is_cut_on_a_character_boundary() {
    // 255 one-byte characters, then two-byte ones: byte 256 is inside a character.
    let text = format!("{}{}", "a".repeat(255), "é".repeat(10));
    let clipped = clip_quote(&text);
    assert_eq!(
        clipped,
        format!("{}… (cut; {} bytes in all)", "a".repeat(255), text.len())
    );
}

#[test]
fn task_assign_with_text_that_is_not_an_object_sends_empty_metadata() {
    let bytes = encode_task_assign("t", "d", "not json", 1, 2);
    let CoordinatorMessage::TaskAssign { metadata, .. } =
        decode_coordinator_message(&bytes).unwrap()
    else {
        panic!()
    };
    assert_eq!(metadata, json!({}));
}

#[test]
fn coordinator_messages_use_the_wire_names() {
    let m = CoordinatorMessage::TaskAssign {
        task_id: "t".into(),
        description: "d".into(),
        metadata: json!({"k": 1}),
        generation: 2,
        assigned_at: 3,
    };
    let v: Value = serde_json::from_slice(&m.encode()).unwrap();
    assert_eq!(
        v,
        json!({"type":"task_assign","task_id":"t","description":"d","metadata":{"k":1},"generation":2,"assigned_at":3})
    );
    let e = CoordinatorMessage::error(ErrorCode::StaleGeneration, Some("t"), "");
    let v: Value = serde_json::from_slice(&e.encode()).unwrap();
    assert_eq!(
        v,
        json!({"type":"error","error":"stale_generation","task_id":"t"})
    );
    let ack = CoordinatorMessage::TaskAck {
        task_id: "t".into(),
        status: "accepted".into(),
    };
    assert_eq!(
        serde_json::to_value(&ack).unwrap(),
        json!({"type":"task_ack","task_id":"t","status":"accepted"})
    );
}

#[cfg(feature = "client")]
#[test]
fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
    let mut b = Backoff::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    let steps: Vec<u64> = (0..8)
        .map(|_| {
            let s = b.current_step().as_secs();
            let d = b.next_delay();
            assert!(d.as_secs_f64() <= s as f64 && d.as_secs_f64() >= s as f64 * 0.8);
            s
        })
        .collect();
    assert_eq!(steps, [1, 2, 4, 8, 16, 32, 60, 60]);
    b.reset();
    assert_eq!(b.current_step().as_secs(), 1);
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9 _\\-\"\\\\é]{0,12}"
}

fn agent_message() -> impl Strategy<Value = AgentMessage> {
    prop_oneof![
        (
            text(),
            text(),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..3)
        )
            .prop_map(|(agent_id, token, name, caps)| AgentMessage::Identify {
                agent_id,
                token,
                name,
                capabilities: caps.into_iter().map(CapabilityEntry::Name).collect(),
                status: None,
                client_type: Some("x".into()),
                current_task: None,
            }),
        Just(AgentMessage::Ping {}),
        text().prop_map(|task_id| AgentMessage::TaskAccepted { task_id }),
        (text(), proptest::option::of(0u64..100)).prop_map(|(task_id, p)| {
            AgentMessage::TaskProgress {
                task_id,
                progress: p.map(Value::from),
            }
        }),
        (
            text(),
            any::<u64>(),
            text(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(task_id, generation, r, tokens_used)| AgentMessage::TaskComplete {
                    task_id,
                    generation,
                    result: json!({"out": r}),
                    tokens_used
                }
            ),
        (
            text(),
            any::<u64>(),
            proptest::option::of(text()),
            proptest::option::of(text())
        )
            .prop_map(
                |(task_id, generation, error, reason)| AgentMessage::TaskFailed {
                    task_id,
                    generation,
                    error,
                    reason
                }
            ),
        (text(), proptest::option::of(text()))
            .prop_map(|(task_id, reason)| AgentMessage::TaskRejected { task_id, reason }),
        text().prop_map(|task_id| AgentMessage::TaskRecovering { task_id }),
    ]
}

fn coordinator_message() -> impl Strategy<Value = CoordinatorMessage> {
    prop_oneof![
        text().prop_map(|agent_id| CoordinatorMessage::Identified { agent_id }),
        any::<u64>().prop_map(|timestamp| CoordinatorMessage::Pong { timestamp }),
        (text(), text())
            .prop_map(|(task_id, status)| CoordinatorMessage::TaskAck { task_id, status }),
        (text(), text(), any::<u64>(), any::<u64>()).prop_map(
            |(task_id, description, generation, assigned_at)| CoordinatorMessage::TaskAssign {
                task_id,
                description,
                metadata: json!({}),
                generation,
                assigned_at
            }
        ),
        text().prop_map(|task_id| CoordinatorMessage::TaskCancel { task_id }),
        (text(), any::<u64>()).prop_map(|(task_id, generation)| CoordinatorMessage::TaskContinue {
            task_id,
            generation
        }),
        text().prop_map(|task_id| CoordinatorMessage::TaskReassign { task_id }),
        (proptest::option::of(text()), proptest::option::of(text())).prop_map(
            |(task_id, detail)| CoordinatorMessage::Error {
                error: ErrorCode::NotAssigned,
                task_id,
                detail
            }
        ),
    ]
}

/// Decodes `bytes` both ways and checks that they agree on the message or on
/// the error.
fn decodes_like_the_enum(bytes: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        decode_agent_message(bytes),
        decode_by_enum(bytes),
        "{}",
        String::from_utf8_lossy(bytes)
    );
    Ok(())
}

#[test]
fn frames_read_in_one_pass_decode_like_the_enum() {
    let frames: [&[u8]; 24] = [
        br#"{"type":"task_accepted","task_id":"t"}"#,
        br#"  {"task_id":"t","type":"task_accepted","generation":"not a number"}"#,
        br#"{"type":"task_accepted","task_id":"t","task_id":"u"}"#,
        br#"{"type":"task_accepted","task_id":"t","result":1,"result":2}"#,
        br#"{"type":"task_accepted","type":"ping","task_id":"t"}"#,
        br#"{"type":"task_accepted","task_id":null}"#,
        br#"{"type":"task_accepted"}"#,
        br#"{"type":"task\u005faccepted","task_id":"t\n\u00e9"}"#,
        br#"{"type":{"task_accepted":null},"task_id":"t"}"#,
        br#"["task_accepted","t",null,null,null,null,null,null]"#,
        br#"["task_accepted","t"]"#,
        br#"{"type":"task_complete","task_id":"t","generation":3}"#,
        br#"{"type":"task_complete","task_id":"t","generation":3,"result":null,"tokens_used":null}"#,
        br#"{"type":"task_complete","task_id":"t","generation":3.0,"result":{}}"#,
        br#"{"type":"task_complete","task_id":"t","generation":-1,"result":{}}"#,
        br#"{"type":"task_complete","task_id":"t","generation":18446744073709551615,"result":{"a":[1,-0,1.5e300,18446744073709551615,-9223372036854775808],"a":"again"},"tokens_used":7}"#,
        br#"{"type":"task_failed","task_id":"t","generation":1,"error":null,"reason":"r","progress":{}}"#,
        br#"{"type":"task_progress","task_id":"t","progress":null}"#,
        br#"{"type":"task_progress","task_id":"t","progress":[0.5]}"#,
        br#"{"type":"task_rejected","task_id":"t","reason":5}"#,
        br#"{"type":"task_recovering","task_id":"t","extra":{"deep":[[[]]]}}"#,
        br#"{"type":"ping","task_id":7}"#,
        br#"{"type":"identify","agent_id":"a","token":"t"}"#,
        br#"{"type":"task_complete","task_id":"t","generation":1} trailing"#,
    ];
    for frame in frames {
        decodes_like_the_enum(frame).unwrap();
    }
}

#[test]
fn the_frames_of_every_task_are_read_in_one_pass() {
    let frames: [&[u8]; 7] = [
        br#"{"type":"ping"}"#,
        br#"{"type":"task_accepted","task_id":"t"}"#,
        br#"{"type":"task_progress","task_id":"t","progress":1}"#,
        br#"{"type":"task_complete","task_id":"t","generation":1,"result":{"x":1}}"#,
        br#"{"type":"task_failed","task_id":"t","generation":1,"error":"e"}"#,
        br#"{"type":"task_rejected","task_id":"t"}"#,
        br#"{"type":"task_recovering","task_id":"t"}"#,
    ];
    for frame in frames {
        assert_eq!(decode_task_frame(frame), decode_by_enum(frame).ok());
    }
    assert_eq!(
        decode_task_frame(br#"{"type":"identify","agent_id":"a","token":"t"}"#),
        None
    );
}

/// Decodes `bytes` from the coordinator both ways and checks that they agree
/// on the message or on the error, and that a message read in one pass is the
/// enum's.
fn coordinator_decodes_like_the_enum(bytes: &[u8]) -> Result<(), TestCaseError> {
    let by_enum = decode_coordinator_by_enum(bytes);
    let text = String::from_utf8_lossy(bytes);
    if let Some(message) = decode_coordinator_frame(bytes) {
        prop_assert_eq!(Ok(message), by_enum.clone(), "{}", text);
    }
    prop_assert_eq!(decode_coordinator_message(bytes), by_enum, "{}", text);
    Ok(())
}

#[test]
fn coordinator_frames_read_in_one_pass_decode_like_the_enum() {
    let frames: [&[u8]; 36] = [
        br#"{"type":"task_ack","task_id":"t","status":"accepted"}"#,
        br#"  {"status":"s","task_id":"t","type":"task_ack","generation":"not a number"}"#,
        br#"{"type":"task_ack","task_id":"t","task_id":"u","status":"s"}"#,
        br#"{"type":"task_ack","task_id":"t","status":"s","other":1,"other":2}"#,
        br#"{"type":"task_ack","type":"task_cancel","task_id":"t","status":"s"}"#,
        br#"{"type":"task_ack","task_id":null,"status":"s"}"#,
        br#"{"type":"task_ack","task_id":"t"}"#,
        br#"{"type":"task\u005fack","task\u005fid":"t\n\u00e9","status":"s"}"#,
        br#"{"type":{"task_ack":null},"task_id":"t","status":"s"}"#,
        br#"["task_ack","t","s"]"#,
        br#"["task_cancel","t"]"#,
        br#"["pong",null,5,null,null,null,null,null,null,null,null]"#,
        br#"{"type":"task_assign","task_id":"t","description":"d","metadata":{"k":[1,-0,1.5e300,18446744073709551615,-9223372036854775808],"k":"again"},"generation":1,"assigned_at":2}"#,
        br#"{"type":"task_assign","task_id":"t","description":"d","metadata":null,"generation":1,"assigned_at":2}"#,
        br#"{"type":"task_assign","task_id":"t","description":"d","generation":1,"assigned_at":2}"#,
        br#"{"type":"task_assign","task_id":"t","description":"d","metadata":7,"generation":1.0,"assigned_at":2}"#,
        br#"{"type":"task_assign","task_id":"t","description":"d","metadata":[],"generation":1,"assigned_at":-2}"#,
        br#"{"type":"task_assign","task_id":"t","description":"d","metadata":"m","generation":18446744073709551615,"assigned_at":18446744073709551616}"#,
        br#"{"type":"task_continue","task_id":"t","generation":3,"status":null}"#,
        br#"{"type":"task_continue","task_id":"t","generation":null}"#,
        br#"{"type":"task_reassign","task_id":"t","error":"not a code"}"#,
        br#"{"type":"pong","timestamp":5,"extra":{"deep":[[[]]]}}"#,
        br#"{"type":"pong","timestamp":"5"}"#,
        br#"{"typ\u0065":"pong","timestamp":5}"#,
        br#"{"type":"identified","agent_id":"a","timestamp":-1}"#,
        br#"{"type":"error","error":"not_assigned","task_id":null,"detail":"d"}"#,
        br#"{"type":"error","error":"no_such_code"}"#,
        br#"{"type":"error","error":{"stale_generation":null}}"#,
        br#"{"type":"error","error":{"stale_generation":{}}}"#,
        br#"{"type":"error","error":{"stale_generation":1}}"#,
        br#"{"type":"error","error":null,"detail":"d"}"#,
        br#"{"type":"error","error":"invalid_state","detail":5}"#,
        br#"{"type":"ping"}"#,
        br#"{"task_id":"t","status":"s"}"#,
        br#"{"type":"task_ack","task_id":"t","status":"s"} trailing"#,
        br#""task_ack""#,
    ];
    for frame in frames {
        coordinator_decodes_like_the_enum(frame).unwrap();
    }
}

#[test]
fn a_metadata_nested_to_the_depth_limit_decodes_like_the_enum() {
    for depth in [120, 126, 127, 128, 200] {
        let frame = format!(
            r#"{{"type":"task_assign","task_id":"t","description":"d","metadata":{}{}{},"generation":1,"assigned_at":2}}"#,
            "[".repeat(depth),
            "1",
            "]".repeat(depth)
        );
        coordinator_decodes_like_the_enum(frame.as_bytes()).unwrap();
    }
}

#[test]
fn the_coordinator_frames_of_every_task_are_read_in_one_pass() {
    let frames = [
        encode_task_assign("t", "d", r#"{"k":1}"#, 1, 2),
        CoordinatorMessage::TaskAck {
            task_id: "t".into(),
            status: "complete".into(),
        }
        .encode(),
        CoordinatorMessage::TaskCancel {
            task_id: "t".into(),
        }
        .encode(),
        CoordinatorMessage::Pong { timestamp: 1 }.encode(),
        CoordinatorMessage::error(ErrorCode::StaleGeneration, Some("t"), "old").encode(),
    ];
    for frame in frames {
        let by_enum = decode_coordinator_by_enum(&frame).unwrap();
        assert_eq!(decode_coordinator_frame(&frame), Some(by_enum));
    }
}

/// An error code's wire name, a name that is none, or the enum's map form.
fn error_code_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("not_assigned")),
        Just(json!("stale_generation")),
        Just(json!("invalid_json")),
        Just(json!("no_such_code")),
        Just(json!({"not_assigned": null})),
        Just(json!({"not_assigned": {}})),
        Just(json!({"not_assigned": 1})),
        Just(json!({})),
    ]
}

/// A value of any kind for a coordinator message's field.
fn coordinator_field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..0).prop_map(Value::from),
        Just(json!(1.0)),
        Just(json!(18446744073709551615u64)),
        Just(Value::Null),
        error_code_value(),
        json_value(),
    ]
}

const COORDINATOR_TYPES: [&str; 8] = [
    "identified",
    "pong",
    "task_ack",
    "task_assign",
    "task_cancel",
    "task_continue",
    "task_reassign",
    "error",
];

const COORDINATOR_FIELDS: [&str; 11] = [
    "agent_id",
    "timestamp",
    "task_id",
    "status",
    "description",
    "metadata",
    "generation",
    "assigned_at",
    "error",
    "detail",
    "other",
];

/// The text of a JSON object with these entries in this order, duplicates
/// included (which a `Value` cannot hold).
fn object_text(entries: &[(String, Value)]) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).unwrap();
        out.push(b':');
        serde_json::to_writer(&mut out, value).unwrap();
    }
    out.push(b'}');
    out
}

/// Coordinator messages as the coordinator writes them, then broken or not:
/// a field dropped, a field's value replaced by one of any kind, fields
/// added anywhere (other types' fields, unknown ones, duplicates of present
/// ones, a second `type`), the fields shuffled.
fn mutated_coordinator_frame() -> impl Strategy<Value = Vec<u8>> {
    let added = (
        any::<usize>(),
        prop_oneof![
            10 => proptest::sample::select(COORDINATOR_FIELDS.to_vec()),
            1 => Just("type"),
        ],
        prop_oneof![
            4 => coordinator_field_value(),
            1 => proptest::sample::select(COORDINATOR_TYPES.to_vec()).prop_map(Value::from),
        ],
    );
    (
        coordinator_message(),
        json_value(),
        proptest::option::of(any::<usize>()),
        proptest::option::of((any::<usize>(), coordinator_field_value())),
        proptest::collection::vec(added, 0..3),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(message, metadata, dropped, replaced, added, shuffle, seed)| {
                let mut message = message;
                if let CoordinatorMessage::TaskAssign { metadata: m, .. } = &mut message {
                    *m = metadata;
                }
                let Value::Object(object) = serde_json::to_value(&message).unwrap() else {
                    unreachable!("a coordinator message is an object")
                };
                let mut entries: Vec<(String, Value)> = object.into_iter().collect();
                if shuffle {
                    // Rotate and swap by the seed: any field may come first.
                    let n = entries.len();
                    entries.rotate_left(seed as usize % n);
                    entries.swap(0, (seed >> 32) as usize % n);
                }
                if let Some((at, value)) = replaced {
                    let at = at % entries.len();
                    entries[at].1 = value;
                }
                if let Some(at) = dropped {
                    entries.remove(at % entries.len());
                }
                for (at, key, value) in added {
                    let at = at % (entries.len() + 1);
                    entries.insert(at, (key.to_owned(), value));
                }
                object_text(&entries)
            },
        )
}

/// A value for a coordinator message's field: mostly of the field's kind,
/// sometimes of any.
fn plausible_value(field: &'static str) -> BoxedStrategy<Value> {
    let right = match field {
        "timestamp" | "generation" | "assigned_at" => any::<u64>().prop_map(Value::from).boxed(),
        "metadata" => json_value().boxed(),
        "error" => error_code_value().boxed(),
        _ => text().prop_map(Value::from).boxed(),
    };
    prop_oneof![5 => right, 1 => coordinator_field_value()].boxed()
}

/// Objects of the coordinator fields, each there or not, in any order, some
/// twice, with or without a `type` of any kind; arrays in the enum's sequence
/// form; and other JSON.
fn coordinator_frame_text() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        8 => proptest::sample::select(COORDINATOR_TYPES.to_vec()).prop_map(Value::from),
        1 => Just(json!("ping")),
        1 => Just(json!("task_other")),
        1 => json_value(),
    ];
    let fields = COORDINATOR_FIELDS.map(|field| {
        proptest::option::weighted(0.4, plausible_value(field))
            .prop_map(move |value| value.map(|value| (field.to_owned(), value)))
    });
    let twice = proptest::collection::vec(
        (
            prop_oneof![
                10 => proptest::sample::select(COORDINATOR_FIELDS.to_vec()),
                1 => Just("type"),
            ],
            coordinator_field_value(),
        ),
        0..2,
    );
    let entries = (fields, twice)
        .prop_map(|(fields, twice)| {
            let mut entries: Vec<(String, Value)> = fields.into_iter().flatten().collect();
            entries.extend(twice.into_iter().map(|(k, v)| (k.to_owned(), v)));
            entries
        })
        .prop_shuffle();
    let object = (
        entries,
        proptest::option::weighted(0.9, (any::<usize>(), kind.clone())),
    )
        .prop_map(|(mut entries, kind)| {
            if let Some((at, kind)) = kind {
                entries.insert(at % (entries.len() + 1), ("type".to_owned(), kind));
            }
            object_text(&entries)
        });
    let sequence = (
        kind,
        proptest::collection::vec(coordinator_field_value(), 0..6),
    )
        .prop_map(|(kind, mut items)| {
            items.insert(0, kind);
            serde_json::to_vec(&items).unwrap()
        });
    prop_oneof![
        6 => object,
        2 => sequence,
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

/// Objects of the message types and fields, with values of every kind.
fn frame_object() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("identify"),
        Just("ping"),
        Just("task_accepted"),
        Just("task_progress"),
        Just("task_complete"),
        Just("task_failed"),
        Just("task_rejected"),
        Just("task_recovering"),
        Just("task_other"),
    ]
    .prop_map(Value::from);
    let field = prop_oneof![
        Just("task_id"),
        Just("generation"),
        Just("result"),
        Just("tokens_used"),
        Just("progress"),
        Just("error"),
        Just("reason"),
        Just("agent_id"),
        Just("other"),
    ];
    let value = prop_oneof![
        text().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        json_value(),
    ];
    (
        proptest::option::of(kind),
        proptest::collection::btree_map(field, value, 0..6),
    )
        .prop_map(|(kind, fields)| {
            let mut object: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(kind) = kind {
                object.insert("type".to_owned(), kind);
            }
            Value::Object(object)
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
        prop_oneof![
            Just("identify"),
            Just("task_complete"),
            Just("task_failed"),
            Just("ping")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("task_id".to_owned()),
                    Just("generation".to_owned()),
                    text()
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
    ))]

    #[test]
    fn agent_messages_round_trip(m in agent_message()) {
        let bytes = serde_json::to_vec(&m).unwrap();
        prop_assert_eq!(decode_agent_message(&bytes).unwrap(), m);
    }

    #[test]
    fn coordinator_messages_round_trip(m in coordinator_message()) {
        prop_assert_eq!(decode_coordinator_message(&m.encode()).unwrap(), m);
    }

    #[test]
    fn coordinator_messages_are_encoded_as_serde_writes_them(m in coordinator_message()) {
        prop_assert_eq!(m.encode(), serde_json::to_vec(&m).unwrap());
    }

    #[test]
    fn task_assign_written_by_hand_is_the_text_of_the_enum(task_id in text(), description in text(), key in text(), n in any::<u32>(), generation in any::<u64>(), assigned_at in any::<u64>()) {
        let metadata = json!({ key: n, "nested": {"list": [1, 2]} });
        let bytes = encode_task_assign(&task_id, &description, &metadata.to_string(), generation, assigned_at);
        let message = CoordinatorMessage::TaskAssign { task_id, description, metadata, generation, assigned_at };
        prop_assert_eq!(bytes, serde_json::to_vec(&message).unwrap());
    }

    #[test]
    fn task_assign_written_by_hand_decodes_like_the_enum(task_id in text(), description in text(), key in text(), n in any::<u32>(), generation in any::<u64>(), assigned_at in any::<u64>()) {
        let metadata = json!({ key: n, "nested": {"list": [1, 2]} });
        let bytes = encode_task_assign(&task_id, &description, &metadata.to_string(), generation, assigned_at);
        prop_assert_eq!(
            decode_coordinator_message(&bytes).unwrap(),
            CoordinatorMessage::TaskAssign { task_id, description, metadata, generation, assigned_at }
        );
    }

    #[test]
    fn a_quote_never_exceeds_the_limit_and_keeps_its_start(text in ".{0,400}") {
        let clipped = clip_quote(&text);
        if text.len() <= MAX_QUOTE_BYTES {
            prop_assert_eq!(clipped, text);
        } else {
            let kept = clipped.split("… (cut; ").next().unwrap_or("");
            prop_assert!(kept.len() <= MAX_QUOTE_BYTES && kept.len() + 4 > MAX_QUOTE_BYTES);
            prop_assert!(text.starts_with(kept));
        }
    }

    #[test]
    fn frame_objects_decode_like_the_enum(v in frame_object()) {
        decodes_like_the_enum(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn coordinator_messages_are_read_in_one_pass(m in coordinator_message()) {
        prop_assert_eq!(decode_coordinator_frame(&m.encode()), Some(m));
    }

    #[test]
    fn mutated_coordinator_frames_decode_like_the_enum(bytes in mutated_coordinator_frame()) {
        coordinator_decodes_like_the_enum(&bytes)?;
    }

    #[test]
    fn coordinator_frames_of_any_fields_decode_like_the_enum(bytes in coordinator_frame_text()) {
        coordinator_decodes_like_the_enum(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_agent_message(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Err(e) = decode_agent_message(&bytes) {
            prop_assert!(matches!(e.code, ErrorCode::InvalidJson | ErrorCode::UnknownType | ErrorCode::InvalidMessage));
        }
    }
}
