//! Tests of the frame assembler on its own: single frames, fragments, control frames
//! between fragments, the size limit, protocol errors, binary frames; proptests.

use proptest::prelude::*;

use super::*;

use FrameKind::{Binary, Close, Continuation, Ping, Pong, Text};

/// One frame as the shell would hand it over.
type Frame = (FrameKind, bool, Vec<u8>);

fn frame(kind: FrameKind, fin: bool, payload: &[u8]) -> Frame {
    (kind, fin, payload.to_vec())
}

/// Feeds `frames` in order and returns what each one meant.
fn feed(assembler: &mut FrameAssembler, frames: &[Frame]) -> Vec<Result<Assembled, AssemblyError>> {
    frames
        .iter()
        .map(|(kind, fin, payload)| assembler.handle_frame(*kind, *fin, payload))
        .collect()
}

fn message(bytes: &[u8]) -> Result<Assembled, AssemblyError> {
    Ok(Assembled::Message(bytes.to_vec()))
}

const INCOMPLETE: Result<Assembled, AssemblyError> = Ok(Assembled::Incomplete);
const IGNORED: Result<Assembled, AssemblyError> = Ok(Assembled::Ignored);
const TOO_LARGE: Result<Assembled, AssemblyError> = Ok(Assembled::TooLarge);

#[test]
fn a_single_text_frame_is_a_message() {
    let mut a = FrameAssembler::new(64);
    let out = feed(
        &mut a,
        &[
            frame(Text, true, b"{\"a\":1}"),
            frame(Text, true, b"second"),
        ],
    );
    assert_eq!(out, vec![message(b"{\"a\":1}"), message(b"second")]);
}

#[test]
fn empty_messages_are_messages() {
    let mut a = FrameAssembler::new(0);
    let out = feed(
        &mut a,
        &[
            frame(Text, true, b""),
            frame(Text, false, b""),
            frame(Continuation, false, b""),
            frame(Continuation, true, b""),
        ],
    );
    assert_eq!(
        out,
        vec![message(b""), INCOMPLETE, INCOMPLETE, message(b"")]
    );
}

#[test]
fn fragments_are_joined_in_order() {
    let mut a = FrameAssembler::new(64);
    let out = feed(
        &mut a,
        &[
            frame(Text, false, b"{\"type\""),
            frame(Continuation, false, b":"),
            frame(Continuation, true, b"\"ping\"}"),
            frame(Text, true, b"next"),
        ],
    );
    assert_eq!(
        out,
        vec![
            INCOMPLETE,
            INCOMPLETE,
            message(b"{\"type\":\"ping\"}"),
            message(b"next")
        ]
    );
}

#[test]
fn pings_and_pongs_between_fragments_are_ignored() {
    let mut a = FrameAssembler::new(64);
    let out = feed(
        &mut a,
        &[
            frame(Ping, true, b"p"),
            frame(Text, false, b"ab"),
            frame(Ping, true, b"x"),
            frame(Pong, true, b""),
            frame(Continuation, false, b"cd"),
            frame(Pong, true, b"y"),
            frame(Continuation, true, b"ef"),
            frame(Ping, true, b""),
        ],
    );
    assert_eq!(
        out,
        vec![
            IGNORED,
            INCOMPLETE,
            IGNORED,
            IGNORED,
            INCOMPLETE,
            IGNORED,
            message(b"abcdef"),
            IGNORED
        ]
    );
}

#[test]
fn a_single_frame_of_exactly_the_limit_passes_and_one_byte_more_does_not() {
    let mut a = FrameAssembler::new(8);
    assert_eq!(a.max_message_bytes(), 8);
    assert_eq!(a.handle_frame(Text, true, &[b'x'; 8]), message(&[b'x'; 8]));
    assert_eq!(a.handle_frame(Text, true, &[b'x'; 9]), TOO_LARGE);
}

#[test]
fn a_fragmented_message_of_exactly_the_limit_passes() {
    let mut a = FrameAssembler::new(8);
    let out = feed(
        &mut a,
        &[
            frame(Text, false, b"abc"),
            frame(Continuation, false, b"def"),
            frame(Continuation, true, b"gh"),
        ],
    );
    assert_eq!(out, vec![INCOMPLETE, INCOMPLETE, message(b"abcdefgh")]);
}

#[test]
fn a_fragmented_message_one_byte_over_the_limit_is_too_large_at_the_crossing_fragment() {
    let mut a = FrameAssembler::new(8);
    let out = feed(
        &mut a,
        &[
            frame(Text, false, b"abc"),
            frame(Continuation, false, b"def"),
            frame(Continuation, false, b"ghi"),
            frame(Continuation, true, b"j"),
        ],
    );
    assert_eq!(out, vec![INCOMPLETE, INCOMPLETE, TOO_LARGE, IGNORED]);
}

#[test]
fn a_first_fragment_over_the_limit_is_too_large_at_once() {
    let mut a = FrameAssembler::new(2);
    let out = feed(
        &mut a,
        &[frame(Text, false, b"abc"), frame(Continuation, true, b"")],
    );
    assert_eq!(out, vec![TOO_LARGE, IGNORED]);
}

#[test]
fn after_too_large_everything_but_a_close_is_ignored() {
    let mut a = FrameAssembler::new(2);
    let out = feed(
        &mut a,
        &[
            frame(Text, true, b"abc"),
            frame(Text, true, b"ok"),
            frame(Continuation, true, b"x"),
            frame(Binary, true, b"\x00"),
            frame(Text, false, b"a"),
            frame(Ping, true, b""),
            frame(Close, true, b"\x03\xe8"),
        ],
    );
    assert_eq!(
        out,
        vec![
            TOO_LARGE,
            IGNORED,
            IGNORED,
            IGNORED,
            IGNORED,
            IGNORED,
            Ok(Assembled::Close)
        ]
    );
}

#[test]
fn a_continuation_with_nothing_started_is_an_error_that_changes_nothing() {
    let mut a = FrameAssembler::new(64);
    let out = feed(
        &mut a,
        &[
            frame(Continuation, true, b"x"),
            frame(Continuation, false, b"x"),
            frame(Text, true, b"done"),
            frame(Continuation, true, b"late"),
            frame(Text, true, b"still fine"),
        ],
    );
    assert_eq!(
        out,
        vec![
            Err(AssemblyError::ContinuationWithoutMessage),
            Err(AssemblyError::ContinuationWithoutMessage),
            message(b"done"),
            Err(AssemblyError::ContinuationWithoutMessage),
            message(b"still fine"),
        ]
    );
}

#[test]
fn a_data_frame_inside_a_fragmented_message_is_an_error_that_changes_nothing() {
    let mut a = FrameAssembler::new(64);
    let out = feed(
        &mut a,
        &[
            frame(Text, false, b"ab"),
            frame(Text, true, b"new"),
            frame(Text, false, b"new"),
            frame(Binary, true, b"\x00"),
            frame(Binary, false, b"\x00"),
            frame(Continuation, true, b"cd"),
        ],
    );
    let inside = Err(AssemblyError::MessageInsideFragmented);
    assert_eq!(
        out,
        vec![
            INCOMPLETE,
            inside.clone(),
            inside.clone(),
            inside.clone(),
            inside,
            message(b"abcd"),
        ]
    );
}

#[test]
fn a_binary_frame_is_refused_and_the_next_text_frame_passes() {
    let mut a = FrameAssembler::new(64);
    let out = feed(
        &mut a,
        &[frame(Binary, true, b"\x00\x01"), frame(Text, true, b"t")],
    );
    assert_eq!(out, vec![Ok(Assembled::Binary), message(b"t")]);
}

#[test]
fn a_fragmented_binary_message_is_refused_once_and_its_fragments_ignored() {
    let mut a = FrameAssembler::new(4);
    let out = feed(
        &mut a,
        &[
            frame(Binary, false, b"\x00"),
            frame(Ping, true, b""),
            frame(Continuation, false, &[0; 100]),
            frame(Text, true, b"t"),
            frame(Continuation, true, b"\x01"),
            frame(Text, true, b"t"),
        ],
    );
    assert_eq!(
        out,
        vec![
            Ok(Assembled::Binary),
            IGNORED,
            IGNORED,
            Err(AssemblyError::MessageInsideFragmented),
            IGNORED,
            message(b"t"),
        ]
    );
}

#[test]
fn a_close_inside_a_fragmented_message_is_a_close() {
    let mut a = FrameAssembler::new(64);
    let out = feed(
        &mut a,
        &[frame(Text, false, b"ab"), frame(Close, true, b"")],
    );
    assert_eq!(out, vec![INCOMPLETE, Ok(Assembled::Close)]);
}

#[test]
fn errors_read_as_before() {
    assert_eq!(
        AssemblyError::ContinuationWithoutMessage.to_string(),
        "continuation frame without a message"
    );
    assert_eq!(
        AssemblyError::MessageInsideFragmented.to_string(),
        "a new message started inside a fragmented one"
    );
}

/// A ping or a pong with a short payload.
fn control() -> impl Strategy<Value = Frame> {
    (
        prop_oneof![Just(Ping), Just(Pong)],
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(kind, payload)| (kind, true, payload))
}

/// A message cut into one or more fragments (some possibly empty), each preceded
/// by some control frames.
fn split_message() -> impl Strategy<Value = Vec<(Vec<Frame>, Vec<u8>)>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(control(), 0..3),
            proptest::collection::vec(any::<u8>(), 0..40),
        ),
        1..8,
    )
}

/// The frames of one split message and what each should mean, given whether the
/// whole message fits.
fn frames_of(
    pieces: &[(Vec<Frame>, Vec<u8>)],
    limit: usize,
) -> (Vec<Frame>, Vec<Result<Assembled, AssemblyError>>) {
    let whole: Vec<u8> = pieces.iter().flat_map(|(_, f)| f.iter().copied()).collect();
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    let mut so_far = 0usize;
    let mut over = false;
    for (i, (controls, fragment)) in pieces.iter().enumerate() {
        for c in controls {
            frames.push(c.clone());
            expected.push(IGNORED);
        }
        let kind = if i == 0 { Text } else { Continuation };
        let last = i + 1 == pieces.len();
        frames.push((kind, last, fragment.clone()));
        so_far += fragment.len();
        expected.push(if over {
            IGNORED
        } else if so_far > limit {
            over = true;
            TOO_LARGE
        } else if last {
            message(&whole)
        } else {
            INCOMPLETE
        });
    }
    (frames, expected)
}

proptest! {
    #[test]
    fn split_messages_with_control_frames_between_reassemble_exactly(
        messages in proptest::collection::vec(split_message(), 1..4),
        trailing in proptest::collection::vec(control(), 0..3),
        slack in 0usize..4,
    ) {
        let longest = messages
            .iter()
            .map(|m| m.iter().map(|(_, f)| f.len()).sum::<usize>())
            .max()
            .unwrap_or(0);
        let mut a = FrameAssembler::new(longest + slack);
        let mut frames = Vec::new();
        let mut expected = Vec::new();
        for pieces in &messages {
            let (f, e) = frames_of(pieces, longest + slack);
            frames.extend(f);
            expected.extend(e);
        }
        for c in trailing {
            frames.push(c);
            expected.push(IGNORED);
        }
        let out = feed(&mut a, &frames);
        // Every message came out whole, in order.
        let joined: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| m.iter().flat_map(|(_, f)| f.iter().copied()).collect())
            .collect();
        let got: Vec<Vec<u8>> = out
            .iter()
            .filter_map(|r| match r {
                Ok(Assembled::Message(m)) => Some(m.clone()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(got, joined);
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn a_message_passes_exactly_when_its_total_fits_the_limit(
        pieces in split_message(),
        limit in 0usize..200,
    ) {
        let total: usize = pieces.iter().map(|(_, f)| f.len()).sum();
        let mut a = FrameAssembler::new(limit);
        let (mut frames, mut expected) = frames_of(&pieces, limit);
        frames.push(frame(Close, true, b""));
        expected.push(Ok(Assembled::Close));
        let out = feed(&mut a, &frames);
        prop_assert_eq!(out.contains(&TOO_LARGE), total > limit);
        prop_assert_eq!(out.iter().any(|r| matches!(r, Ok(Assembled::Message(_)))), total <= limit);
        prop_assert_eq!(out, expected);
    }
}

#[test]
fn a_close_is_checked_for_its_code_and_reason() {
    let close = |payload: &[u8]| FrameAssembler::new(8).handle_frame(Close, true, payload);
    assert_eq!(close(b""), Ok(Assembled::Close));
    assert_eq!(close(b"\x03\xe8bye"), Ok(Assembled::Close));
    assert_eq!(
        close(b"\x0f\xa0"),
        Ok(Assembled::Close),
        "4000 is for applications"
    );
    assert_eq!(close(b"\x03"), Err(AssemblyError::CloseTooShort));
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        let payload = code.to_be_bytes();
        assert_eq!(
            close(&payload),
            Err(AssemblyError::CloseCodeNotAllowed(code)),
            "{code}"
        );
    }
    assert_eq!(
        close(b"\x03\xe8\xff"),
        Err(AssemblyError::CloseReasonNotUtf8)
    );
    assert_eq!(AssemblyError::CloseReasonNotUtf8.close_code(), 1007);
    assert_eq!(AssemblyError::CloseTooShort.close_code(), 1002);
}

#[test]
fn a_bad_close_leaves_an_open_fragment_as_it_was() {
    let mut assembler = FrameAssembler::new(8);
    let out = feed(
        &mut assembler,
        &[
            frame(Text, false, b"ab"),
            frame(Close, true, b"\x03"),
            frame(Continuation, true, b"c"),
        ],
    );
    assert_eq!(
        out,
        vec![
            INCOMPLETE,
            Err(AssemblyError::CloseTooShort),
            message(b"abc")
        ]
    );
}
