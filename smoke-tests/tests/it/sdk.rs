//! The agent SDK (`coordinator_transport::client::agent`) against the real binary: a
//! result whose report is lost with its connection, or with a coordinator killed
//! by SIGKILL, still lands exactly once; cancellation reaches the job; a hub that
//! never answers gives a clear error in bounded time; a refused hub is skipped
//! for the next; `wss://` through a TLS terminator in front of the coordinator.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordinator_transport::client::agent::{
    AgentBuilder, AgentClient, AgentError, Job, ReportError, StateFile,
};
use coordinator_transport::client::{ClientConfig, ClientError, Connection, Stage};
use serde_json::json;
use smoke_tests::harness::{wait_for, Coordinator, TempDir};
use smoke_tests::http::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio::time::timeout;

use crate::agents::{completions, submit, task, task_action, wait_status};

/// How long a test waits for one step it expects.
const STEP: Duration = Duration::from_secs(20);

/// A builder for `agent_id` on `hubs` with short waits and no JSON pings (so
/// that nothing but the test's own traffic crosses the proxy).
fn agent(hubs: &[String], agent_id: &str, token: &str) -> AgentBuilder {
    AgentClient::builder(hubs, agent_id, token)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .identify_timeout(Duration::from_secs(5))
        .ping_interval(None)
        .connect_timeout(STEP)
}

/// The next job, within [`STEP`].
async fn next_job(agent: &mut AgentClient) -> Job {
    timeout(STEP, agent.next())
        .await
        .expect("a job within the step")
        .expect("the agent is running")
}

/// Stops the agent and checks that it ended cleanly.
async fn stop(agent: AgentClient) {
    agent.stop();
    let ended = timeout(STEP, agent.join()).await.expect("the agent ends");
    assert_eq!(ended, Ok(()));
}

/// A TCP proxy in front of the coordinator that the test can cut: it can drop
/// what the agent sends (as a network that loses the report would), sever every
/// connection, and point at another upstream address (a restarted coordinator).
struct Proxy {
    addr: String,
    upstream: Arc<Mutex<String>>,
    swallow: Arc<AtomicBool>,
    swallowed: Arc<AtomicUsize>,
    pipes: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let upstream = Arc::new(Mutex::new(upstream.to_owned()));
        let swallow = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicUsize::new(0));
        let pipes: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let (upstream, swallow, swallowed, pipes) = (
                Arc::clone(&upstream),
                Arc::clone(&swallow),
                Arc::clone(&swallowed),
                Arc::clone(&pipes),
            );
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let target = upstream.lock().unwrap().clone();
                    let (swallow, swallowed) = (Arc::clone(&swallow), Arc::clone(&swallowed));
                    let pipe = tokio::spawn(async move {
                        // A dead upstream: the client sees its connection close.
                        if let Ok(server) = TcpStream::connect(&target).await {
                            pipe(client, server, swallow, swallowed).await;
                        }
                    });
                    pipes.lock().unwrap().push(pipe.abort_handle());
                }
            })
            .abort_handle()
        };
        Proxy {
            addr,
            upstream,
            swallow,
            swallowed,
            pipes,
            accept,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn set_upstream(&self, addr: &str) {
        *self.upstream.lock().unwrap() = addr.to_owned();
    }

    /// From now on, what agents send is dropped (`true`) or carried (`false`).
    fn swallow(&self, on: bool) {
        self.swallow.store(on, Ordering::SeqCst);
    }

    fn swallowed(&self) -> usize {
        self.swallowed.load(Ordering::SeqCst)
    }

    /// Closes every connection through the proxy at once.
    fn sever(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}

/// Copies both ways until either side closes; agent bytes are dropped while
/// `swallow` is set.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    swallow: Arc<AtomicBool>,
    swallowed: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if swallow.load(Ordering::SeqCst) => {
                    swallowed.fetch_add(n, Ordering::SeqCst);
                }
                Ok(n) => {
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Runs a job up to its report, with the report lost on the way: the proxy drops
/// what the agent sends from the moment the job is working until the report has
/// gone out. Returns the task id.
async fn finish_with_the_report_lost(
    admin: &mut Client,
    agent: &mut AgentClient,
    proxy: &Proxy,
    result: serde_json::Value,
) -> String {
    let id = submit(admin, json!({"description": "report me once"})).await;
    let job = next_job(agent).await;
    assert_eq!(job.task_id(), id);
    wait_status(admin, &id, "working", STEP).await;
    proxy.swallow(true);
    job.handle()
        .complete(result)
        .await
        .expect("the outcome is taken");
    wait_for(STEP, "the report to be dropped by the proxy", || async {
        (proxy.swallowed() > 0).then_some(())
    })
    .await;
    assert_eq!(
        task(admin, &id).await["status"],
        "working",
        "the coordinator never saw the report"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_lost_with_its_connection_lands_exactly_once_after_the_reconnect() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let proxy = Proxy::start(&c.addr).await;
    let token = c.agent_token("sdk-cut");
    let mut agent = agent(&[proxy.ws_url()], "sdk-cut", &token)
        .connect()
        .await
        .expect("connects");
    let id =
        finish_with_the_report_lost(&mut admin, &mut agent, &proxy, json!({"answer": 42})).await;
    proxy.swallow(false);
    proxy.sever();
    let done = wait_status(&mut admin, &id, "completed", STEP).await;
    assert_eq!(done["result"], json!({"answer": 42}));
    assert_eq!(completions(&done), 1, "{done}");

    // The agent is free again: the next task comes, and no second job for the
    // first one.
    let next = submit(&mut admin, json!({"description": "next"})).await;
    let job = next_job(&mut agent).await;
    assert_eq!(job.task_id(), next);
    job.handle().complete(json!("ok")).await.expect("taken");
    let second = wait_status(&mut admin, &next, "completed", STEP).await;
    assert_eq!(completions(&second), 1);
    assert_eq!(
        completions(&task(&mut admin, &id).await),
        1,
        "still completed once"
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_lost_with_a_killed_coordinator_lands_exactly_once_after_its_restart() {
    let mut c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let proxy = Proxy::start(&c.addr).await;
    let token = c.agent_token("sdk-kill");
    let mut agent = agent(&[proxy.ws_url()], "sdk-kill", &token)
        .connect()
        .await
        .expect("connects");
    let id = finish_with_the_report_lost(&mut admin, &mut agent, &proxy, json!({"answer": "kept"}))
        .await;
    c.kill(); // SIGKILL, between the job's end and its report
    proxy.sever();
    proxy.swallow(false);
    c.restart(); // same database, another port
    proxy.set_upstream(&c.addr);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let done = wait_status(&mut admin, &id, "completed", STEP).await;
    assert_eq!(done["result"], json!({"answer": "kept"}));
    assert_eq!(completions(&done), 1, "{done}");
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_outcome_survives_a_restart_of_the_agent_through_its_state_file() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let dir = TempDir::new("sdk-state");
    let state = dir.path().join("state.json");
    let token = c.agent_token("sdk-state");
    // The first program reaches the coordinator only through this proxy; closing
    // the proxy for good cuts it off as if it had died.
    let doomed = Proxy::start(&c.addr).await;
    let mut first = agent(&[doomed.ws_url()], "sdk-state", &token)
        .state_hook(StateFile::new(&state))
        .connect()
        .await
        .expect("connects");
    let id = finish_with_the_report_lost(&mut admin, &mut first, &doomed, json!(7)).await;
    drop(doomed);
    let held = StateFile::new(&state).read().expect("readable");
    assert_eq!(held.as_ref().map(|t| t.task_id.as_str()), Some(id.as_str()));
    assert!(
        held.is_some_and(|t| t.outcome.is_some()),
        "the outcome is kept"
    );

    // A new program on the same state file reports it.
    let mut second = agent(&[c.ws_url()], "sdk-state", &token)
        .state_hook(StateFile::new(&state))
        .connect()
        .await
        .expect("connects again");
    let done = wait_status(&mut admin, &id, "completed", STEP).await;
    assert_eq!(done["result"], json!(7));
    assert_eq!(completions(&done), 1, "{done}");
    wait_for(STEP, "the state file to be cleared", || async {
        StateFile::new(&state)
            .read()
            .ok()
            .filter(Option::is_none)
            .map(|_| ())
    })
    .await;
    // No job was handed out again for it: the next one is a new task.
    let next = submit(&mut admin, json!({"description": "next"})).await;
    let job = next_job(&mut second).await;
    assert_eq!(job.task_id(), next);
    assert!(!job.is_restored());
    job.handle().complete(json!(8)).await.expect("taken");
    wait_status(&mut admin, &next, "completed", STEP).await;
    stop(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_task_fires_its_jobs_token_and_refuses_its_late_outcome() {
    let c = Coordinator::start(&["--cancel-grace-ms", "60000"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("sdk-cancel");
    let mut agent = agent(&[c.ws_url()], "sdk-cancel", &token)
        .connect()
        .await
        .expect("connects");
    let id = submit(&mut admin, json!({"description": "long"})).await;
    let job = next_job(&mut agent).await;
    wait_status(&mut admin, &id, "working", STEP).await;
    assert!(!job.is_cancelled());
    assert_eq!(task_action(&mut admin, &id, "cancel").await, 200);
    timeout(STEP, job.cancelled())
        .await
        .expect("the cancellation reaches the job");
    assert!(job.cancel_token().is_cancelled());
    assert_eq!(
        job.handle().complete(json!("too late")).await,
        Err(ReportError::Cancelled)
    );
    drop(job);
    let cancelled = task(&mut admin, &id).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["result"], serde_json::Value::Null);
    // Free for the next task at once: the agent said it let go of the cancelled
    // one, so the coordinator does not wait for the cancel grace (60 s here).
    let next = submit(&mut admin, json!({"description": "next"})).await;
    let job = next_job(&mut agent).await;
    assert_eq!(job.task_id(), next);
    job.handle().complete(json!(1)).await.expect("taken");
    wait_status(&mut admin, &next, "completed", STEP).await;
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_never_answers_gives_a_clear_error_not_a_hang() {
    // Accepts connections and says nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("address"));
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = ClientConfig::new(&url, "mute", "token");
    config.identify_timeout = Duration::from_millis(300);
    let error = timeout(STEP, Connection::connect(&config))
        .await
        .expect("the attempt ends by itself")
        .expect_err("nobody answered");
    assert!(
        matches!(
            error,
            ClientError::Timeout {
                stage: Stage::Handshake,
                after_ms: 300
            }
        ),
        "{error}"
    );

    let error = timeout(
        STEP,
        AgentClient::builder([url.as_str()], "mute", "token")
            .identify_timeout(Duration::from_millis(300))
            .backoff(Duration::from_millis(50), Duration::from_millis(100))
            .connect_timeout(Duration::from_millis(1_500))
            .connect(),
    )
    .await
    .expect("connect gives up by itself")
    .expect_err("nobody answered");
    let text = error.to_string();
    let AgentError::Unreachable { after_ms, failures } = error else {
        panic!("not unreachable: {text}");
    };
    assert_eq!(after_ms, 1_500);
    assert_eq!(failures.len(), 1, "{text}");
    assert_eq!(failures[0].hub, url);
    assert!(
        text.contains(&url) && text.contains("within 300 ms"),
        "the error names the hub and the timeout: {text}"
    );
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_first_hub_is_skipped_for_the_next() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let refusing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("ws://{}/ws", listener.local_addr().expect("address"))
    }; // closed: connections to it are refused
    let token = c.agent_token("sdk-two");
    let mut agent = agent(&[refusing, c.ws_url()], "sdk-two", &token)
        .connect()
        .await
        .expect("the second hub answers");
    assert_eq!(agent.connected_hub(), Some(c.ws_url()));
    let id = submit(&mut admin, json!({"description": "either hub"})).await;
    let job = next_job(&mut agent).await;
    assert_eq!(job.task_id(), id);
    job.handle().complete(json!("done")).await.expect("taken");
    let done = wait_status(&mut admin, &id, "completed", STEP).await;
    assert_eq!(completions(&done), 1);
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_ends_connect_at_once() {
    let c = Coordinator::start(&[]);
    let error = timeout(
        STEP,
        AgentClient::builder([c.ws_url()], "sdk-nobody", "not-a-token").connect(),
    )
    .await
    .expect("a refusal is final")
    .expect_err("refused");
    assert!(
        matches!(&error, AgentError::Refused { hub, .. } if *hub == c.ws_url()),
        "{error}"
    );
}

/// A TLS terminator on `localhost` in front of `upstream`, with a certificate
/// issued by a throwaway CA; returns its port and the CA's certificate (DER).
async fn tls_terminator(upstream: String) -> (u16, Vec<u8>, AbortHandle) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, ca.der().to_vec(), server.abort_handle())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_a_tls_terminator_works_with_the_ca_trusted_and_fails_clearly_without() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let (port, ca, terminator) = tls_terminator(c.addr.clone()).await;
    let url = format!("wss://localhost:{port}/ws");
    let token = c.agent_token("sdk-tls");

    let error = agent(std::slice::from_ref(&url), "sdk-tls", &token)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("an untrusted certificate");
    let text = error.to_string();
    assert!(
        text.contains("TLS handshake with localhost failed") && text.contains(&url),
        "{text}"
    );

    let mut agent = agent(&[url], "sdk-tls", &token)
        .add_root_certificate(ca)
        .connect()
        .await
        .expect("connects over TLS");
    let id = submit(&mut admin, json!({"description": "over tls"})).await;
    let job = next_job(&mut agent).await;
    assert_eq!(job.task_id(), id);
    job.handle()
        .complete(json!({"secure": true}))
        .await
        .expect("taken");
    let done = wait_status(&mut admin, &id, "completed", STEP).await;
    assert_eq!(done["result"], json!({"secure": true}));
    stop(agent).await;
    terminator.abort();
}
