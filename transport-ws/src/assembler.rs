//! Turns the frames of one WebSocket into whole text messages: fragments, the size
//! limit of a message, control frames and refused binary messages. Performs no I/O.

/// The kind of a frame, as far as assembling messages is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// The first frame of a text message.
    Text,
    /// The first frame of a binary message.
    Binary,
    /// A later frame of a fragmented message.
    Continuation,
    /// A ping (control frame).
    Ping,
    /// A pong (control frame).
    Pong,
    /// A close (control frame).
    Close,
}

/// What one frame means, returned by [`FrameAssembler::handle_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Assembled {
    /// A whole text message: its bytes, not yet checked as UTF-8 or JSON.
    Message(Vec<u8>),
    /// A fragment of a text message was stored; the message is not complete yet.
    Incomplete,
    /// Nothing to do: a ping or pong, a later fragment of a refused binary message,
    /// or any frame but a close after [`Assembled::TooLarge`].
    Ignored,
    /// A binary message started: refuse it. Its later fragments are
    /// [`Assembled::Ignored`].
    Binary,
    /// The message went over the limit and was dropped: close the connection with
    /// 1009. From now on every frame but a close is [`Assembled::Ignored`].
    TooLarge,
    /// The peer closed the connection with a well-formed close frame (empty, or
    /// an allowed code and a UTF-8 reason): echo it and end.
    Close,
}

/// A frame that breaks the fragmentation rules of RFC 6455 (section 5.4); the
/// connection should be failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssemblyError {
    /// A continuation frame came while no fragmented message was open.
    #[error("continuation frame without a message")]
    ContinuationWithoutMessage,
    /// A text or binary frame came while a fragmented message was still open.
    #[error("a new message started inside a fragmented one")]
    MessageInsideFragmented,
    /// A close frame with a one-byte payload (a code takes two).
    #[error("close frame with a one-byte payload")]
    CloseTooShort,
    /// A close frame with a code that no endpoint may send (RFC 6455 section 7.4).
    #[error("close code {0} may not be sent")]
    CloseCodeNotAllowed(u16),
    /// A close frame whose reason is not UTF-8.
    #[error("close reason is not UTF-8")]
    CloseReasonNotUtf8,
}

impl AssemblyError {
    /// The close code to fail the connection with: 1007 for a reason that is not
    /// UTF-8, 1002 (protocol error) for everything else.
    pub fn close_code(self) -> u16 {
        match self {
            AssemblyError::CloseReasonNotUtf8 => 1007,
            _ => 1002,
        }
    }
}

/// Checks the payload of a peer's close frame: empty, or a code an endpoint may
/// send followed by a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), AssemblyError> {
    let (code, reason) = match payload {
        [] => return Ok(()),
        [_] => return Err(AssemblyError::CloseTooShort),
        [high, low, reason @ ..] => (u16::from_be_bytes([*high, *low]), reason),
    };
    // 1004-1006 and 1015 are reserved or never sent on the wire; 1000-2999 is
    // otherwise the protocol's range, of which only these are defined.
    let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !allowed {
        return Err(AssemblyError::CloseCodeNotAllowed(code));
    }
    std::str::from_utf8(reason).map_err(|_| AssemblyError::CloseReasonNotUtf8)?;
    Ok(())
}

/// Where the assembler is between two frames.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Between messages.
    Idle,
    /// Inside a fragmented text message: its bytes so far.
    Text(Vec<u8>),
    /// Inside a fragmented binary message, already refused.
    Binary,
    /// A message went over the limit; waiting for the peer's close.
    Overflowed,
}

/// Assembles the frames of one connection into text messages of at most
/// `max_message_bytes` bytes, whether they come in one frame or in many.
///
/// Feed every frame read from the socket, in order, to
/// [`handle_frame`](Self::handle_frame) and act on what it returns:
/// [`Assembled::Message`] is handed on, [`Assembled::Binary`] is answered with an
/// error frame, [`Assembled::TooLarge`] closes the connection with 1009 (then wait,
/// bounded, for the peer's [`Assembled::Close`]), and an [`AssemblyError`] fails the
/// connection. The limit counts the whole message, across all its fragments;
/// a message of exactly `max_message_bytes` bytes is accepted. An error changes
/// nothing.
///
/// ```
/// use coordinator_transport::assembler::{Assembled, FrameAssembler, FrameKind};
///
/// let mut assembler = FrameAssembler::new(16);
/// assert_eq!(assembler.handle_frame(FrameKind::Text, false, b"{\"type\":"), Ok(Assembled::Incomplete));
/// assert_eq!(assembler.handle_frame(FrameKind::Ping, true, b""), Ok(Assembled::Ignored));
/// assert_eq!(
///     assembler.handle_frame(FrameKind::Continuation, true, b"\"ping\"}"),
///     Ok(Assembled::Message(b"{\"type\":\"ping\"}".to_vec()))
/// );
/// assert_eq!(assembler.handle_frame(FrameKind::Text, true, &[b' '; 17]), Ok(Assembled::TooLarge));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAssembler {
    max_message_bytes: usize,
    state: State,
}

impl FrameAssembler {
    /// An assembler accepting messages of up to `max_message_bytes` bytes.
    pub fn new(max_message_bytes: usize) -> Self {
        FrameAssembler {
            max_message_bytes,
            state: State::Idle,
        }
    }

    /// The largest message accepted, in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Takes the next frame of the connection: its kind, its FIN bit and its
    /// (unmasked) payload. Control frames may come between fragments.
    pub fn handle_frame(
        &mut self,
        kind: FrameKind,
        fin: bool,
        payload: &[u8],
    ) -> Result<Assembled, AssemblyError> {
        match kind {
            FrameKind::Close => return check_close(payload).map(|()| Assembled::Close),
            FrameKind::Ping | FrameKind::Pong => return Ok(Assembled::Ignored),
            FrameKind::Text | FrameKind::Binary | FrameKind::Continuation => {}
        }
        match (&mut self.state, kind) {
            (State::Overflowed, _) => Ok(Assembled::Ignored),
            (State::Idle, FrameKind::Binary) => {
                if !fin {
                    self.state = State::Binary;
                }
                Ok(Assembled::Binary)
            }
            (State::Idle, FrameKind::Text) => {
                if payload.len() > self.max_message_bytes {
                    self.state = State::Overflowed;
                    Ok(Assembled::TooLarge)
                } else if fin {
                    Ok(Assembled::Message(payload.to_vec()))
                } else {
                    self.state = State::Text(payload.to_vec());
                    Ok(Assembled::Incomplete)
                }
            }
            (State::Idle, _) => Err(AssemblyError::ContinuationWithoutMessage),
            (State::Text(_) | State::Binary, FrameKind::Text | FrameKind::Binary) => {
                Err(AssemblyError::MessageInsideFragmented)
            }
            (State::Binary, _) => {
                if fin {
                    self.state = State::Idle;
                }
                Ok(Assembled::Ignored)
            }
            (State::Text(buffer), _) => {
                if buffer.len().saturating_add(payload.len()) > self.max_message_bytes {
                    self.state = State::Overflowed;
                    return Ok(Assembled::TooLarge);
                }
                buffer.extend_from_slice(payload);
                if !fin {
                    return Ok(Assembled::Incomplete);
                }
                let message = std::mem::take(buffer);
                self.state = State::Idle;
                Ok(Assembled::Message(message))
            }
        }
    }
}

#[cfg(test)]
mod tests;
