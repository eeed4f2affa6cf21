//! Several coordinators on one PostgreSQL database (SPEC §13): exactly one
//! leads; a standby points at it (`/health`, 503 `not_leader`); when the
//! leader is killed (once, or ten times in a row under load with three
//! coordinators), frozen, or loses its database to a server restart, another
//! takes the lease over and serves every task that was acknowledged, none
//! completed twice, and agents and the CLI's watchers follow it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smoke_tests::harness::{
    coordinator_binary, wait_for, Backend, Coordinator, RunnerProcess, TempDir,
};
use smoke_tests::http::Client;
use smoke_tests::postgres::Cluster;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::agents::{completions, submit, wait_status};

/// Sets the lease timing of these tests: `RENEW_MS,TIMEOUT_MS`, or `default`
/// for the coordinator's own (1000, 5000), as when measuring takeover times.
const LEASE_VAR: &str = "COORDINATOR_TEST_LEASE";

/// The lease flags of every coordinator here: short timing (renew 200 ms,
/// timeout 1000 ms), so that the tests do not wait for the defaults, unless
/// [`LEASE_VAR`] says otherwise.
fn lease() -> &'static [&'static str] {
    static FLAGS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    FLAGS.get_or_init(|| {
        let setting = std::env::var(LEASE_VAR).unwrap_or_default();
        if setting == "default" {
            return Vec::new();
        }
        let (renew, timeout) = setting.split_once(',').unwrap_or(("200", "1000"));
        let leak = |s: &str| -> &'static str { Box::leak(s.trim().to_owned().into_boxed_str()) };
        vec![
            "--lease-renew-ms",
            leak(renew),
            "--lease-timeout-ms",
            leak(timeout),
        ]
    })
}

/// The lease timing in use, for the figures printed.
fn lease_timing() -> String {
    match lease() {
        [_, renew, _, timeout] => format!("renew {renew} ms, timeout {timeout} ms"),
        _ => "renew 1000 ms, timeout 5000 ms (the defaults)".to_owned(),
    }
}

/// `GET /health` of one coordinator (no failover).
async fn health(addr: &str) -> Option<Value> {
    let (status, _, body) = raw_http(addr, "GET", "/health", None, "").await?;
    (status == 200).then_some(body)
}

/// One HTTP/1.1 request to exactly `addr`: status, head and JSON body.
async fn raw_http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String, Value)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((
        status,
        head.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

/// Waits (20 s at most) until `/health` of `c` says `role`; its health. On
/// a timeout, the failure shows the coordinator's log.
async fn wait_role(c: &Coordinator, role: &'static str) -> Value {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(h) = health(&c.addr).await.filter(|h| h["role"] == role) {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{} is not {role} after 20 s; its log:\n{}", c.addr, c.log()))
}

/// Waits until `c` stands by and names `leader` (a coordinator) as the leader.
async fn wait_standby_of(c: &Coordinator, leader: &Coordinator) -> Value {
    let url = format!("http://{}", leader.addr);
    let addr = c.addr.clone();
    wait_for(
        Duration::from_secs(20),
        "the standby to name the leader",
        || {
            let addr = addr.clone();
            let url = url.clone();
            async move {
                health(&addr)
                    .await
                    .filter(|h| h["role"] == "standby" && h["leader"] == url.as_str())
            }
        },
    )
    .await
}

/// `first` (which leads) and `n - 1` more coordinators started beside it on
/// its database, each waited for until it stands by naming `first`.
async fn with_standbys(first: Coordinator, n: usize, args: &[&str]) -> Vec<Coordinator> {
    let mut all = vec![first];
    for _ in 1..n {
        let c = Coordinator::start_beside(&all[0], args);
        wait_standby_of(&c, &all[0]).await;
        all.push(c);
    }
    all
}

/// `n` coordinators on one fresh database: the first leads, the others stand
/// by.
async fn coordinators(n: usize, args: &[&str]) -> Vec<Coordinator> {
    with_standbys(Coordinator::start_on(Backend::Postgres, args), n, args).await
}

/// The one of `all` that says it leads (waited for).
async fn leader_among(all: &[Coordinator]) -> usize {
    let addrs: Vec<String> = all.iter().map(|c| c.addr.clone()).collect();
    wait_for(Duration::from_secs(20), "a leader", || {
        let addrs = addrs.clone();
        async move {
            let mut leaders = Vec::new();
            for (i, addr) in addrs.iter().enumerate() {
                if health(addr).await.is_some_and(|h| h["role"] == "leader") {
                    leaders.push(i);
                }
            }
            match leaders[..] {
                [one] => Some(one),
                _ => None,
            }
        }
    })
    .await
}

/// Every URL of `all`, comma-separated, as `f` makes it of an address.
fn urls(all: &[Coordinator], f: impl Fn(&Coordinator) -> String) -> String {
    all.iter().map(f).collect::<Vec<_>>().join(",")
}

/// How many history entries of `task` are `event`.
fn events(task: &Value, event: &str) -> usize {
    task["history"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|e| e["event"] == event).count())
}

/// The ids of the tasks `GET /api/tasks?status=STATUS` of `addr` lists.
async fn tasks_in(addr: &str, token: &str, status: &str) -> Vec<String> {
    let path = format!("/api/tasks?status={status}&limit=100");
    match raw_http(addr, "GET", &path, Some(token), "").await {
        Some((200, _, body)) => body["tasks"]
            .as_array()
            .map(|tasks| {
                tasks
                    .iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// How many times each task's command was started, from the runners' logs
/// (`running the command task_id=...`).
fn runs_by_task(logs: &[String]) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for line in logs.iter().flat_map(|log| log.lines()) {
        if !line.contains("running the command") {
            continue;
        }
        let Some(at) = line.find("task_id=") else {
            continue;
        };
        let id: String = line[at + "task_id=".len()..]
            .trim_start_matches('"')
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"')
            .collect();
        *runs.entry(id).or_insert(0) += 1;
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_the_standby_points_at_it_and_takes_over_after_a_kill() {
    let mut all = coordinators(2, lease()).await;
    let [a, b] = &mut all[..] else {
        unreachable!("two coordinators")
    };
    let led = wait_role(a, "leader").await;
    assert_eq!(led["epoch"], 1, "{led}");
    let leader_url = format!("http://{}", a.addr);
    assert_eq!(
        health(&a.addr).await.expect("the leader answers")["role"],
        "leader"
    );

    // A submit to the standby is refused, naming the leader; nothing is stored.
    let (status, head, body) = raw_http(
        &b.addr,
        "POST",
        "/api/tasks",
        Some(&b.admin_token),
        &json!({"description": "to the standby"}).to_string(),
    )
    .await
    .expect("the standby answers");
    assert_eq!(status, 503, "{head}\n{body}");
    assert_eq!(body["error"], "not_leader", "{body}");
    assert_eq!(body["leader"], leader_url.as_str(), "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");

    // An agent that knows both, and tasks acknowledged by the leader.
    let dir = TempDir::new("leadership");
    let hubs = format!("{},{}", a.ws_url(), b.ws_url());
    let _agent = RunnerProcess::start_at(
        a,
        &hubs,
        "r1",
        "sh -c 'cat >/dev/null; echo done'",
        dir.path(),
        &[],
    );
    let both = format!("{},{}", a.addr, b.addr);
    let mut client = Client::new(&both, Some(&a.admin_token));
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(submit(&mut client, json!({"description": format!("before {i}")})).await);
    }
    assert_eq!(
        raw_http(&b.addr, "GET", "/api/tasks", Some(&b.admin_token), "")
            .await
            .expect("the standby answers")
            .0,
        503
    );

    // kill -9 of the leader: the standby leads and accepts within the timing.
    a.kill();
    let killed = Instant::now();
    let mut on_b = Client::new(&b.addr, Some(&b.admin_token));
    let deadline = killed + Duration::from_secs(20);
    let first = loop {
        let r = on_b
            .post("/api/tasks", &json!({"description": "after the kill"}))
            .await;
        if let Ok(r) = r {
            if r.status == 201 {
                break r.body["task_id"].as_str().expect("a task id").to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no 201 from the standby within 20 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let takeover_ms = killed.elapsed().as_millis();
    println!(
        "takeover after kill -9: {takeover_ms} ms to the first 201 on the new leader ({})",
        lease_timing()
    );
    ids.push(first);
    let now_leads = wait_role(b, "leader").await;
    assert_eq!(now_leads["epoch"], 2, "{now_leads}");
    for i in 0..10 {
        ids.push(submit(&mut on_b, json!({"description": format!("after {i}")})).await);
    }

    // Every acknowledged task is there and completes exactly once.
    for id in &ids {
        let t = wait_status(&mut on_b, id, "completed", Duration::from_secs(60)).await;
        assert_eq!(completions(&t), 1, "{t}");
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_after_it_thaws_it_commits_nothing_and_stops() {
    let all = coordinators(2, lease()).await;
    let [a, b] = &all[..] else {
        unreachable!("two coordinators")
    };
    let mut on_a = Client::new(&a.addr, Some(&a.admin_token));
    let before = submit(&mut on_a, json!({"description": "before the freeze"})).await;

    let pid = a.pid().expect("the leader runs");
    signal(pid, "-STOP");
    let frozen = Instant::now();
    let leads = wait_role(b, "leader").await;
    println!(
        "takeover after SIGSTOP: {} ms until the standby leads ({})",
        frozen.elapsed().as_millis(),
        lease_timing()
    );
    assert_eq!(leads["epoch"], 2, "{leads}");
    let mut on_b = Client::new(&b.addr, Some(&b.admin_token));
    let after = submit(&mut on_b, json!({"description": "after the freeze"})).await;

    // Thawed, the old leader answers no submit with 201 and stops.
    signal(pid, "-CONT");
    let body = json!({"description": "to the thawed leader"}).to_string();
    let thawed = raw_http(&a.addr, "POST", "/api/tasks", Some(&a.admin_token), &body).await;
    if let Some((status, _, body)) = &thawed {
        assert_ne!(
            *status, 201,
            "the thawed leader acknowledged a task: {body}"
        );
    }
    let addr = a.addr.clone();
    wait_for(Duration::from_secs(20), "the thawed leader to stop", || {
        let addr = addr.clone();
        async move { health(&addr).await.is_none().then_some(()) }
    })
    .await;
    assert!(
        a.log().contains("leadership lost") || a.log().contains("lost the leadership lease"),
        "{}",
        a.log()
    );

    // The new leader has both tasks, and nothing the thawed one took.
    for id in [&before, &after] {
        wait_status(&mut on_b, id, "queued", Duration::from_secs(10)).await;
    }
    let stats = on_b.get("/api/tasks/stats").await.expect("the stats").body;
    assert_eq!(stats["total"], 2, "{stats}");
}

/// Tasks answered 201 by a steady submitter, with when each was answered.
#[derive(Clone, Default)]
struct Acknowledged(Arc<Mutex<Vec<(String, Instant)>>>);

impl Acknowledged {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When the first task answered after `t` was answered.
    fn first_after(&self, t: Instant) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| *at)
            .find(|at| *at > t)
    }
}

/// Submits one task every `pace` through a client given every coordinator
/// until `stop`; a submit that is not answered 201 is tried again (it counts
/// only once answered).
fn steady_load(
    addrs: String,
    token: String,
    pace: Duration,
    stop: Arc<AtomicBool>,
) -> (Acknowledged, tokio::task::JoinHandle<()>) {
    let acked = Acknowledged::default();
    let record = acked.clone();
    let load = tokio::spawn(async move {
        let mut client = Client::new(&addrs, Some(&token));
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let body = json!({"description": format!("load {n}")});
            match client.post("/api/tasks", &body).await {
                Ok(r) if r.status == 201 => {
                    let id = r.body["task_id"].as_str().expect("a task id").to_owned();
                    record.0.lock().unwrap().push((id, Instant::now()));
                    n += 1;
                    tokio::time::sleep(pace).await;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    (acked, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kills_of_the_leader_under_load_lose_nothing_and_run_nothing_twice() {
    const KILLS: usize = 10;
    let mut all = coordinators(3, lease()).await;
    let token = all[0].admin_token.clone();

    // Three agents that know every coordinator, each job taking a while so
    // that kills find work held.
    let dir = TempDir::new("ten-kills");
    let hubs = urls(&all, Coordinator::ws_url);
    let runners: Vec<RunnerProcess> = (1..=3)
        .map(|i| {
            RunnerProcess::start_at(
                &all[0],
                &hubs,
                &format!("r{i}"),
                "sh -c 'cat >/dev/null; sleep 0.4; echo done'",
                dir.path(),
                &[],
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, load) = steady_load(
        urls(&all, |c| c.addr.clone()),
        token.clone(),
        Duration::from_millis(150),
        stop.clone(),
    );

    let mut held_at_kills: Vec<String> = Vec::new();
    let mut takeovers_ms = Vec::new();
    for round in 0..KILLS {
        let leader = leader_among(&all).await;
        // Some work acknowledged since the last kill, and an agent at work.
        let since = acked.len();
        let addr = all[leader].addr.clone();
        let held = wait_for(
            Duration::from_secs(20),
            "new tasks acknowledged and one held by an agent",
            || {
                let (addr, token, acked) = (addr.clone(), token.clone(), acked.clone());
                async move {
                    if acked.len() < since + 3 {
                        return None;
                    }
                    let held = tasks_in(&addr, &token, "working").await;
                    (!held.is_empty()).then_some(held)
                }
            },
        )
        .await;
        all[leader].kill();
        let killed = Instant::now();
        held_at_kills.extend(held);
        let answered = wait_for(Duration::from_secs(20), "a 201 after the kill", || {
            let acked = acked.clone();
            async move { acked.first_after(killed) }
        })
        .await;
        takeovers_ms.push(answered.duration_since(killed).as_millis());
        // The killed one comes back on its address and stands by.
        all[leader].restart_here();
        wait_role(&all[leader], "standby").await;
        println!(
            "kill {}: coordinator {leader} killed; first 201 after {} ms",
            round + 1,
            takeovers_ms[round]
        );
    }
    stop.store(true, Ordering::SeqCst);
    load.await.expect("the load ends");

    // Every acknowledged task completes exactly once, on whoever leads now.
    let leader = leader_among(&all).await;
    let mut admin = Client::new(&urls(&all, |c| c.addr.clone()), Some(&token));
    let ids = acked.ids();
    let mut reattached = 0;
    for id in &ids {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(60)).await;
        assert_eq!(completions(&t), 1, "{t}");
    }
    // Work held at a kill was given back to its agent, never assigned again.
    for id in &held_at_kills {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(60)).await;
        assert_eq!(events(&t, "assigned"), 1, "held at a kill, run again: {t}");
        if events(&t, "recovered") > 0 {
            reattached += 1;
        }
    }
    assert!(reattached > 0, "no held task was re-attached");
    // No command ran twice for one task.
    let logs: Vec<String> = runners.iter().map(RunnerProcess::log).collect();
    let runs = runs_by_task(&logs);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "commands run more than once: {twice:?}");
    for id in &ids {
        assert_eq!(
            runs.get(id),
            Some(&1),
            "task {id} ran {:?} times",
            runs.get(id)
        );
    }
    // The agents followed the leader.
    let leader_addr = all[leader].addr.clone();
    for i in 1..=3 {
        let path = format!("/api/agents/r{i}");
        let (addr, token) = (leader_addr.clone(), token.clone());
        wait_for(Duration::from_secs(20), "the agent on the leader", || {
            let (addr, token, path) = (addr.clone(), token.clone(), path.clone());
            async move {
                raw_http(&addr, "GET", &path, Some(&token), "")
                    .await
                    .filter(|(status, _, agent)| *status == 200 && agent["connected"] == true)
            }
        })
        .await;
    }
    takeovers_ms.sort_unstable();
    println!(
        "{KILLS} kills under load ({}): {} tasks acknowledged, all completed once; {} held at a kill, {reattached} re-attached; first 201 after a kill: min {} ms, median {} ms, max {} ms",
        lease_timing(),
        ids.len(),
        held_at_kills.len(),
        takeovers_ms[0],
        takeovers_ms[KILLS / 2],
        takeovers_ms[KILLS - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_stops_the_leader_and_a_standby_that_reconnected_leads() {
    // A cluster of this test's own: stopping it disturbs nobody else.
    let cluster = Cluster::start();
    let first = Coordinator::start_on_database(&cluster.new_database(), lease());
    let mut all = with_standbys(first, 2, lease()).await;
    let token = all[0].admin_token.clone();
    let dir = TempDir::new("pg-restart");
    let _agent = RunnerProcess::start_at(
        &all[0],
        &urls(&all, Coordinator::ws_url),
        "r1",
        "sh -c 'cat >/dev/null; echo done'",
        dir.path(),
        &[],
    );
    let mut client = Client::new(&urls(&all, |c| c.addr.clone()), Some(&token));
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(submit(&mut client, json!({"description": format!("before {i}")})).await);
    }

    // The server goes away under the leader: it stops serving and exits
    // non-zero; the standby stays up without its database.
    let stopping = Instant::now();
    cluster.stop();
    let body = json!({"description": "while the database is down"}).to_string();
    if let Some((status, _, body)) =
        raw_http(&all[0].addr, "POST", "/api/tasks", Some(&token), &body).await
    {
        assert_ne!(status, 201, "acknowledged without a database: {body}");
    }
    let exit = tokio::task::block_in_place(|| all[0].wait_exit(Duration::from_secs(20)))
        .expect("the leader stops");
    println!(
        "leader exited within {} ms of the database's stop ({exit})",
        stopping.elapsed().as_millis()
    );
    assert!(!exit.success(), "the leader must exit non-zero: {exit}");
    // Whichever notices first stops it: the lease (its connection ended) or
    // the writer (a commit failed). Either way nothing more is acknowledged.
    let log = all[0].log();
    assert!(
        log.contains("leadership lost") || log.contains("stopping so that nothing is acknowledged"),
        "{log}"
    );
    // Down for a while: the standby keeps trying (and failing) to reconnect.
    let standby = all[1].addr.clone();
    wait_for(Duration::from_secs(20), "failed reconnections", || {
        let log = all[1].log();
        async move { (log.matches("cannot reconnect to the database").count() >= 2).then_some(()) }
    })
    .await;
    let h = health(&standby).await.expect("the standby still answers");
    assert_eq!(h["role"], "standby", "{h}");

    // Back: the standby reconnects, finds the lock free and leads.
    cluster.start_again();
    let back = Instant::now();
    let leads = wait_role(&all[1], "leader").await;
    assert_eq!(leads["epoch"], 2, "{leads}");
    println!(
        "a standby leads {} ms after the database is back",
        back.elapsed().as_millis()
    );
    assert!(all[1].log().contains("reconnected to the database"));
    // The old leader, restarted, stands by.
    all[0].restart_here();
    wait_standby_of(&all[0], &all[1]).await;

    let mut client = Client::new(&urls(&all, |c| c.addr.clone()), Some(&token));
    ids.push(submit(&mut client, json!({"description": "after the restart"})).await);
    for id in &ids {
        let t = wait_status(&mut client, id, "completed", Duration::from_secs(60)).await;
        assert_eq!(completions(&t), 1, "{t}");
    }
}

/// Runs the `coordinator` CLI with `args` and the admin token; its output,
/// or a failure after `timeout`.
async fn cli(args: Vec<String>, token: &str, timeout: Duration) -> std::process::Output {
    let child = tokio::process::Command::new(coordinator_binary())
        .args(&args)
        .env("COORDINATOR_TOKEN", token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the CLI");
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("coordinator {args:?} did not end within {timeout:?}"))
        .expect("the CLI's output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_submit_wait_follow_the_leader_across_several_urls() {
    let mut all = coordinators(2, lease()).await;
    let token = all[0].admin_token.clone();
    let dir = TempDir::new("watch-failover");
    let _agent = RunnerProcess::start_at(
        &all[0],
        &urls(&all, Coordinator::ws_url),
        "r1",
        "sh -c 'cat >/dev/null; sleep 3; echo done'",
        dir.path(),
        &[],
    );
    // The standby first: both must find the leader.
    let url_list = format!("http://{},http://{}", all[1].addr, all[0].addr);
    let waiting = {
        let args: Vec<String> = ["submit", "long", "--wait", "--json", "--url", &url_list]
            .map(str::to_owned)
            .into();
        let token = token.clone();
        tokio::spawn(async move { cli(args, &token, Duration::from_secs(60)).await })
    };
    let leader = all[0].addr.clone();
    let id = wait_for(Duration::from_secs(20), "the task at work", || {
        let (leader, token) = (leader.clone(), token.clone());
        async move { tasks_in(&leader, &token, "working").await.pop() }
    })
    .await;
    let mut watcher = tokio::process::Command::new(coordinator_binary())
        .args(["watch", "--task", &id, "--url", &url_list])
        .env("COORDINATOR_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run coordinator watch");
    let mut said = tokio::io::BufReader::new(watcher.stderr.take().expect("piped")).lines();
    // It follows the leader, through the standby given first.
    let following = format!("event stream: following {leader}");
    let mut diagnostics = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = said.next_line().await {
            let found = line.contains(&following);
            diagnostics.push(line);
            if found {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("watch did not follow the leader: {diagnostics:?}"));
    all[0].kill();
    wait_role(&all[1], "leader").await;

    let waited = waiting.await.expect("joined");
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "submit --wait: {stderr}");
    let task: Value = serde_json::from_slice(&waited.stdout).expect("the task as JSON");
    assert_eq!(task["id"], id.as_str(), "{task}");
    assert_eq!(task["status"], "completed", "{task}");
    let mut stdout = watcher.stdout.take().expect("piped");
    let mut printed = String::new();
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        // Its diagnostics are drained too, so it never blocks on them.
        let drain = async { while let Ok(Some(_)) = said.next_line().await {} };
        let (read, _) = tokio::join!(stdout.read_to_string(&mut printed), drain);
        read.expect("watch's output");
        watcher.wait().await
    })
    .await
    .expect("watch ends within 60 s")
    .expect("watch's exit status");
    assert!(status.success(), "watch: {printed}");
    assert!(
        printed.trim_end().ends_with(&format!("{id} is completed")),
        "{printed}"
    );
    // Re-attached on the new leader, not run again.
    let mut client = Client::new(&urls(&all, |c| c.addr.clone()), Some(&token));
    let t = client
        .get(&format!("/api/tasks/{id}"))
        .await
        .expect("the task")
        .body;
    assert_eq!((events(&t, "assigned"), completions(&t)), (1, 1), "{t}");
}
