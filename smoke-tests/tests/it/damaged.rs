//! Damaged rows against the real binary: a row garbled on disk is skipped and
//! named in lists, answered `damaged_row` alone, logged once and counted; a
//! damaged live row stops a start with a message naming it; `coordinator
//! check` tells a clean file, damaged rows and damaged pages apart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smoke_tests::harness::{wait_for, Backend, Coordinator, TempDir};
use smoke_tests::http::Client;

const WAIT: Duration = Duration::from_secs(20);

on_both_backends!(a_garbled_row_is_skipped_and_named_answered_alone_logged_once_and_counted);

/// The words of the coordinator's log line about a damaged row.
const DAMAGED_LINE: &str = "damaged row: it cannot be decoded";

/// Submits tasks with these descriptions; their ids in order.
async fn submit(admin: &mut Client, descriptions: &[&str]) -> Vec<String> {
    let tasks: Vec<Value> = descriptions
        .iter()
        .map(|d| json!({"description": d}))
        .collect();
    crate::agents::submit_batch(admin, tasks).await
}

/// Runs `sql` on the database file, as another program (or a bad disk) would,
/// with `?1` bound to `id`.
fn garble(db: &Path, sql: &str, id: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(conn.execute(sql, [id]).unwrap(), 1, "{sql} changed no row");
}

/// [`garble`] on the store of `c`: SQLite's `?1` and `x'..'` are written the
/// PostgreSQL way for that store.
fn garble_store(c: &Coordinator, sql: &str, id: Option<&str>) {
    match c.backend {
        Backend::Sqlite => match id {
            Some(id) => garble(&c.db, sql, id),
            None => {
                let conn = rusqlite::Connection::open(&c.db).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql} changed no row");
            }
        },
        Backend::Postgres => {
            let sql = sql.replace("?1", "$1").replace("x'00'", "'\\x00'::bytea");
            let url = c.db.to_str().expect("a URL");
            let n = smoke_tests::postgres::execute(url, &sql, id);
            assert_eq!(n, 1, "{sql} changed no row");
        }
    }
}

fn ids_of(page: &Value, key: &str, field: &str) -> Vec<String> {
    page[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` in {page}"))
        .iter()
        .map(|t| t[field].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The value of the sample `name` in metrics text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Lines of the coordinator's log about the damaged row of `id`.
fn damaged_lines(c: &Coordinator, id: &str) -> usize {
    c.log()
        .lines()
        .filter(|l| l.contains(DAMAGED_LINE) && l.contains(id))
        .count()
}

/// Content that does not decode (a history that is not JSON, an unknown
/// status, a digest of the wrong length): what both stores can hold. (Values
/// of the wrong type, and the pages `coordinator check` reads, are SQLite's
/// alone: PostgreSQL's columns are typed.)
async fn a_garbled_row_is_skipped_and_named_answered_alone_logged_once_and_counted(
    backend: Backend,
) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let ids = submit(&mut admin, &["one", "two", "three", "four"]).await;
    garble_store(
        &c,
        "UPDATE tasks SET history = 'not json' WHERE id = ?1",
        Some(&ids[1]),
    );

    for _ in 0..3 {
        let page = admin.get("/api/tasks").await.unwrap();
        assert_eq!(page.status, 200, "{:?}", page.body);
        assert_eq!(
            ids_of(&page.body, "tasks", "id"),
            [ids[0].clone(), ids[2].clone(), ids[3].clone()]
        );
        assert_eq!(page.body["count"], 3);
        assert_eq!(ids_of(&page.body, "damaged", "id"), [ids[1].clone()]);
        assert_eq!(
            page.body["damaged"][0]["detail"],
            "column `history`: not a JSON list of {event, timestamp, details}"
        );
    }
    // Paging goes past it: a page ending on the damaged row continues after it.
    let first = admin.get("/api/tasks?limit=2").await.unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["next_after"], ids[1].as_str());
    let rest = admin
        .get(&format!("/api/tasks?limit=2&after={}", ids[1]))
        .await
        .unwrap();
    assert_eq!(
        ids_of(&rest.body, "tasks", "id"),
        [ids[2].clone(), ids[3].clone()]
    );
    let queued = admin.get("/api/tasks?status=queued").await.unwrap();
    assert_eq!(ids_of(&queued.body, "damaged", "id"), [ids[1].clone()]);

    for _ in 0..2 {
        let one = admin.get(&format!("/api/tasks/{}", ids[1])).await.unwrap();
        assert_eq!(one.status, 500, "{:?}", one.body);
        assert_eq!(one.body["error"], "damaged_row");
        assert_eq!(one.body["task_id"], ids[1].as_str());
        assert!(
            one.body["detail"]
                .as_str()
                .unwrap()
                .contains("column `history`"),
            "{:?}",
            one.body
        );
    }
    let others = admin.get(&format!("/api/tasks/{}", ids[2])).await.unwrap();
    assert_eq!(others.status, 200, "{:?}", others.body);
    let stats = admin.get("/api/tasks/stats").await.unwrap();
    assert_eq!(stats.status, 200, "{:?}", stats.body);

    // A token row too: the list answers with the others and names it.
    let _token = c.agent_token("worker");
    garble_store(
        &c,
        "UPDATE tokens SET hash = x'00' WHERE name = 'worker'",
        None,
    );
    let tokens = admin.get("/api/admin/tokens").await.unwrap();
    assert_eq!(tokens.status, 200, "{:?}", tokens.body);
    assert_eq!(ids_of(&tokens.body, "tokens", "name"), ["admin"]);
    assert_eq!(ids_of(&tokens.body, "damaged", "id"), ["worker"]);

    let metrics = Client::new(&c.addr, None).get("/metrics").await.unwrap();
    let metrics = metrics.body.as_str().unwrap();
    assert_eq!(
        sample(metrics, "coordinator_damaged_rows_total{table=\"tasks\"}"),
        Some(1.0),
        "one distinct row, however often it was read:\n{metrics}"
    );
    assert_eq!(
        sample(metrics, "coordinator_damaged_rows_total{table=\"tokens\"}"),
        Some(1.0),
        "{metrics}"
    );

    // A second damaged row, read after every read of the first: once its line
    // is in the log, any repeat of the first one's would be there before it.
    garble_store(
        &c,
        "UPDATE tasks SET status = 'queud' WHERE id = ?1",
        Some(&ids[3]),
    );
    let page = admin.get("/api/tasks").await.unwrap();
    assert_eq!(
        ids_of(&page.body, "damaged", "id"),
        [ids[1].clone(), ids[3].clone()]
    );
    wait_for(WAIT, "the log line of the second damaged row", || {
        let n = damaged_lines(&c, &ids[3]);
        async move { (n > 0).then_some(()) }
    })
    .await;
    assert_eq!(damaged_lines(&c, &ids[1]), 1, "log:\n{}", c.log());
    assert_eq!(damaged_lines(&c, &ids[3]), 1, "log:\n{}", c.log());
}

/// How a `coordinator serve` started by hand ended.
enum Start {
    /// It exited; its stderr.
    Exited(ExitStatus, String),
    /// It started serving (and was killed); its stderr so far.
    Served(String),
}

/// Starts `coordinator serve` on `db` and waits until it either exits or
/// reports that it serves (then it is killed).
fn start_by_hand(binary: &Path, db: &Path) -> Start {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut log = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                log += &line;
                log.push('\n');
                if line.contains("coordinator serving") {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Start::Served(log);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Start::Exited(child.wait().unwrap(), log);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the coordinator neither served nor exited within {WAIT:?}:\n{log}");
            }
        }
    }
}

/// Starts by hand and expects a refusal naming `id`; its message.
fn refused_start(c: &Coordinator, id: &str) -> String {
    match start_by_hand(c.binary(), &c.db) {
        Start::Served(log) => panic!("the coordinator started over a damaged live row:\n{log}"),
        Start::Exited(status, log) => {
            assert!(!status.success(), "{status}: {log}");
            assert!(!log.contains("panicked"), "{log}");
            assert!(log.contains(id), "the message names the task: {log}");
            assert!(
                log.contains(&format!("coordinator check --db {}", c.db.display())),
                "the message points at `coordinator check`: {log}"
            );
            log
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_over_a_damaged_live_row_is_refused_naming_it_and_nothing_is_lost() {
    let mut c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let ids = submit(&mut admin, &["kept", "garbled", "also kept"]).await;
    assert!(c.terminate().is_some_and(|s| s.success()));

    // A status nobody knows: the row may be a live task, so it is not skipped.
    garble(
        &c.db,
        "UPDATE tasks SET status = 'queud' WHERE id = ?1",
        &ids[1],
    );
    let log = refused_start(&c, &ids[1]);
    assert!(log.contains("unknown status `queud`"), "{log}");

    garble(
        &c.db,
        "UPDATE tasks SET status = 'queued', metadata = '{\"half\": ' WHERE id = ?1",
        &ids[1],
    );
    let log = refused_start(&c, &ids[1]);
    assert!(log.contains("column `metadata`: not valid JSON"), "{log}");

    // Repaired, it starts with every task still queued.
    garble(
        &c.db,
        "UPDATE tasks SET metadata = '{}' WHERE id = ?1",
        &ids[1],
    );
    c.restart();
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    for id in &ids {
        let task = admin.get(&format!("/api/tasks/{id}")).await.unwrap();
        assert_eq!(task.status, 200, "{:?}", task.body);
        assert_eq!(task.body["status"], "queued");
    }
}

/// `coordinator check --db DB`: its exit code and stdout and stderr.
fn check(binary: &Path, db: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(binary)
        .args(["check", "--db"])
        .arg(db)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_a_clean_file_damaged_rows_and_damaged_pages_apart() {
    let mut c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let descriptions: Vec<String> = (0..600)
        .map(|i| format!("task {i:04} {}", "x".repeat(200)))
        .collect();
    let descriptions: Vec<&str> = descriptions.iter().map(String::as_str).collect();
    let ids = submit(&mut admin, &descriptions).await;

    // Beside the running service.
    let (code, out, err) = check(c.binary(), &c.db);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("tasks: 600 row(s) checked, 0 damaged"),
        "{out}"
    );
    assert!(out.contains("integrity_check: ok"), "{out}");
    assert!(out.trim_end().ends_with("clean"), "{out}");

    garble(
        &c.db,
        "UPDATE tasks SET needed_capabilities = 'gpu' WHERE id = ?1",
        &ids[7],
    );
    let (code, out, err) = check(c.binary(), &c.db);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("tasks: 600 row(s) checked, 1 damaged"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(&ids[7]) && l.contains("needed_capabilities")),
        "{out}"
    );
    assert!(err.contains("damaged"), "{err}");
    let still = admin.get("/api/tasks/stats").await.unwrap();
    assert_eq!(still.status, 200, "the service went on serving");

    // Pages overwritten in the middle of the file.
    assert!(c.terminate().is_some_and(|s| s.success()));
    let conn = rusqlite::Connection::open(&c.db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&c.db).unwrap();
    assert!(bytes.len() >= 64 * 1024, "{} bytes", bytes.len());
    let middle = bytes.len() / 2;
    bytes[middle..middle + 8192].fill(0x5a);
    std::fs::write(&c.db, &bytes).unwrap();
    let (code, out, err) = check(c.binary(), &c.db);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("integrity_check:") && !out.contains("integrity_check: ok"),
        "{out}"
    );

    // Files it cannot check at all.
    let dir = TempDir::new("check");
    let missing = dir.path().join("missing.db");
    let (code, out, err) = check(c.binary(), &missing);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(!missing.exists(), "check created the file");
    let text = dir.path().join("text.db");
    std::fs::write(&text, vec![b'x'; 4096]).unwrap();
    let (code, out, err) = check(c.binary(), &text);
    assert_eq!(code, Some(2), "{out}{err}");
}
