//! Starting and stopping a real coordinator process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The release `coordinator` binary, built once per test run if needed.
pub fn coordinator_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("own binary path");
            // target/<profile>/deps/it-xxxx or target/<profile>/loadgen -> target/<profile>
            let mut profile_dir = exe.parent().expect("binary in a directory").to_path_buf();
            if profile_dir.file_name().is_some_and(|n| n == "deps") {
                profile_dir = profile_dir.parent().expect("profile dir").to_path_buf();
            }
            let release = profile_dir
                .parent()
                .map(|t| t.join("release"))
                .unwrap_or(profile_dir.clone());
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
            let status = Command::new(cargo)
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
            let binary = release.join("coordinator");
            assert!(
                binary.exists(),
                "no coordinator binary at {}",
                binary.display()
            );
            binary
        })
        .clone()
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates one under the system temp directory.
    pub fn new(prefix: &str) -> TempDir {
        let mut bytes = [0u8; 8];
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(&(nanos as u64 ^ std::process::id() as u64).to_le_bytes());
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{:016x}-{}",
            u64::from_le_bytes(bytes),
            free_port()
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

/// A child process that is killed when dropped.
#[derive(Default)]
struct Process(Option<Child>);

impl Process {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running coordinator process with its own database.
pub struct Coordinator {
    child: Process,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The database file.
    pub db: PathBuf,
    /// The admin token.
    pub admin_token: String,
    extra_args: Vec<String>,
    _dir: Option<TempDir>,
}

impl Coordinator {
    /// Starts a coordinator on a free port with a temporary database and the given
    /// extra `serve` flags (for example shortened timers).
    pub fn start(extra_args: &[&str]) -> Coordinator {
        let dir = TempDir::new("coordinator-test");
        let db = dir.path().join("coordinator.db");
        let mut c = Coordinator {
            child: Process::default(),
            addr: String::new(),
            db,
            admin_token: String::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _dir: Some(dir),
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        self.addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(self.db.with_extension("log.txt")).expect("log file");
        let child = Command::new(coordinator_binary())
            .arg("serve")
            .args(["--listen", &self.addr, "--db"])
            .arg(&self.db)
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("COORDINATOR_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the coordinator");
        self.child = Process(Some(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the coordinator did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let token_file = {
            let mut p = self.db.clone().into_os_string();
            p.push(".admin-token");
            PathBuf::from(p)
        };
        self.admin_token = std::fs::read_to_string(token_file)
            .expect("admin token file")
            .trim()
            .to_owned();
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Creates an agent token with the CLI, as an operator would.
    pub fn agent_token(&self, agent_id: &str) -> String {
        let out = Command::new(coordinator_binary())
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

    /// Kills (if running) and starts again on a new port over the same database.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.0.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.0.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.db.with_extension("log.txt")).unwrap_or_default()
    }
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
    args: Vec<String>,
    log: PathBuf,
}

impl RunnerProcess {
    /// Starts `coordinator agent` for `agent_id` against `coordinator`, running
    /// `exec` per task, with its state file in `dir`; `extra` flags are appended.
    pub fn start(
        coordinator: &Coordinator,
        agent_id: &str,
        exec: &str,
        dir: &Path,
        extra: &[&str],
    ) -> RunnerProcess {
        let token = coordinator.agent_token(agent_id);
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--hub".into(),
            coordinator.ws_url(),
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
        let child = Command::new(coordinator_binary())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start coordinator agent");
        self.child = Process(Some(child));
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
    /// Connects to `addr` and performs the upgrade of `GET /ws`.
    pub async fn connect(addr: &str) -> RawSocket {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("write upgrade");
        let mut socket = RawSocket {
            tcp,
            received: Vec::new(),
        };
        assert!(
            socket
                .read_until(Duration::from_secs(5), |b| b
                    .windows(4)
                    .any(|w| w == b"\r\n\r\n"))
                .await,
            "no upgrade answer"
        );
        assert!(
            socket.received.starts_with(b"HTTP/1.1 101"),
            "upgrade refused"
        );
        socket.received.clear();
        socket
    }

    /// Sends one masked frame (as clients must) with the given opcode
    /// (1 text, 2 binary, 8 close).
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode];
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
        // The server may close before reading everything; that is what some tests want.
        let _ = self.tcp.write_all(&frame).await;
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

    /// True once a close frame with `code` was received.
    pub fn saw_close(&self, code: u16) -> bool {
        let c = code.to_be_bytes();
        self.received
            .windows(4)
            .any(|w| w[0] == 0x88 && w[1] >= 2 && w[2] == c[0] && w[3] == c[1])
    }
}
