//! Fuzz target: a `POST /api/tasks` body through the submission decoder.
//! The body and its properties are `coordinator_bin::fuzzing::submit_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = coordinator_bin::fuzzing::submit_body(data);
});
