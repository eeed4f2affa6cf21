//! An agent on the agent SDK that runs a shell command named by each task's
//! metadata and reports its output. The task it holds is kept in a state file,
//! so a restarted agent recovers it instead of the coordinator running it again.
//!
//! The metadata of a task for it:
//!
//! ```json
//! {"command": "make -C /src test", "timeout_ms": 600000}
//! ```
//!
//! - `command` (string, required): run with `sh -c`; the task's id is in
//!   `TASK_ID`, its description in `TASK_DESCRIPTION`.
//! - `timeout_ms` (integer, optional): kill the command after this long.
//!
//! Exit status 0 completes the task with
//! `{"exit_code": 0, "stdout": "...", "stderr": "..."}` (each cut to its last
//! 64 KiB); any other status, a kill, a timeout or a missing `command` fails it
//! with the reason and the tail of stderr. A cancelled task's command is killed,
//! with every process it started (its process group).
//!
//! ```sh
//! TOKEN=$(coordinator token create sh-1)
//! cargo run -p coordinator-transport --features client --example shell_agent -- ws://127.0.0.1:4000/ws sh-1 "$TOKEN" ./sh-1.state.json
//! curl -s -XPOST -H "Authorization: Bearer $ADMIN" localhost:4000/api/tasks \
//!   -d '{"description":"uname","metadata":{"command":"uname -a"}}'
//! ```

use std::process::Stdio;
use std::time::Duration;

use coordinator_transport::client::agent::{AgentClient, Job, StateFile};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Each of stdout and stderr is cut to its last this many bytes.
const KEEP_BYTES: usize = 64 * 1024;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(hubs), Some(agent_id), Some(token)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: shell_agent WS_URL[,WS_URL...] AGENT_ID TOKEN [STATE_FILE]");
        std::process::exit(2);
    };
    let state = args
        .next()
        .unwrap_or_else(|| format!("./{agent_id}.state.json"));
    let mut agent = match AgentClient::builder(hubs.split(','), agent_id, token)
        .capabilities(["shell"])
        .state_hook(StateFile::new(state))
        .connect()
        .await
    {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("shell_agent: {e}");
            std::process::exit(1);
        }
    };
    let stopper = agent.stopper();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stopper.stop(); // a running command gets the shutdown grace
        }
    });
    while let Some(job) = agent.next().await {
        if job.is_restored() {
            eprintln!(
                "{}: recovered after a restart; running it again",
                job.task_id()
            );
        }
        let handle = job.handle();
        let reported = tokio::select! {
            outcome = run(&job) => match outcome {
                Ok(result) => handle.complete(result).await,
                Err(error) => handle.fail(error).await,
            },
            // Dropping the future kills the command's process group.
            () = job.cancelled() => {
                eprintln!("{}: cancelled", job.task_id());
                continue;
            }
        };
        if let Err(e) = reported {
            eprintln!("{}: {e}", job.task_id());
        }
    }
    if let Err(e) = agent.join().await {
        eprintln!("shell_agent: {e}");
        std::process::exit(1);
    }
}

/// Runs the job's command: the result on exit status 0, else why not.
async fn run(job: &Job) -> Result<Value, String> {
    let command = job
        .metadata()
        .get("command")
        .and_then(Value::as_str)
        .ok_or("the task's metadata has no string `command`")?;
    let timeout = job
        .metadata()
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("TASK_ID", job.task_id())
        .env("TASK_DESCRIPTION", job.description())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `sh -c {command}`: {e}"))?;
    let _group = KillGroup(child.id());
    let stdout = tail(child.stdout.take());
    let stderr = tail(child.stderr.take());
    let finished = async {
        let (status, stdout, stderr) = tokio::join!(child.wait(), stdout, stderr);
        (status, stdout, stderr)
    };
    let (status, stdout, stderr) = match timeout {
        Some(limit) => tokio::time::timeout(limit, finished)
            .await
            .map_err(|_| format!("timed out after {} ms; killed", limit.as_millis()))?,
        None => finished.await,
    };
    let status = status.map_err(|e| format!("cannot wait for the command: {e}"))?;
    match status.code() {
        Some(0) => Ok(json!({"exit_code": 0, "stdout": stdout, "stderr": stderr})),
        Some(code) => Err(format!("exit code {code}; stderr: {}", stderr.trim())),
        None => Err(format!("killed by a signal; stderr: {}", stderr.trim())),
    }
}

/// Kills a process group when dropped: whether the command ended, timed out or
/// was cancelled, nothing it started outlives it.
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The last [`KEEP_BYTES`] of a pipe, as text.
async fn tail(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > 2 * KEEP_BYTES {
            kept.drain(..kept.len() - KEEP_BYTES);
        }
    }
    let start = kept.len().saturating_sub(KEEP_BYTES);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}
