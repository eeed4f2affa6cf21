//! Fuzz target: a `POST /api/tasks/batch` body through the batch decoder.
//! The body and its properties are `coordinator_bin::fuzzing::batch_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = coordinator_bin::fuzzing::batch_body(data);
});
