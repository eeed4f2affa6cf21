//! Tests of the agent client: the `identify` frame it sends, with and without the
//! task it holds, as seen by a WebSocket server on a real socket.

use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// Serves one WebSocket connection on a free port: hands the first frame it gets
/// to the returned receiver, answers `identified`, then waits for the close.
async fn one_socket_server() -> (String, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("address"));
    let (first_tx, first_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let service = service_fn(move |mut request| {
            let first_tx = first_tx.clone();
            async move {
                let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut request)?;
                tokio::spawn(async move {
                    let Ok(mut ws) = upgrade.await else { return };
                    let Ok(frame) = ws.read_frame().await else {
                        return;
                    };
                    assert_eq!(frame.opcode, OpCode::Text);
                    let _ = first_tx.send(frame.payload.to_vec()).await;
                    let identified = br#"{"type":"identified","agent_id":"a1"}"#;
                    let _ = ws
                        .write_frame(Frame::text(Payload::Borrowed(identified)))
                        .await;
                    // Until the client goes away.
                    while ws
                        .read_frame()
                        .await
                        .is_ok_and(|f| f.opcode != OpCode::Close)
                    {}
                });
                Ok::<_, WebSocketError>(response)
            }
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades()
            .await;
    });
    (url, first_rx)
}

/// Connects with `config` to a fresh server; the identify frame it sent, as JSON.
async fn identify_frame(mut config: ClientConfig) -> Value {
    let (url, mut first) = one_socket_server().await;
    config.url = url;
    let connection = timeout(WAIT, Connection::connect(&config))
        .await
        .expect("connected in time")
        .expect("connected");
    let frame = timeout(WAIT, first.recv())
        .await
        .expect("the server saw a frame in time")
        .expect("the server saw a frame");
    drop(connection);
    serde_json::from_slice(&frame).expect("the identify frame is JSON")
}

fn config() -> ClientConfig {
    let mut config = ClientConfig::new("ws://unused:1/ws", "a1", "secret");
    config.capabilities = vec!["gpu".into()];
    config.ping_interval = None;
    config
}

#[tokio::test]
async fn identify_names_the_held_task_when_one_is_given() {
    let mut config = config();
    config.current_task = Some(CurrentTask {
        task_id: "t1".into(),
        generation: 3,
    });
    assert_eq!(
        identify_frame(config).await,
        json!({
            "type": "identify",
            "agent_id": "a1",
            "token": "secret",
            "capabilities": ["gpu"],
            "status": "idle",
            "client_type": "transport-ws",
            "current_task": {"task_id": "t1", "generation": 3},
        })
    );
}

#[tokio::test]
async fn identify_leaves_current_task_out_when_none_is_held() {
    let mut config = config();
    config.name = Some("box".into());
    assert_eq!(
        identify_frame(config).await,
        json!({
            "type": "identify",
            "agent_id": "a1",
            "token": "secret",
            "name": "box",
            "capabilities": ["gpu"],
            "status": "idle",
            "client_type": "transport-ws",
        })
    );
}

#[test]
fn identify_is_built_from_the_config() {
    let mut config = config();
    assert!(matches!(
        config.identify(),
        AgentMessage::Identify {
            current_task: None,
            ..
        }
    ));
    let held = CurrentTask {
        task_id: "t9".into(),
        generation: 12,
    };
    config.current_task = Some(held.clone());
    let AgentMessage::Identify {
        agent_id,
        token,
        current_task,
        ..
    } = config.identify()
    else {
        panic!("not an identify");
    };
    assert_eq!(
        (agent_id.as_str(), token.as_str(), current_task),
        ("a1", "secret", Some(held))
    );
}
