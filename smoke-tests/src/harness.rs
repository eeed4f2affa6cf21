//! Starting and stopping a real coordinator process.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// How long a starting coordinator may take to report the address it listens on.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many of the last log lines a failure message shows.
const LOG_TAIL_LINES: usize = 40;

/// The tracing target of the line `coordinator serving listen=ADDR`
/// (`coordinator-bin/src/server/serve.rs`); the harness always lets it through.
const SERVING_LOG_TARGET: &str = "coordinator_bin::server::serve";

/// The directory of the running executable's build profile: `target/<profile>`
/// for both `target/<profile>/deps/it-xxxx` (a test) and `target/<profile>/loadgen`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own binary path");
    let mut dir = exe.parent().expect("binary in a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("profile dir").to_path_buf();
    }
    dir
}

/// A directory for files tests leave behind for people to look at (screenshots),
/// `test-artefacts/` in the target directory of the running test binary; created
/// if missing. Found from the executable's path, so it is right whatever
/// `CARGO_TARGET_DIR` says.
pub fn artefact_dir() -> PathBuf {
    let profile = profile_dir();
    let dir = profile.parent().unwrap_or(&profile).join("test-artefacts");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// The release `coordinator` binary, built once per test run if needed.
pub fn coordinator_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let profile_dir = profile_dir();
            let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            // Cargo gives a test process its package's variables; some build
            // scripts (ring's) watch them, so a nested build that inherits them
            // would count as changed and rebuild the graph, and so would the next
            // build from a shell.
            for (key, _) in std::env::vars_os() {
                let inherited_from_cargo = key.to_str().is_some_and(|key| {
                    key.starts_with("CARGO_PKG_")
                        || key.starts_with("CARGO_MANIFEST_")
                        || key.starts_with("CARGO_BIN_")
                        || matches!(
                            key,
                            "CARGO_CRATE_NAME"
                                | "CARGO_PRIMARY_PACKAGE"
                                | "CARGO_TARGET_TMPDIR"
                                | "OUT_DIR"
                        )
                });
                if inherited_from_cargo {
                    build.env_remove(key);
                }
            }
            let status = build
                .args([
                    "build",
                    "--release",
                    "-p",
                    "coordinator-bin",
                    "--bin",
                    "coordinator",
                    "--quiet",
                ])
                .env("CARGO_TARGET_DIR", &target_dir)
                .status()
                .expect("can run cargo to build the coordinator");
            assert!(status.success(), "building the coordinator failed");
            let binary = target_dir.join("release").join("coordinator");
            assert!(
                binary.exists(),
                "no coordinator binary at {}",
                binary.display()
            );
            binary
        })
        .clone()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates one under the system temp directory.
    pub fn new(prefix: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{nanos:x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed when dropped, with the thread (if any) that
/// reads its stderr.
#[derive(Default)]
struct Process {
    child: Option<Child>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Process {
    /// Waits for the stderr reader to reach the end of the stream, which it does
    /// once the process has exited.
    fn join_reader(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_reader();
    }

    /// The exit status once the process has ended (it is reaped here).
    fn wait(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.take()?.wait().ok();
        self.join_reader();
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log, kept in memory for failure messages.
#[derive(Clone, Default)]
struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().map(|l| format!("  {l}\n")).collect()
    }
}

/// Removes terminal colour sequences (`ESC [ ... letter`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a log line of `coordinator serve` says about its address: `None` if the
/// line is not the `coordinator serving` line, `Some(Err(line))` if it is but the
/// address cannot be read from it. Reads the text format (`listen=ADDR`) and the
/// JSON one (`"listen":"ADDR"`), with or without colours.
fn serving_address(line: &str) -> Option<Result<SocketAddr, String>> {
    let line = strip_ansi(line);
    if !line.contains("coordinator serving") {
        return None;
    }
    let value = ["listen=", "\"listen\":\""].iter().find_map(|key| {
        let start = line.find(key)? + key.len();
        let rest = &line[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .unwrap_or(rest.len());
        Some(&rest[..end])
    });
    Some(
        value
            .and_then(|v| v.parse::<SocketAddr>().ok())
            .ok_or_else(|| line.clone()),
    )
}

/// Reads the coordinator's stderr line by line until it ends: appends every line
/// to `log` and `tail`, and sends the address from the `coordinator serving` line
/// on `address` (once).
fn read_coordinator_stderr(
    stderr: ChildStderr,
    mut log: std::fs::File,
    tail: LogTail,
    address: mpsc::Sender<Result<SocketAddr, String>>,
) {
    let mut address = Some(address);
    let mut reader = BufReader::new(stderr);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = log.write_all(&bytes);
        let line = String::from_utf8_lossy(&bytes).trim_end().to_owned();
        if let Some(found) = address.as_ref().and_then(|_| serving_address(&line)) {
            if let Some(sender) = address.take() {
                let _ = sender.send(found);
            }
        }
        tail.push(line);
    }
}

/// The `RUST_LOG` filter for a coordinator under test: `COORDINATOR_TEST_LOG`
/// (default `warn`), plus `info` for the line that reports the listening address
/// unless that filter already names its target.
fn coordinator_log_filter() -> String {
    let base = std::env::var("COORDINATOR_TEST_LOG").unwrap_or_else(|_| "warn".into());
    if base.contains(SERVING_LOG_TARGET) {
        base
    } else {
        format!("{base},{SERVING_LOG_TARGET}=info")
    }
}

/// Where a coordinator under test keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's temporary folder (the default).
    Sqlite,
    /// A fresh database on the test PostgreSQL server ([`crate::postgres`]).
    Postgres,
}

/// A running coordinator process with its own database.
pub struct Coordinator {
    child: Process,
    binary: PathBuf,
    /// `127.0.0.1:PORT`, as the process reported it; changes on [`Coordinator::restart`].
    pub addr: String,
    /// The `--db` value: the database file, or a PostgreSQL URL.
    pub db: PathBuf,
    /// Which store [`Coordinator::db`] names.
    pub backend: Backend,
    /// The admin token.
    pub admin_token: String,
    extra_args: Vec<String>,
    tail: LogTail,
    /// The temporary folder of the log (and of the database file and admin
    /// token file of a SQLite store).
    dir: PathBuf,
    _dir: Option<TempDir>,
}

impl Coordinator {
    /// Starts the release coordinator (built if needed, see [`coordinator_binary`])
    /// on a port the system chooses, with a temporary database and the given extra
    /// `serve` flags (for example shortened timers).
    pub fn start(extra_args: &[&str]) -> Coordinator {
        Coordinator::start_binary(&coordinator_binary(), extra_args)
    }

    /// Like [`Coordinator::start`], on a fresh database of `backend`.
    pub fn start_on(backend: Backend, extra_args: &[&str]) -> Coordinator {
        Coordinator::start_binary_on(&coordinator_binary(), backend, extra_args)
    }

    /// Like [`Coordinator::start`] with the given `coordinator` binary.
    pub fn start_binary(binary: &Path, extra_args: &[&str]) -> Coordinator {
        Coordinator::start_binary_on(binary, Backend::Sqlite, extra_args)
    }

    /// Like [`Coordinator::start_on`] with the given `coordinator` binary.
    pub fn start_binary_on(binary: &Path, backend: Backend, extra_args: &[&str]) -> Coordinator {
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PathBuf::from(crate::postgres::new_database())),
        };
        Coordinator::start_with(binary, backend, db, extra_args)
    }

    /// The first coordinator on the PostgreSQL database `url` (of a
    /// [`crate::postgres::Cluster`] of the test's own, say); returns once it
    /// leads.
    pub fn start_on_database(url: &str, extra_args: &[&str]) -> Coordinator {
        Coordinator::start_with(
            &coordinator_binary(),
            Backend::Postgres,
            Some(PathBuf::from(url)),
            extra_args,
        )
    }

    fn start_with(
        binary: &Path,
        backend: Backend,
        db: Option<PathBuf>,
        extra_args: &[&str],
    ) -> Coordinator {
        let dir = TempDir::new("coordinator-test");
        let db = db.unwrap_or_else(|| dir.path().join("coordinator.db"));
        let mut c = Coordinator {
            child: Process::default(),
            binary: binary.to_path_buf(),
            addr: String::new(),
            db,
            backend,
            admin_token: String::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tail: LogTail::default(),
            dir: dir.path().to_path_buf(),
            _dir: Some(dir),
        };
        c.spawn("127.0.0.1:0");
        if backend == Backend::Postgres {
            // Alone on its database, it takes the lease at its first look.
            c.wait_until_leader();
        }
        c
    }

    /// Waits (bounded) until `/health` says this coordinator leads.
    pub fn wait_until_leader(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if health_role(&self.addr).as_deref() == Some("leader") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the coordinator did not become the leader within {START_TIMEOUT:?}; log tail:\n{}",
                self.tail.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Another coordinator on the database of `other` (PostgreSQL: it starts
    /// as a standby while `other` leads), with the same admin token and
    /// binary, its own log, and `extra_args`.
    pub fn start_beside(other: &Coordinator, extra_args: &[&str]) -> Coordinator {
        let dir = TempDir::new("coordinator-test");
        let mut c = Coordinator {
            child: Process::default(),
            binary: other.binary.clone(),
            addr: String::new(),
            db: other.db.clone(),
            backend: other.backend,
            admin_token: String::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tail: LogTail::default(),
            dir: dir.path().to_path_buf(),
            _dir: Some(dir),
        };
        std::fs::copy(other.admin_token_file(), c.admin_token_file())
            .expect("copy the admin token");
        c.spawn("127.0.0.1:0");
        c
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("coordinator.log.txt")
    }

    /// The admin token file: beside a SQLite file (its default), or given
    /// with `--admin-token-file` for PostgreSQL.
    fn admin_token_file(&self) -> PathBuf {
        match self.backend {
            Backend::Sqlite => {
                let mut p = self.db.clone().into_os_string();
                p.push(".admin-token");
                PathBuf::from(p)
            }
            Backend::Postgres => self.dir.join("admin-token"),
        }
    }

    /// Starts `coordinator serve --listen LISTEN` and waits until it reports the
    /// address it bound.
    fn spawn(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .args(["--listen", listen, "--db"])
            .arg(&self.db)
            .args(match self.backend {
                Backend::Sqlite => Vec::new(),
                Backend::Postgres => vec![
                    OsString::from("--admin-token-file"),
                    self.admin_token_file().into_os_string(),
                ],
            })
            .args(&self.extra_args)
            .env("RUST_LOG", coordinator_log_filter())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (address_tx, address_rx) = mpsc::channel();
        let tail = self.tail.clone();
        let reader = std::thread::spawn(move || {
            read_coordinator_stderr(stderr, log, tail, address_tx);
        });
        self.child = Process {
            child: Some(child),
            stderr_reader: Some(reader),
        };
        let addr = match address_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addr)) => addr,
            Ok(Err(line)) => panic!(
                "cannot read the listening address from the coordinator's line {line:?}; log tail:\n{}",
                self.tail.text()
            ),
            Err(RecvTimeoutError::Timeout) => {
                self.child.kill();
                panic!(
                    "the coordinator did not report `coordinator serving listen=ADDR` within {START_TIMEOUT:?}; log tail:\n{}",
                    self.tail.text()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Its stderr ended, so the process is gone.
                let status = self
                    .child
                    .wait()
                    .map_or_else(|| "status unknown".to_owned(), |s| s.to_string());
                panic!(
                    "the coordinator exited ({status}) before listening; log tail:\n{}",
                    self.tail.text()
                )
            }
        };
        self.addr = addr.to_string();
        self.admin_token = std::fs::read_to_string(self.admin_token_file())
            .expect("admin token file")
            .trim()
            .to_owned();
    }

    /// The `coordinator` binary this one runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Creates an agent token with the CLI, as an operator would.
    pub fn agent_token(&self, agent_id: &str) -> String {
        let out = Command::new(&self.binary)
            .args(["token", "create", agent_id, "--db"])
            .arg(&self.db)
            .output()
            .expect("run coordinator token create");
        assert!(
            out.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 token")
            .trim()
            .to_owned()
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Kills (if running) and starts again over the same database on a port the
    /// system chooses, so [`Coordinator::addr`] usually changes: clients and agents
    /// must be made again from the new address.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn("127.0.0.1:0");
        if self.backend == Backend::Postgres {
            self.wait_until_leader();
        }
    }

    /// Kills it (if running) and starts it again over the same database on
    /// the same address, so that clients given that address find it again;
    /// returns once it listens (on PostgreSQL it stands by while another
    /// leads).
    pub fn restart_here(&mut self) {
        self.kill();
        let addr = self.addr.clone();
        self.spawn(&addr);
    }

    /// Waits (at most `timeout`) for the process to end by itself; its exit
    /// status, or `None` if it still runs (or was not running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(_)) => return self.child.wait(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after 20 s).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        self.child.wait()
    }

    /// The log the process (and any earlier run over the same database) wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// The `role` of `GET /health` at `addr`, if it answers.
fn health_role(addr: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    let health: serde_json::Value = serde_json::from_str(body).ok()?;
    health["role"].as_str().map(str::to_owned)
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `coordinator agent` process (the bundled runner).
pub struct RunnerProcess {
    child: Process,
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl RunnerProcess {
    /// Starts `coordinator agent` for `agent_id` against `coordinator`, running
    /// `exec` per task, with its state file in `dir`; `extra` flags are appended.
    /// It connects to the coordinator's current address, so it does not follow a
    /// [`Coordinator::restart`] (which moves to another port).
    pub fn start(
        coordinator: &Coordinator,
        agent_id: &str,
        exec: &str,
        dir: &Path,
        extra: &[&str],
    ) -> RunnerProcess {
        RunnerProcess::start_at(
            coordinator,
            &coordinator.ws_url(),
            agent_id,
            exec,
            dir,
            extra,
        )
    }

    /// [`RunnerProcess::start`] with `hubs` as its `--hub` (several separated by
    /// commas).
    pub fn start_at(
        coordinator: &Coordinator,
        hubs: &str,
        agent_id: &str,
        exec: &str,
        dir: &Path,
        extra: &[&str],
    ) -> RunnerProcess {
        let token = coordinator.agent_token(agent_id);
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--hub".into(),
            hubs.into(),
            "--agent-id".into(),
            agent_id.into(),
            "--token".into(),
            token,
            "--exec".into(),
            exec.into(),
            "--state-file".into(),
            dir.join(format!("{agent_id}-state.json"))
                .display()
                .to_string(),
            "--backoff-initial-ms".into(),
            "100".into(),
            "--backoff-max-ms".into(),
            "500".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut runner = RunnerProcess {
            child: Process::default(),
            binary: coordinator.binary().to_path_buf(),
            args,
            log: dir.join(format!("{agent_id}.log")),
        };
        runner.spawn();
        runner
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("runner log");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start coordinator agent");
        self.child = Process {
            child: Some(child),
            stderr_reader: None,
        };
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts it again with the same flags (and so the same state file).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A WebSocket client written by hand on a TCP stream, for tests of what a
/// well-behaved client library would never send (binary frames, oversize frames,
/// silence) and of the exact bytes the server answers (close codes).
pub struct RawSocket {
    tcp: tokio::net::TcpStream,
    received: Vec<u8>,
}

impl RawSocket {
    /// Connects to `addr` and performs the upgrade of `GET /ws`; panics if that fails.
    pub async fn connect(addr: &str) -> RawSocket {
        RawSocket::try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("WebSocket to {addr}: {e}"))
    }

    /// Connects to `addr` and performs the upgrade of `GET /ws` (within 5 s).
    pub async fn try_connect(addr: &str) -> Result<RawSocket, String> {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .map_err(|e| format!("write upgrade: {e}"))?;
        let mut socket = RawSocket {
            tcp,
            received: Vec::new(),
        };
        let answered = socket
            .read_until(Duration::from_secs(5), |b| {
                b.windows(4).any(|w| w == b"\r\n\r\n")
            })
            .await;
        if !answered {
            return Err("no upgrade answer".into());
        }
        let end = socket
            .received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |i| i + 4);
        if !socket.received.starts_with(b"HTTP/1.1 101") {
            return Err(format!(
                "upgrade refused: {}",
                String::from_utf8_lossy(&socket.received[..end])
            ));
        }
        // Frames the server sent right behind its answer stay in `received`.
        socket.received.drain(..end);
        Ok(socket)
    }

    /// The TCP stream and the bytes received but not yet consumed (frames the server
    /// may already have sent), for clients that read frames themselves.
    pub fn into_parts(self) -> (tokio::net::TcpStream, Vec<u8>) {
        (self.tcp, self.received)
    }

    /// Sends one masked frame (as clients must) with the given opcode
    /// (1 text, 2 binary, 8 close).
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let frame = client_frame(opcode, payload);
        // The server may close before reading everything; that is what some tests want.
        let _ = self.tcp.write_all(&frame).await;
    }

    /// Sends `bytes` as they are (for example half a frame), ignoring a closed socket.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = self.tcp.write_all(bytes).await;
    }

    /// Reads until `done(bytes received so far)` or the stream ends or `timeout`
    /// passes; true if `done` was satisfied.
    pub async fn read_until(&mut self, timeout: Duration, done: impl Fn(&[u8]) -> bool) -> bool {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !done(&self.received) {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.received.extend_from_slice(&buf[..n]),
                _ => return done(&self.received),
            }
        }
        true
    }

    /// Everything received so far (server frames are not masked, so text is readable).
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    /// Reads until a close frame with `code` arrives, the stream ends or `timeout`
    /// passes; true if the close frame arrived.
    pub async fn read_until_close(&mut self, code: u16, timeout: Duration) -> bool {
        self.read_until(timeout, |b| has_close(b, code)).await
    }
}

/// True if `received` (unmasked server frames) holds a close frame with `code`.
fn has_close(received: &[u8], code: u16) -> bool {
    let c = code.to_be_bytes();
    received
        .windows(4)
        .any(|w| w[0] == 0x88 && w[1] >= 2 && w[2] == c[0] && w[3] == c[1])
}

/// One masked, unfragmented client frame (as clients must send them) with the
/// given opcode (1 text, 2 binary, 8 close, 10 pong).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65_536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}
