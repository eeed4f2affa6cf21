//! Files and logs as an attacker on the same host sees them: the admin token
//! file and the database are private, a symbolic link or an open token file is
//! refused, the process lock comes before any migration, peer-supplied strings
//! are escaped in the log, and unknown tokens do not reload the token table.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use smoke_tests::harness::{coordinator_binary, wait_for, Coordinator, RawSocket, TempDir};
use smoke_tests::http::Client;

/// How long a coordinator expected to refuse to start may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A `coordinator serve` started by hand, its stderr in a file; killed on drop.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    /// Starts `coordinator serve --db DB` on a free port with `RUST_LOG=info` and
    /// no `NO_COLOR`: stderr is a file, not a terminal.
    fn start(db: &Path, log: &Path) -> Serve {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(coordinator_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the coordinator");
        Serve {
            child,
            log: log.to_owned(),
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the process exits; `None` if it is still running after
    /// [`EXIT_TIMEOUT`] (it is killed then).
    fn wait_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address from the `coordinator serving listen=ADDR` line (read
    /// through colour codes, should there be any).
    async fn addr(&self) -> String {
        wait_for(
            Duration::from_secs(20),
            "the coordinator serving line",
            || {
                let log = strip_colours(&self.log());
                async move {
                    let line = log.lines().find(|l| l.contains("coordinator serving"))?;
                    let rest = &line[line.find("listen=")? + "listen=".len()..];
                    Some(rest.split_whitespace().next()?.to_owned())
                }
            },
        )
        .await
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` without `ESC [ ... m` sequences.
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\u{1b}[") {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Runs `coordinator serve` over `db` expecting it to refuse to start; returns
/// its log.
fn refused_start(db: &Path, dir: &Path, why: &str) -> String {
    let mut serve = Serve::start(db, &dir.join("refused.log"));
    let status = serve.wait_exit();
    let log = serve.log();
    let status = status.unwrap_or_else(|| panic!("the coordinator started despite {why}:\n{log}"));
    assert!(
        !status.success(),
        "exit status {status} despite {why}:\n{log}"
    );
    log
}

#[test]
fn the_admin_token_file_and_the_database_files_are_private() {
    let c = Coordinator::start(&[]);
    let token_file = with_suffix(&c.db, ".admin-token");
    assert_eq!(mode(&token_file), 0o600, "admin token file");
    for suffix in ["", "-wal", "-shm"] {
        let file = with_suffix(&c.db, suffix);
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn a_symbolic_link_at_the_admin_token_path_is_refused_and_not_followed() {
    let dir = TempDir::new("files-symlink");
    let db = dir.path().join("c.db");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&victim, with_suffix(&db, ".admin-token")).unwrap();
    let log = refused_start(&db, dir.path(), "a symbolic link at the admin token path");
    assert!(log.contains("symbolic link"), "unclear message:\n{log}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
}

#[test]
fn an_admin_token_file_readable_by_others_is_refused_with_a_clear_message() {
    let mut c = Coordinator::start(&[]);
    c.kill();
    let token_file = with_suffix(&c.db, ".admin-token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = c.db.parent().unwrap().to_owned();
    let log = refused_start(&c.db, &dir, "a world-readable admin token file");
    assert!(
        log.contains("group or others can read it") && log.contains("chmod 600"),
        "unclear message:\n{log}"
    );
    assert_eq!(mode(&token_file), 0o644, "left as the operator made it");
}

#[test]
fn the_process_lock_is_taken_before_any_migration() {
    let dir = TempDir::new("files-lock");
    let db = dir.path().join("c.db");
    let held = std::fs::File::create(&db).unwrap();
    held.try_lock().expect("the test takes the lock first");
    let log = refused_start(&db, dir.path(), "another process holding the lock");
    assert!(
        log.contains("in use by another coordinator"),
        "unclear message:\n{log}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "the database was written without the lock"
    );
    assert!(!with_suffix(&db, ".admin-token").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_supplied_agent_ids_are_escaped_and_a_log_file_has_no_colour_codes() {
    let dir = TempDir::new("files-log");
    let db = dir.path().join("c.db");
    let serve = Serve::start(&db, &dir.path().join("serve.log"));
    let addr = serve.addr().await;
    let admin_token = std::fs::read_to_string(with_suffix(&db, ".admin-token")).unwrap();
    let mut admin = Client::new(&addr, Some(admin_token.trim()));

    let agent_id = "evil\u{1b}[31m\nFORGED line";
    let r = admin
        .post("/api/admin/tokens", &json!({"agent_id": agent_id}))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    let mut socket = RawSocket::connect(&addr).await;
    let identify = json!({"type": "identify", "agent_id": agent_id, "token": token});
    socket.send_frame(1, identify.to_string().as_bytes()).await;
    wait_for(Duration::from_secs(10), "the agent identified line", || {
        let log = serve.log();
        async move { log.contains("agent identified").then_some(()) }
    })
    .await;

    let bytes = std::fs::read(&serve.log).unwrap();
    let log = String::from_utf8_lossy(&bytes);
    assert!(
        !bytes.contains(&0x1b),
        "escape bytes in a log that is not a terminal:\n{log:?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a peer forged a log line:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("agent identified"))
        .unwrap();
    assert!(
        line.contains(r#"agent_id="evil\u{1b}[31m\nFORGED line""#),
        "agent id not escaped: {line}"
    );
}

/// The `coordinator_token_table_loads_total` counter.
async fn token_table_loads(client: &mut Client) -> u64 {
    let r = client.get("/metrics").await.unwrap();
    let text = r.body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("coordinator_token_table_loads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no token table load count in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_cause_no_token_table_reload_storm() {
    let c = Coordinator::start(&[]);
    let mut public = Client::new(&c.addr, None);
    let before = token_table_loads(&mut public).await;
    let started = Instant::now();
    let same = "cdt_0000000000000000000000000000000000000000000000ff".to_owned();
    for n in 0..300u32 {
        for token in [format!("cdt_{n:048x}"), same.clone()] {
            let r = Client::new(&c.addr, Some(&token))
                .get("/api/tasks")
                .await
                .unwrap();
            assert_eq!(r.status, 401);
        }
    }
    let loads = token_table_loads(&mut public).await - before;
    // At most a burst of 4, then one a second (an expired copy may add one).
    let bound = 4 + started.elapsed().as_secs() + 2;
    assert!(
        loads <= bound,
        "{loads} token table reads for 600 unknown tokens (bound {bound})"
    );

    // A token created with the CLI right after the flood works within a moment.
    let token = c.agent_token("after-flood");
    wait_for(Duration::from_secs(10), "the new token to work", || {
        let mut agent = Client::new(&c.addr, Some(&token));
        async move { (agent.get("/api/tasks").await.ok()?.status == 200).then_some(()) }
    })
    .await;
}
