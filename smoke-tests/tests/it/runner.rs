//! The bundled agent runner (`coordinator agent`) with real processes.

use std::time::{Duration, Instant};

use serde_json::json;
use smoke_tests::harness::{Coordinator, RunnerProcess, TempDir};
use smoke_tests::http::Client;

use crate::agents::{completions, submit, task, task_action, wait_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_complete_twenty_tasks_with_the_commands_output() {
    let c = Coordinator::start(&[]);
    let dir = TempDir::new("runner");
    let _a = RunnerProcess::start(&c, "r1", r#"sh -c "cat; echo done""#, dir.path(), &[]);
    let _b = RunnerProcess::start(&c, "r2", r#"sh -c "cat; echo done""#, dir.path(), &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(submit(&mut admin, json!({"description": format!("job {i}")})).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(30)).await;
        let output = t["result"]["output"].as_str().unwrap_or_default();
        assert!(
            output.contains(&format!("job {i}")) && output.contains("done"),
            "result {}",
            t["result"]
        );
        assert_eq!(completions(&t), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_retried_then_dead_lettered_with_its_stderr() {
    let c = Coordinator::start(&[]);
    let dir = TempDir::new("runner");
    let _a = RunnerProcess::start(
        &c,
        "r1",
        "echo something broke >&2; exit 3",
        dir.path(),
        &[],
    );
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let id = submit(
        &mut admin,
        json!({"description": "fails", "max_retries": 1}),
    )
    .await;
    let t = wait_status(&mut admin, &id, "dead_letter", Duration::from_secs(30)).await;
    assert_eq!(t["retry_count"], 2);
    let error = t["last_error"].as_str().unwrap();
    assert!(
        error.contains("exit status 3") && error.contains("something broke"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_recovers_its_task_and_it_completes_once() {
    let c = Coordinator::start(&[]);
    let dir = TempDir::new("runner");
    let marker = dir.path().join("started");
    let release = dir.path().join("release");
    // The command runs until the test lets it finish, so the kill lands while it runs.
    let exec = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.02; done; echo '{{\"ok\":true}}'",
        marker.display(),
        release.display()
    );
    let mut r = RunnerProcess::start(&c, "r1", &exec, dir.path(), &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let id = submit(&mut admin, json!({"description": "survive a kill"})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.kill();
    r.restart();
    std::fs::write(&release, b"").unwrap();
    let t = wait_status(&mut admin, &id, "completed", Duration::from_secs(30)).await;
    assert_eq!(completions(&t), 1);
    assert_eq!(t["result"], json!({"ok": true}));
    assert!(
        r.log().contains("recover"),
        "the runner reported recovery: {}",
        r.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_kills_its_command() {
    let c = Coordinator::start(&[]);
    let dir = TempDir::new("runner");
    let pid_file = dir.path().join("pid");
    let exec = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let _r = RunnerProcess::start(&c, "r1", &exec, dir.path(), &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let id = submit(&mut admin, json!({"description": "long"})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                break pid;
            }
        }
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_status(&mut admin, &id, "working", Duration::from_secs(10)).await;
    assert_eq!(task_action(&mut admin, &id, "cancel").await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            break; // killed, waiting to be reaped
        }
        assert!(
            Instant::now() < deadline,
            "the command (pid {pid}) is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(task(&mut admin, &id).await["status"], "cancelled");
}
