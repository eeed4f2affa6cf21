//! Fuzz target: an agent's text frame through the protocol decoder.
//! The body and its properties are `coordinator_bin::fuzzing::agent_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = coordinator_bin::fuzzing::agent_message(data);
});
