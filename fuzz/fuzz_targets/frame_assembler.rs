//! Fuzz target: a sequence of WebSocket frames through the frame assembler.
//! The body and its properties are `coordinator_bin::fuzzing::frame_assembler`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = coordinator_bin::fuzzing::frame_assembler(data);
});
