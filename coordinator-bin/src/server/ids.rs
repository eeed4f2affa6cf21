//! Task ids made by the server: time-ordered UUIDv7 text.

use coordinator_queue::TaskId;

/// A fresh task id: UUID version 7 text (48-bit millisecond time, then random
/// bits). Time-ordered ids keep the storage index append-mostly.
pub fn new_task_id() -> TaskId {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the operating system provides randomness");
    let now_ms = super::clock::now_ms();
    b[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    TaskId::from(uuid_text(&b))
}

/// The canonical text of a UUID: 32 lower-case hex digits in groups of 8, 4,
/// 4, 4 and 12 joined by `-`, written straight into one string (a task is
/// submitted at a high rate; this used to cost a formatting call per byte).
fn uuid_text(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests;
