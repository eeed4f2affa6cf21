//! Running one task's command: shell, stdin, environment, progress lines, output
//! capture, timeout and process-group kill.

use std::process::Stdio;
use std::time::Duration;

use coordinator_transport::client::agent::{CancelToken, Job, Outcome};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// How a command is run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The shell command line.
    pub exec: String,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// At most this many bytes of stdout are kept.
    pub max_output_bytes: usize,
}

/// How many bytes of stderr's end are reported on failure.
const STDERR_TAIL: usize = 2_048;

/// The JSON given to the command on stdin.
fn stdin_json(job: &Job) -> Value {
    serde_json::json!({
        "task_id": job.task_id(),
        "generation": job.generation(),
        "description": job.description(),
        "metadata": job.metadata(),
        "assigned_at": job.assigned_at(),
    })
}

/// Runs the job's command to its end (or until `cancel` fires: then `None`).
/// Progress numbers read from `progress: N` lines go to `progress`.
pub async fn run(
    job: &Job,
    settings: &RunSettings,
    progress: mpsc::UnboundedSender<Value>,
    cancel: CancelToken,
) -> Option<Outcome> {
    let mut child = match Command::new("sh")
        .arg("-c")
        .arg(&settings.exec)
        .env("TASK_ID", job.task_id())
        .env("TASK_GENERATION", job.generation().to_string())
        .env("TASK_DESCRIPTION", job.description())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return Some(Outcome::Failed {
                error: format!("cannot start `{}`: {e}", settings.exec),
            })
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    if let Some(mut stdin) = child.stdin.take() {
        let input = stdin_json(job).to_string();
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let max = settings.max_output_bytes;
    let out_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut kept = String::new();
        let mut truncated = false;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("progress:") {
                let rest = rest.trim();
                let value = rest
                    .parse::<f64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(rest));
                let _ = progress.send(value);
                continue;
            }
            if kept.len() + line.len() < max {
                kept.push_str(&line);
                kept.push('\n');
            } else {
                truncated = true;
            }
        }
        (kept, truncated)
    });
    let err_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut reader = stderr;
        let mut chunk = [0u8; 4096];
        while let Ok(n) = reader.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > STDERR_TAIL * 2 {
                buf.drain(..buf.len() - STDERR_TAIL);
            }
        }
        let start = buf.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&buf[start..]).into_owned()
    });
    let kill_group = |pgid: Option<Pid>| {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    };
    let timeout = settings
        .timeout
        .unwrap_or(Duration::from_secs(u64::MAX / 4));
    let cancelled = cancel.cancelled();
    let status = tokio::select! {
        status = child.wait() => status,
        _ = tokio::time::sleep(timeout) => {
            kill_group(pgid);
            let _ = child.wait().await;
            return Some(Outcome::Failed { error: format!("timed out after {} s; the command was killed", timeout.as_secs()) });
        }
        _ = cancelled => {
            kill_group(pgid);
            let _ = child.wait().await;
            return None;
        }
    };
    // The shell may be gone while children of its group still run: end them too.
    kill_group(pgid);
    let (stdout, truncated) = out_task.await.unwrap_or_default();
    let stderr_tail = err_task.await.unwrap_or_default();
    Some(match status {
        Ok(status) if status.success() => {
            let result = match serde_json::from_str::<Value>(stdout.trim()) {
                Ok(json) if !stdout.trim().is_empty() => json,
                _ if truncated => serde_json::json!({"output": stdout, "truncated": true}),
                _ => serde_json::json!({"output": stdout}),
            };
            let tokens_used = result.get("tokens_used").and_then(Value::as_u64);
            Outcome::Complete {
                result,
                tokens_used,
            }
        }
        Ok(status) => {
            let how = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                _ => "abnormal exit".to_owned(),
            };
            let tail = stderr_tail.trim();
            Outcome::Failed {
                error: if tail.is_empty() {
                    how
                } else {
                    format!("{how}; stderr: {tail}")
                },
            }
        }
        Err(e) => Outcome::Failed {
            error: format!("cannot wait for the command: {e}"),
        },
    })
}
