//! Fuzz target: a task list query string through the filter decoder.
//! The body and its properties are `coordinator_bin::fuzzing::list_query`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = coordinator_bin::fuzzing::list_query(data);
});
