//! Tests of the agent SDK against a scripted WebSocket server on a real socket.
