//! The coordinator's own decisions as a pure state machine (no I/O).
