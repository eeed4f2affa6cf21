//! Task ids made by the server: time-ordered UUIDv7 text.

use coordinator_queue::TaskId;

/// A fresh task id: UUID version 7 text (48-bit millisecond time, then random
/// bits). Time-ordered ids keep the storage index append-mostly.
pub fn new_task_id() -> TaskId {
    let mut b = [0u8; 16];
    random_bytes(&mut b[6..]);
    let now_ms = super::clock::now_ms();
    b[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    TaskId::new(uuid_text(&b))
}

/// Bytes of the operating system's randomness a thread asks for at once: the
/// random part of 409 ids, one system call instead of one per id.
const POOL_BYTES: usize = 4096;

/// A thread's unused randomness, taken from the front.
struct RandomPool {
    bytes: Box<[u8; POOL_BYTES]>,
    taken: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<RandomPool> = std::cell::RefCell::new(RandomPool {
        bytes: Box::new([0; POOL_BYTES]),
        taken: POOL_BYTES,
    });
}

/// Fills `out` (at most [`POOL_BYTES`]) with the operating system's
/// randomness, each byte handed out once.
fn random_bytes(out: &mut [u8]) {
    POOL.with_borrow_mut(|pool| {
        if pool.taken + out.len() > POOL_BYTES {
            getrandom::getrandom(&mut pool.bytes[..])
                .expect("the operating system provides randomness");
            pool.taken = 0;
        }
        out.copy_from_slice(&pool.bytes[pool.taken..pool.taken + out.len()]);
        pool.taken += out.len();
    });
}

/// The canonical text of a UUID, built on the stack and copied once into the
/// id's shared string.
fn uuid_text(bytes: &[u8; 16]) -> std::sync::Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    std::str::from_utf8(&text)
        .expect("hex digits and dashes are ASCII")
        .into()
}

#[cfg(test)]
mod tests;
