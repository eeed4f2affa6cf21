//! Fuzz target: a stored `tasks` row through the row decoder.
//! The body and its properties are `coordinator_bin::fuzzing::task_row`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = coordinator_bin::fuzzing::task_row(data);
});
