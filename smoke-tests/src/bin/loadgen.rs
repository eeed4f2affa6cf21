//! Load generator: drives a coordinator with HTTP producers and WebSocket agents,
//! measures throughput and latency end to end, and checks that every task
//! completed exactly once.
//!
//! ```text
//! cargo build --release -p coordinator-bin -p smoke-tests
//! target/release/loadgen --spawn --tasks 20000 --batch 100 --json
//! ```
//!
//! With `--spawn` it starts the `coordinator` binary found beside its own
//! executable (or the one given with `--coordinator`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use coordinator_transport::client::{ClientConfig, Connection};
use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage};
use serde_json::{json, Value};
use smoke_tests::harness::Coordinator;
use smoke_tests::http::Client;

/// mimalloc: the load generator shares the machine with the coordinator it
/// measures, so the less it spends the better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures a coordinator end to end.
#[derive(Debug, Parser, Clone)]
#[command(name = "loadgen")]
struct Args {
    /// Base address of a running coordinator, e.g. http://127.0.0.1:4000, or
    /// several separated by commas (requests follow the leader; needs --token).
    #[arg(long)]
    url: Option<String>,
    /// Admin token of the running coordinator.
    #[arg(long)]
    token: Option<String>,
    /// Start a coordinator on a port the system chooses, with a temporary database.
    #[arg(long)]
    spawn: bool,
    /// The `coordinator` binary for --spawn (default: the one beside this executable).
    #[arg(long, value_name = "PATH")]
    coordinator: Option<PathBuf>,
    /// Tasks to submit (ignored with --rate).
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// WebSocket agents that accept and complete each task.
    #[arg(long, default_value_t = 64)]
    agents: usize,
    /// Concurrent HTTP producers.
    #[arg(long, default_value_t = 8)]
    submitters: usize,
    /// Tasks per request (more than 1 uses POST /api/tasks/batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Simulated work per task, in milliseconds.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Paced mode: tasks per second (with --duration).
    #[arg(long)]
    rate: Option<u64>,
    /// Paced mode: seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Scale mode: agents never accept, so the tasks stay queued; report the
    /// coordinator's memory with that many agents connected and tasks queued.
    #[arg(long)]
    hold: bool,
    /// Give up waiting for completions after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Give every task a metadata object of this many bytes (its JSON text),
    /// e.g. 10240 to measure large payloads; 0 sends none.
    #[arg(long, default_value_t = 0)]
    metadata_bytes: usize,
    /// Capabilities every submitted task needs, separated by commas (its
    /// `needed_capabilities`). The load generator's own agents declare none, so
    /// `--agents 0 --hold --needs backlog` fills a backlog that stays queued
    /// while later runs measure around it.
    #[arg(long, value_delimiter = ',', value_name = "CAPS")]
    needs: Vec<String>,
}

/// The task body of task number `k`: its description and, with
/// `metadata_bytes > 0`, a metadata object whose JSON text is exactly that long
/// (or as short as `{"k":K,"pad":""}` allows); with `needs`, the capabilities
/// it needs.
fn task_body(k: usize, metadata_bytes: usize, needs: &[String]) -> Value {
    let mut body = json!({"description": format!("load {k}")});
    if metadata_bytes > 0 {
        let bare = format!(r#"{{"k":{k},"pad":""}}"#).len();
        let pad = "x".repeat(metadata_bytes.saturating_sub(bare));
        body["metadata"] = json!({"k": k, "pad": pad});
    }
    if !needs.is_empty() {
        body["needed_capabilities"] = json!(needs);
    }
    body
}

#[derive(Default)]
struct Timings {
    submitted: HashMap<String, Instant>,
    assigned: HashMap<String, Instant>,
    completed: HashMap<String, Instant>,
    duplicate_completions: u64,
}

fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"p50": null, "p90": null, "p99": null, "max": null});
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({"p50": r(at(0.50)), "p90": r(at(0.90)), "p99": r(at(0.99)), "max": r(*v.last().unwrap())})
}

fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What every simulated agent shares with the run.
#[derive(Clone)]
struct Shared {
    timings: Arc<Mutex<Timings>>,
    /// Agents that are identified, or gave up trying.
    started: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    work_ms: u64,
    hold: bool,
}

async fn run_agent(url: String, agent_id: String, token: String, shared: Shared) {
    let Shared {
        timings,
        started,
        errors,
        done,
        work_ms,
        hold,
    } = shared;
    let mut config = ClientConfig::new(url, &agent_id, token);
    config.ping_interval = None;
    let connected = Connection::connect(&config).await;
    started.fetch_add(1, Ordering::Relaxed);
    let mut conn = match connected {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent {agent_id}: {e}");
            errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let sender = conn.sender();
    while let Some(message) = conn.recv().await {
        match message {
            CoordinatorMessage::TaskAssign { .. } if hold => {}
            CoordinatorMessage::TaskAssign {
                task_id,
                generation,
                ..
            } => {
                timings
                    .lock()
                    .unwrap()
                    .assigned
                    .entry(task_id.clone())
                    .or_insert_with(Instant::now);
                let _ = sender
                    .send(&AgentMessage::TaskAccepted {
                        task_id: task_id.clone(),
                    })
                    .await;
                if work_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(work_ms)).await;
                }
                let _ = sender
                    .send(&AgentMessage::TaskComplete {
                        task_id,
                        generation,
                        result: json!({}),
                        tokens_used: None,
                    })
                    .await;
            }
            CoordinatorMessage::TaskAck { task_id, status } if status == "complete" => {
                let mut t = timings.lock().unwrap();
                if t.completed.insert(task_id, Instant::now()).is_some() {
                    t.duplicate_completions += 1;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            CoordinatorMessage::Error { .. } => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Bytes the process caused to be sent to storage so far (`write_bytes` of
/// `/proc/<pid>/io`): the database, its WAL and anything else it wrote.
fn storage_write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn current_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Scale mode: everything submitted stays queued or held; report memory.
async fn report_hold(
    args: &Args,
    admin: &mut Client,
    coordinator: Option<&Coordinator>,
    submitted: u64,
    seconds: f64,
) {
    // Measure once every agent is connected and holds a task (or every task is held).
    let holding = (args.agents as u64).min(submitted);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (dashboard, connected) = loop {
        let dashboard = admin
            .get("/api/dashboard/state")
            .await
            .map(|r| r.body)
            .unwrap_or_default();
        let connected = dashboard["agents"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["connected"] == true).count())
            .unwrap_or(0);
        let assigned = dashboard["live"]["assigned"].as_u64().unwrap_or(0);
        if connected >= args.agents && assigned >= holding {
            break (dashboard, connected);
        }
        if Instant::now() > deadline {
            eprintln!(
                "loadgen: after 30 s, {connected} of {} agents connected and {assigned} of {holding} tasks held; reporting anyway",
                args.agents
            );
            break (dashboard, connected);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid = coordinator.and_then(Coordinator::pid);
    let report = json!({
        "mode": "hold",
        "tasks": submitted,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "agents_connected": connected,
        "live": dashboard["live"],
        "coordinator_rss_bytes": pid.and_then(current_rss),
        "coordinator_peak_rss_bytes": pid.and_then(peak_rss),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{report:#}");
    }
}

/// The `coordinator` binary to spawn: `--coordinator`, or the one beside this
/// executable (cargo puts both in `target/<profile>/`).
fn coordinator_binary(args: &Args) -> Result<PathBuf, String> {
    let binary = match &args.coordinator {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable's path: {e}"))?
            .with_file_name("coordinator"),
    };
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "no coordinator binary at {}; build it with `cargo build --release -p coordinator-bin` \
             (it lands beside loadgen) or give --coordinator PATH",
            binary.display()
        ))
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (coordinator, addr, token) = if args.spawn {
        let binary = coordinator_binary(&args).unwrap_or_else(|e| {
            eprintln!("loadgen: {e}");
            std::process::exit(2)
        });
        let c = Coordinator::start_binary(&binary, &[]);
        let addr = c.addr.clone();
        let token = c.admin_token.clone();
        (Some(c), addr, token)
    } else {
        let url = args.url.clone().unwrap_or_else(|| {
            eprintln!("loadgen: give --spawn, or --url and --token");
            std::process::exit(2)
        });
        // `host:port`, or several separated by commas (the HTTP client
        // follows the leader among them).
        let addr = url
            .split(',')
            .map(|u| u.trim().trim_start_matches("http://").trim_end_matches('/'))
            .collect::<Vec<_>>()
            .join(",");
        let token = args.token.clone().unwrap_or_else(|| {
            eprintln!("loadgen: --url needs --token (an admin token)");
            std::process::exit(2)
        });
        (None, addr, token)
    };
    let total = match args.rate {
        Some(rate) => (rate * args.duration) as usize,
        None => args.tasks,
    };
    let mut admin = Client::new(&addr, Some(&token));
    let before = admin.get("/api/tasks/stats").await.expect("stats").body;
    let completed_before = before["by_status"]["completed"].as_u64().unwrap_or(0);

    let timings = Arc::new(Mutex::new(Timings::default()));
    let started_agents = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let run_id = std::process::id();
    let mut agent_tasks = Vec::new();
    for i in 0..args.agents {
        let agent_id = format!("loadgen-{run_id}-{i}");
        let r = admin
            .post("/api/admin/tokens", &json!({"agent_id": agent_id}))
            .await
            .expect("create token");
        assert_eq!(r.status, 201, "cannot create an agent token: {:?}", r.body);
        let agent_token = r.body["token"].as_str().unwrap().to_owned();
        let shared = Shared {
            timings: timings.clone(),
            started: started_agents.clone(),
            errors: errors.clone(),
            done: done.clone(),
            work_ms: args.work_ms,
            hold: args.hold,
        };
        agent_tasks.push(tokio::spawn(run_agent(
            // The coordinator that answered the token request: the leader.
            format!("ws://{}/ws", admin.addr()),
            agent_id,
            agent_token,
            shared,
        )));
    }
    // Submit once every agent is identified (or has given up).
    let deadline = Instant::now() + Duration::from_secs(60);
    while started_agents.load(Ordering::Relaxed) < args.agents as u64 {
        if Instant::now() > deadline {
            eprintln!(
                "loadgen: only {} of {} agents identified within 60 s",
                started_agents.load(Ordering::Relaxed),
                args.agents
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} completed ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut producers = Vec::new();
    let per_submitter = total.div_ceil(args.submitters.max(1));
    for s in 0..args.submitters.max(1) {
        let from = s * per_submitter;
        let to = ((s + 1) * per_submitter).min(total);
        if from >= to {
            continue;
        }
        let addr = addr.clone();
        let token = token.clone();
        let timings = timings.clone();
        let errors = errors.clone();
        let batch = args.batch.max(1);
        let metadata_bytes = args.metadata_bytes;
        let needs = args.needs.clone();
        let pace = args.rate.map(|rate| {
            Duration::from_secs_f64(batch as f64 * args.submitters as f64 / rate as f64)
        });
        producers.push(tokio::spawn(async move {
            let mut client = Client::new(&addr, Some(&token));
            let mut next_at = Instant::now();
            let mut i = from;
            while i < to {
                if let Some(pace) = pace {
                    tokio::time::sleep_until(next_at.into()).await;
                    next_at += pace;
                }
                let n = batch.min(to - i);
                let sent = Instant::now();
                let reply = if n == 1 && batch == 1 {
                    client
                        .post("/api/tasks", &task_body(i, metadata_bytes, &needs))
                        .await
                } else {
                    let tasks: Vec<Value> = (i..i + n)
                        .map(|k| task_body(k, metadata_bytes, &needs))
                        .collect();
                    client
                        .post("/api/tasks/batch", &json!({"tasks": tasks}))
                        .await
                };
                match reply {
                    Ok(r) if r.status == 201 => {
                        let ids: Vec<String> = if let Some(id) = r.body["task_id"].as_str() {
                            vec![id.to_owned()]
                        } else {
                            r.body["task_ids"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|v| v.as_str().map(str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default()
                        };
                        let mut t = timings.lock().unwrap();
                        for id in ids {
                            t.submitted.insert(id, sent);
                        }
                    }
                    Ok(r) => {
                        eprintln!("submit answered {}: {}", r.status, r.body);
                        errors.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("submit failed: {e}");
                        errors.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                i += n;
            }
        }));
    }
    for p in producers {
        let _ = p.await;
    }
    let submitted = timings.lock().unwrap().submitted.len() as u64;
    if args.hold {
        report_hold(
            &args,
            &mut admin,
            coordinator.as_ref(),
            submitted,
            started.elapsed().as_secs_f64(),
        )
        .await;
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let n = done.load(Ordering::Relaxed);
        bar.set_position(n);
        if n >= submitted || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let after = admin.get("/api/tasks/stats").await.expect("stats").body;
    let completed_after = after["by_status"]["completed"].as_u64().unwrap_or(0);
    let t = timings.lock().unwrap();
    let mut to_assign = Vec::new();
    let mut to_complete = Vec::new();
    for (id, sent) in &t.submitted {
        if let Some(a) = t.assigned.get(id) {
            to_assign.push(a.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
        }
        if let Some(c) = t.completed.get(id) {
            to_complete.push(c.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
        }
    }
    let completed = t.completed.len() as u64;
    let mut error_count = errors.load(Ordering::Relaxed);
    let mut problems = Vec::new();
    if completed != submitted {
        problems.push(format!(
            "{} of {submitted} submitted tasks were not seen completing",
            submitted.saturating_sub(completed)
        ));
    }
    if t.duplicate_completions > 0 {
        problems.push(format!(
            "{} tasks were acknowledged complete twice",
            t.duplicate_completions
        ));
    }
    if completed_after - completed_before != submitted {
        problems.push(format!(
            "the coordinator counts {} new completed tasks, expected {submitted}",
            completed_after - completed_before
        ));
    }
    error_count += problems.len() as u64;
    let mut report = json!({
        "tasks": submitted,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "tasks_per_sec": (submitted as f64 / seconds).round(),
        "submit_to_assign_ms": percentiles(to_assign),
        "submit_to_complete_ms": percentiles(to_complete),
        "errors": error_count,
        "agents": args.agents,
        "submitters": args.submitters,
        "batch": args.batch,
        "rate": args.rate,
    });
    if let Some(c) = &coordinator {
        report["coordinator_peak_rss_bytes"] = json!(c.pid().and_then(peak_rss));
        let db_bytes: u64 = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut p = c.db.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum();
        report["db_bytes"] = json!(db_bytes);
        let written = c.pid().and_then(storage_write_bytes);
        report["coordinator_write_bytes"] = json!(written);
        report["write_bytes_per_task"] =
            json!(written.map(|w| (w as f64 / submitted.max(1) as f64).round()));
    }
    if args.json {
        println!("{report}");
    } else {
        println!("tasks                 {}", report["tasks"]);
        println!("seconds               {}", report["seconds"]);
        println!("tasks/s               {}", report["tasks_per_sec"]);
        for key in ["submit_to_assign_ms", "submit_to_complete_ms"] {
            let p = &report[key];
            println!(
                "{key:<22}p50 {}  p90 {}  p99 {}  max {}",
                p["p50"], p["p90"], p["p99"], p["max"]
            );
        }
        if let Some(rss) = report.get("coordinator_peak_rss_bytes") {
            println!("coordinator peak RSS  {rss} bytes");
            println!("database size         {} bytes", report["db_bytes"]);
            println!(
                "written to storage    {} bytes ({} per task)",
                report["coordinator_write_bytes"], report["write_bytes_per_task"]
            );
        }
        println!("errors                {error_count}");
    }
    for p in &problems {
        eprintln!("loadgen: {p}");
    }
    for a in agent_tasks {
        a.abort();
    }
    drop(coordinator);
    if error_count > 0 {
        std::process::exit(1);
    }
}
