//! Fuzz target: the bytes of an agent's WebSocket through the socket reader.
//! The body and its properties are `coordinator_bin::fuzzing::socket_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = coordinator_bin::fuzzing::socket_stream(data);
});
