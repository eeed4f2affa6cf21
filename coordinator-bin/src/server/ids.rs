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
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    TaskId::from(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}
