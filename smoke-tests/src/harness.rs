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
