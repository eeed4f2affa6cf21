//! A PostgreSQL server for the tests of the PostgreSQL store: one throwaway
//! cluster per test process (`initdb` and `pg_ctl` of the installed server, in
//! a temporary folder, on a free port, run as the `postgres` user when the
//! tests run as root, since `initdb` refuses root), or the server
//! `COORDINATOR_TEST_PG_URL` names. Each test gets a database of its own.
//!
//! The cluster is started by a small shell that then waits on its standard
//! input: when the test process ends, for whatever reason, that pipe closes and
//! the shell stops the server and removes its data.
//!
//! A test that stops and starts the server under the coordinators takes a
//! [`Cluster`] of its own, so the other tests' databases stay up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

/// How long starting the cluster (after installing it, if needed) may take.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable naming a server to use instead of a throwaway
/// cluster: a URL whose database the tests may connect to and create
/// databases from, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub const URL_VAR: &str = "COORDINATOR_TEST_PG_URL";

/// The server the tests of this process use.
struct Server {
    /// A URL of its maintenance database, ending in `/DBNAME`.
    url: String,
    /// The throwaway cluster (none with [`URL_VAR`]).
    _cluster: Option<Cluster>,
}

/// A throwaway PostgreSQL cluster, stopped and removed when dropped (or when
/// the test process ends).
pub struct Cluster {
    /// A URL of its maintenance database.
    url: String,
    /// Its folder (data, socket, logs).
    dir: PathBuf,
    /// The server's `bin` folder.
    bin: PathBuf,
    port: u16,
    as_root: bool,
    /// Held open while the cluster lives: closing it stops the cluster.
    keeper: Option<Mutex<ChildStdin>>,
    /// The keeper shell.
    keeper_process: Mutex<Child>,
}

/// A new, empty database on the test server; its URL.
pub fn new_database() -> String {
    create_database(&server().url)
}

/// A new, empty database on the server whose maintenance database `admin_url`
/// names; its URL.
fn create_database(admin_url: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "coordinator_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let create = format!("CREATE DATABASE {name}");
    with_client(admin_url, move |client| async move {
        client
            .batch_execute(&create)
            .await
            .unwrap_or_else(|e| panic!("{create}: {e}"));
    });
    with_database(admin_url, &name)
}

/// Runs one statement on the database `url` names, as another program would,
/// with `$1` bound to `id` when given; how many rows it changed.
pub fn execute(url: &str, sql: &str, id: Option<&str>) -> u64 {
    let (sql, id) = (sql.to_owned(), id.map(str::to_owned));
    with_client(url, move |client| async move {
        let result = match &id {
            Some(id) => client.execute(&sql, &[id]).await,
            None => client.execute(&sql, &[]).await,
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

/// Runs `sql` (any number of statements, no parameters) on the database
/// `url` names, in one go, as another program would.
pub fn batch_execute(url: &str, sql: &str) {
    let sql = sql.to_owned();
    with_client(url, move |client| async move {
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

/// Connects to the database `url` names and runs `work` with the client, on a
/// runtime of its own on a thread of its own (callers may be inside one);
/// panics with the URL if it cannot connect.
fn with_client<T, F, Fut>(url: &str, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
            tokio::spawn(connection);
            work(client).await
        })
    })
    .join()
    .expect("the database work ran")
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].rfind('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Server {
            url,
            _cluster: None,
        },
        _ => {
            let cluster = Cluster::start();
            Server {
                url: cluster.url.clone(),
                _cluster: Some(cluster),
            }
        }
    })
}

/// The `bin` folder of the newest installed PostgreSQL server, installing
/// Debian's package if there is none.
fn server_bin() -> PathBuf {
    if let Some(bin) = find_server_bin() {
        return bin;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ensure-postgres.sh");
    let status = Command::new("bash")
        .arg(script)
        .status()
        .expect("run ensure-postgres.sh");
    assert!(
        status.success(),
        "the PostgreSQL server is needed for the tests of the PostgreSQL store and could not be installed (see above), and {URL_VAR} is not set"
    );
    find_server_bin().expect("ensure-postgres.sh installed the server")
}

fn find_server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The server's options (`pg_ctl -o`) for a port and a folder (its socket).
fn server_options(port: u16, dir: &Path) -> String {
    format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400",
        dir.display()
    )
}

/// The shell that runs the cluster: init, start, say `ready`, wait for its
/// standard input to close, stop, remove the data.
const KEEPER: &str = r#"
set -e
bin="$1"; dir="$2"; options="$3"
"$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
"$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$options" start >/dev/null
echo ready
read -r _ || true
"$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
rm -rf "$dir/data"
"#;

/// Removes the folders (logs) of clusters whose test process has ended.
fn remove_stale_folders() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("coordinator-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Cluster {
    /// Initialises and starts a cluster of its own on a free port (installing
    /// the server first if needed), whatever [`URL_VAR`] says.
    pub fn start() -> Cluster {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bin = server_bin();
        remove_stale_folders();
        let dir = std::env::temp_dir().join(format!(
            "coordinator-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        start_cluster(bin, dir)
    }

    /// A new, empty database on this cluster; its URL.
    pub fn new_database(&self) -> String {
        create_database(&self.url)
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended, clients
    /// see their connections close) and waits until it is down.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
    }

    /// Starts the stopped server again on the same port and waits until it
    /// accepts connections.
    pub fn start_again(&self) {
        let options = server_options(self.port, &self.dir);
        let log = self.dir.join("server.log").display().to_string();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log, "-o", &options]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let out = command
            .arg("-D")
            .arg(&data)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}{}\nserver.log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing the pipe tells the keeper to stop the server and remove it.
        self.keeper.take();
        if let Ok(mut keeper) = self.keeper_process.lock() {
            let _ = keeper.wait();
        }
    }
}

fn start_cluster(bin: PathBuf, dir: PathBuf) -> Cluster {
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the cluster folder");
    let as_root = running_as_root();
    if as_root {
        // The postgres user writes the cluster here.
        set_mode(&dir, 0o777);
    }
    let port = free_port();
    let mut command = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]);
        c.arg("bash");
        c
    } else {
        Command::new("bash")
    };
    let mut keeper = command
        .args(["-c", KEEPER, "keeper"])
        .arg(&bin)
        .arg(&dir)
        .arg(server_options(port, &dir))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the PostgreSQL keeper shell");
    let stdout = keeper.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = ready_tx.send(line);
    });
    match ready_rx.recv_timeout(START_TIMEOUT) {
        Ok(line) if line.trim() == "ready" => {}
        outcome => {
            let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            panic!(
                "the test PostgreSQL cluster did not start ({outcome:?}); initdb.log:\n{}\nserver.log:\n{}",
                log("initdb.log"),
                log("server.log")
            );
        }
    }
    Cluster {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        dir,
        bin,
        port,
        as_root,
        keeper: keeper.stdin.take().map(Mutex::new),
        keeper_process: Mutex::new(keeper),
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

#[cfg(test)]
mod tests;
