//! Tests of the storage: counts kept with the rows, migrations, the task row codec.

use coordinator_queue::{
    Capabilities, Completion, HistoryEntry, HistoryEvent, Holder, Payload, Priority, Status, Task,
    TaskId, TaskParts, HISTORY_CAP,
};
use proptest::prelude::*;

use super::schema::{APPLICATION_ID, MIGRATIONS};
use super::*;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coordinator-db-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("c.db")
}

fn record(id: &str, status: Status) -> Task {
    let mut queue = coordinator_queue::Queue::new(coordinator_queue::QueueConfig::default());
    queue
        .submit(1, coordinator_queue::NewTask::new(id, "x"))
        .unwrap();
    let task = queue.drain_changes().pop().unwrap().into_task();
    edited(task, |p| p.status = status)
}

/// `task` with its parts changed by `change` (and checked again).
fn edited(task: Task, change: impl FnOnce(&mut TaskParts)) -> Task {
    let mut parts = task.into_parts();
    change(&mut parts);
    Task::from_parts(parts).unwrap()
}

fn counts(conn: &Connection) -> Vec<(String, String, u64)> {
    let (mut counts, damaged) = count_by_status_priority(conn).unwrap();
    assert_eq!(damaged, []);
    counts.sort();
    counts
}

#[test]
fn counts_follow_inserts_updates_and_deletes() {
    let path = temp_db("counts");
    let conn = open(&path).unwrap();
    upsert_task(&conn, &record("a", Status::Queued)).unwrap();
    upsert_task(&conn, &record("b", Status::Queued)).unwrap();
    upsert_task(&conn, &record("a", Status::Completed)).unwrap();
    upsert_task(&conn, &record("b", Status::Queued)).unwrap();
    assert_eq!(
        counts(&conn),
        [
            ("completed".into(), "normal".into(), 1),
            ("queued".into(), "normal".into(), 1)
        ]
    );
    assert_eq!(delete_expired(&conn, 1 << 60).unwrap(), 1);
    assert_eq!(counts(&conn), [("queued".into(), "normal".into(), 1)]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A row as versions 1 and 2 wrote it: without the columns added since.
fn insert_old_row(conn: &Connection, id: &str, status: &str) {
    conn.execute(
        "INSERT INTO tasks (id, description, metadata, priority, status, generation, \
         retry_count, max_retries, needed_capabilities, created_at, updated_at, queue_seq, \
         history) VALUES (?1, 'x', '{}', 'normal', ?2, 0, 0, 3, '[]', 1, 1, 0, '[]')",
        [id, status],
    )
    .unwrap();
}

#[test]
fn a_version_1_database_is_migrated_with_its_counts() {
    let path = temp_db("migrate");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        insert_old_row(&conn, "old", "dead_letter");
    }
    let conn = open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(counts(&conn), [("dead_letter".into(), "normal".into(), 1)]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A database at `path` as a binary of schema `version` made it.
fn database_at_version(path: &Path, version: usize) -> Connection {
    let conn = Connection::open(path).unwrap();
    for sql in &MIGRATIONS[..version] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", version as i64)
        .unwrap();
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    conn
}

#[test]
fn a_version_7_database_loses_its_row_triggers_and_keeps_its_counts() {
    let path = temp_db("migrate-8");
    {
        let conn = database_at_version(&path, 7);
        // Counted by the triggers of version 7.
        insert_old_row(&conn, "done", "completed");
        insert_old_row(&conn, "queued", "queued");
    }
    let conn = open(&path).unwrap();
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        triggers,
        ["tasks_count_delete", "tasks_dependencies_delete"]
    );
    assert_eq!(
        counts(&conn),
        [
            ("completed".into(), "normal".into(), 1),
            ("queued".into(), "normal".into(), 1)
        ]
    );
    // The writer counts from here on, the delete trigger still.
    let back = get_task(&conn, "queued").unwrap().unwrap();
    upsert_task(&conn, &edited(back, |p| p.status = Status::Cancelled)).unwrap();
    upsert_task(&conn, &record("new", Status::Queued)).unwrap();
    conn.execute("DELETE FROM tasks WHERE id = 'done'", [])
        .unwrap();
    assert_eq!(
        counts(&conn),
        [
            ("cancelled".into(), "normal".into(), 1),
            ("queued".into(), "normal".into(), 1)
        ]
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_version_2_database_gains_reclaim_counts_of_zero() {
    let path = temp_db("migrate-3");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        insert_old_row(&conn, "old", "queued");
    }
    let conn = open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!((version, SCHEMA_VERSION), (8, 8));
    let back = get_task(&conn, "old").unwrap().unwrap();
    assert_eq!((back.status(), back.reclaim_count()), (Status::Queued, 0));
    let bumped = edited(back.clone(), |p| p.reclaim_count = 4);
    upsert_task(&conn, &bumped).unwrap();
    assert_eq!(get_task(&conn, "old").unwrap().unwrap().reclaim_count(), 4);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn memory_db() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    migrate(&conn, Path::new(":memory:")).unwrap();
    conn
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, NUL and quotes included, mostly short.
    prop_oneof![
        3 => "\\PC{0,12}",
        1 => any::<String>(),
        1 => Just(String::new()),
    ]
}

fn holder() -> impl Strategy<Value = Option<Holder>> {
    proptest::option::of((text(), any::<u64>(), any::<u64>()).prop_map(
        |(agent, assigned_at_ms, last_alive_at_ms)| Holder {
            agent_id: agent.as_str().into(),
            assigned_at_ms,
            last_alive_at_ms,
        },
    ))
}

/// Any JSON text: a string, a number or an object of any text.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        text().prop_map(|t| serde_json::Value::String(t).to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        json_object(),
    ]
}

/// A JSON object holding any text.
fn json_object() -> impl Strategy<Value = String> {
    (text(), text()).prop_map(|(k, v)| serde_json::json!({ k: v }).to_string())
}

fn outcome() -> impl Strategy<Value = Option<Completion>> {
    proptest::option::of((json_text(), proptest::option::of(any::<u64>())).prop_map(
        |(result, tokens_used)| Completion {
            result,
            tokens_used,
        },
    ))
}

/// A capability list as a task keeps it: sorted, distinct, no empty name.
fn capabilities() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set(text().prop_filter("a name", |s| !s.is_empty()), 0..4)
        .prop_map(|names| names.into_iter().collect())
}

fn history() -> impl Strategy<Value = Vec<HistoryEntry>> {
    proptest::collection::vec(
        (
            proptest::sample::select(HistoryEvent::ALL.to_vec()),
            any::<u64>(),
            text(),
        )
            .prop_map(|(event, timestamp_ms, details)| HistoryEntry {
                event,
                timestamp_ms,
                details: details.into(),
            }),
        0..=HISTORY_CAP,
    )
}

/// Any valid task record with the given id: every status, a holder exactly when
/// a live status says so (any holder for a final one), an outcome, a last
/// error, any history, any counters (within what `Task::from_parts` accepts),
/// including values past `i64::MAX` that SQLite stores as negative integers,
/// metadata that is any JSON object.
fn task_with_id(id: String) -> impl Strategy<Value = Task> {
    let kind = (
        proptest::sample::select(Priority::ALL.to_vec()),
        proptest::sample::select(Status::ALL.to_vec()),
        holder(),
        outcome(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    );
    let counters = (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    );
    let texts = (text(), json_object(), capabilities(), history());
    (kind, counters, texts).prop_map(
        move |(
            (priority, status, holder, outcome, last_error, submitted_by),
            (
                generation,
                retry_count,
                max_retries,
                complete_by_ms,
                created,
                updated,
                queue_seq,
                reclaim_count,
            ),
            (description, metadata, capabilities, history),
        )| {
            let live = !status.is_final();
            Task::from_parts(TaskParts {
                id: TaskId::from(id.as_str()),
                description: description.into(),
                metadata: metadata.into(),
                priority,
                status,
                holder: match holder {
                    Some(_) if !status.is_final() && !status.is_held() => None,
                    None if status.is_held() => Some(Holder {
                        agent_id: "a".into(),
                        assigned_at_ms: 1,
                        last_alive_at_ms: 2,
                    }),
                    holder => holder,
                },
                generation: if status.is_held() {
                    generation.max(1)
                } else {
                    generation
                },
                retry_count: if live {
                    retry_count.min(max_retries)
                } else {
                    retry_count
                },
                reclaim_count,
                max_retries,
                complete_by_ms,
                needed_capabilities: Capabilities::new(capabilities),
                outcome,
                last_error,
                submitted_by,
                created_at_ms: created,
                updated_at_ms: updated,
                queue_seq: queue_seq & ((1 << 56) - 1),
                history,
                run_at_ms: (status == Status::Scheduled).then_some(updated),
                depends_on: if status == Status::Waiting {
                    vec![TaskId::from("dependency")]
                } else {
                    Vec::new()
                },
                idempotency_key: None,
            })
            .expect("a consistent record")
        },
    )
}

/// Two records of one task: the first is inserted, the second updates it in
/// place. The second keeps what a task fixes at submission (texts, lane,
/// capabilities, submitter, options), and its queue position unless its
/// history says it was released or requeued (or is full), as the queue does.
fn two_records() -> impl Strategy<Value = (Task, Task)> {
    text()
        .prop_filter("a task id is not empty", |id| !id.is_empty())
        .prop_flat_map(|id| (task_with_id(id.clone()), task_with_id(id)))
        .prop_map(|(first, second)| {
            // Options are fixed at submission too: both records carry those
            // either status needs.
            let run_at_ms = first.run_at_ms().or(second.run_at_ms());
            let depends_on = if first.depends_on().is_empty() {
                second.depends_on().to_vec()
            } else {
                first.depends_on().to_vec()
            };
            let first = edited(first, |p| {
                p.run_at_ms = run_at_ms;
                p.depends_on = depends_on.clone();
            });
            let fixed = first.clone().into_parts();
            let second = edited(second, |p| {
                let moved = p.history.len() >= HISTORY_CAP
                    || p.history.iter().any(|h| {
                        matches!(h.event, HistoryEvent::Released | HistoryEvent::Requeued)
                    });
                if !moved {
                    p.queue_seq = fixed.queue_seq;
                }
                p.description = fixed.description;
                p.metadata = fixed.metadata;
                p.priority = fixed.priority;
                p.max_retries = fixed.max_retries;
                p.retry_count = p.retry_count.min(p.max_retries);
                p.complete_by_ms = fixed.complete_by_ms;
                p.needed_capabilities = fixed.needed_capabilities;
                p.submitted_by = fixed.submitted_by;
                p.created_at_ms = fixed.created_at_ms;
                p.idempotency_key = fixed.idempotency_key;
                p.run_at_ms = fixed.run_at_ms;
                p.depends_on = fixed.depends_on;
            });
            (first, second)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A record read back equals the record written, field for field (`Task`'s
    /// `PartialEq` compares all of them), both when inserted and when it replaces
    /// an older record of the same task.
    #[test]
    fn a_task_survives_the_row_codec((first, second) in two_records()) {
        let conn = memory_db();
        upsert_task(&conn, &first).unwrap();
        let back = get_task(&conn, first.id().as_str()).unwrap();
        prop_assert_eq!(back.as_ref(), Some(&first));
        upsert_task(&conn, &second).unwrap();
        let back = get_task(&conn, second.id().as_str()).unwrap();
        prop_assert_eq!(back.as_ref(), Some(&second));
        let listed = list_tasks(&conn, &TaskFilter { limit: 10, ..TaskFilter::default() }).unwrap();
        prop_assert_eq!(listed.tasks, vec![second.clone()]);
        prop_assert_eq!(listed.damaged, vec![]);
        let live = load_live_tasks(&conn, usize::MAX).unwrap();
        let expected_live = if second.status().is_final() { vec![] } else { vec![second.clone()] };
        prop_assert_eq!(live, expected_live);
        // With no room for texts, every non-empty one comes as its length.
        let lengths = load_live_tasks(&conn, 0).unwrap();
        let expected: Vec<Task> = if second.status().is_final() {
            vec![]
        } else {
            vec![second.clone().with_payloads_elided(0)]
        };
        prop_assert_eq!(lengths, expected);
    }
}

/// Stores a queued task `id` at position `seq`.
fn store(conn: &Connection, id: &str, seq: u64) {
    let task = edited(record(id, Status::Queued), |p| p.queue_seq = seq);
    upsert_task(conn, &task).unwrap();
}

/// What reading task `id` says after `sql` (with `?1` = the id) changed its row.
fn damage_of(sql: &str) -> DamagedRow {
    let conn = memory_db();
    store(&conn, "t", 1);
    conn.execute(sql, ["t"]).unwrap();
    match get_task(&conn, "t") {
        Err(DbError::Damaged(row)) => row,
        other => panic!("`{sql}` gave {other:?}"),
    }
}

#[test]
fn each_kind_of_damage_is_named_with_its_column() {
    let cases = [
        (
            "UPDATE tasks SET history = 'garbage' WHERE id = ?1",
            "column `history`: not a JSON list of {event, timestamp, details}",
        ),
        (
            "UPDATE tasks SET history = '[{\"event\": \"exploded\", \"timestamp\": 1, \"details\": \"\"}]' WHERE id = ?1",
            "column `history`: not a JSON list of {event, timestamp, details}",
        ),
        (
            "UPDATE tasks SET metadata = '{\"a\": ' WHERE id = ?1",
            "column `metadata`: not valid JSON (EOF while parsing a value at line 1 column 6)",
        ),
        (
            "UPDATE tasks SET metadata = '[1]' WHERE id = ?1",
            "column `metadata`: JSON that is not an object",
        ),
        (
            "UPDATE tasks SET needed_capabilities = '[1, 2]' WHERE id = ?1",
            "column `needed_capabilities`: not a JSON list of strings (invalid type: integer `1`, expected a string at line 1 column 2)",
        ),
        (
            "UPDATE tasks SET result = 'not json' WHERE id = ?1",
            "column `result`: not valid JSON (expected ident at line 1 column 2)",
        ),
        (
            "UPDATE tasks SET status = 'queud' WHERE id = ?1",
            "column `status`: unknown status `queud`",
        ),
        (
            "UPDATE tasks SET priority = 'soon' WHERE id = ?1",
            "column `priority`: unknown priority `soon` (expected urgent, high, normal or low)",
        ),
        (
            "UPDATE tasks SET generation = 'one' WHERE id = ?1",
            "column `generation`: expected an integer, found text",
        ),
        (
            "UPDATE tasks SET created_at = 1.5 WHERE id = ?1",
            "column `created_at`: expected an integer, found a real number",
        ),
        (
            "UPDATE tasks SET retry_count = -1 WHERE id = ?1",
            "column `retry_count`: -1 is out of range",
        ),
        (
            "UPDATE tasks SET description = x'00ff' WHERE id = ?1",
            "column `description`: expected text, found a blob",
        ),
        (
            "UPDATE tasks SET description = CAST(x'c328' AS TEXT) WHERE id = ?1",
            "column `description`: text that is not valid UTF-8",
        ),
        (
            "UPDATE tasks SET status = 'working' WHERE id = ?1",
            "a working task without an `assigned_to`",
        ),
        (
            "UPDATE tasks SET assigned_to = 'a1' WHERE id = ?1",
            "a queued task with an `assigned_to`",
        ),
    ];
    for (sql, reason) in cases {
        let row = damage_of(sql);
        assert_eq!(
            (row.table, row.id.as_deref(), row.rowid, row.reason.as_str()),
            (Table::Tasks, Some("t"), Some(1), reason),
            "{sql}"
        );
    }
}

/// Found by the `task_row` fuzz target: a stored capability list that no task
/// can have (out of order, repeated, an empty name) is damage, not a task that
/// no agent could ever be matched with (matching compares sorted sets).
#[test]
fn a_capability_list_no_task_can_have_is_damage() {
    for list in [r#"["linux","gpu"]"#, r#"["gpu","gpu"]"#, r#"[""]"#] {
        let row = damage_of(&format!(
            "UPDATE tasks SET needed_capabilities = '{list}' WHERE id = ?1"
        ));
        assert_eq!(
            row.reason, "column `needed_capabilities`: not sorted, distinct, non-empty names",
            "{list}"
        );
    }
    let conn = memory_db();
    store(&conn, "t", 1);
    conn.execute(
        r#"UPDATE tasks SET needed_capabilities = '["gpu","linux"]' WHERE id = 't'"#,
        [],
    )
    .unwrap();
    let task = get_task(&conn, "t").unwrap().unwrap();
    assert_eq!(task.needed_capabilities().names(), ["gpu", "linux"]);
}

#[test]
fn a_null_where_the_schema_forbids_it_is_damage_too() {
    // NOT NULL constraints can be bypassed by other writers (an edited schema,
    // a copied file); the decoder does not trust them.
    let conn = memory_db();
    store(&conn, "t", 1);
    let values: Vec<rusqlite::types::Value> = conn
        .prepare(&format!("SELECT {} FROM tasks", super::rows::COLUMNS))
        .unwrap()
        .query_row([], |r| {
            (0..26)
                .map(|i| r.get::<_, rusqlite::types::Value>(i))
                .collect()
        })
        .unwrap();
    let mut refs: Vec<rusqlite::types::ValueRef<'_>> = values.iter().map(Into::into).collect();
    refs[20] = rusqlite::types::ValueRef::Null;
    let refs: [rusqlite::types::ValueRef<'_>; 26] = refs.try_into().unwrap();
    let row = super::rows::decode_task(&refs, super::rows::TextColumns::Whole).unwrap_err();
    assert_eq!(
        (row.id.as_deref(), row.reason.as_str()),
        (Some("t"), "column `history`: expected text, found NULL")
    );
}

#[test]
fn a_row_whose_id_cannot_be_read_is_named_by_its_rowid() {
    let conn = memory_db();
    store(&conn, "t", 1);
    conn.execute_batch("UPDATE tasks SET id = x'01' WHERE id = 't'")
        .unwrap();
    let page = list_tasks(
        &conn,
        &TaskFilter {
            limit: 10,
            ..TaskFilter::default()
        },
    )
    .unwrap();
    assert_eq!(page.tasks, []);
    assert_eq!(
        page.damaged,
        [DamagedRow {
            table: Table::Tasks,
            id: None,
            rowid: Some(1),
            reason: "column `id`: expected text, found a blob".into(),
        }]
    );
    assert_eq!(page.next_after, None);
    assert_eq!(
        page.damaged[0].to_string(),
        "tasks row 1: column `id`: expected text, found a blob"
    );
}

fn page_of(conn: &Connection, after: Option<&str>, limit: u32) -> TaskPage {
    let after_seq = after.map(|id| task_seq(conn, id).unwrap().unwrap());
    list_tasks(
        conn,
        &TaskFilter {
            after_seq,
            limit,
            ..TaskFilter::default()
        },
    )
    .unwrap()
}

fn ids(page: &TaskPage) -> (Vec<&str>, Vec<&str>, Option<&str>) {
    (
        page.tasks.iter().map(|t| t.id().as_str()).collect(),
        page.damaged
            .iter()
            .filter_map(|d| d.id.as_deref())
            .collect(),
        page.next_after.as_deref(),
    )
}

#[test]
fn a_list_skips_a_damaged_row_names_it_and_pages_past_it() {
    let conn = memory_db();
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        store(&conn, id, i as u64);
    }
    conn.execute_batch(
        "UPDATE tasks SET history = 'x' WHERE id = 'b'; \
         UPDATE tasks SET metadata = 'x' WHERE id = 'c'; \
         UPDATE tasks SET queue_seq = 'late' WHERE id = 'd';",
    )
    .unwrap();
    // `d`'s position is text, which SQLite orders after every integer.
    let first = page_of(&conn, None, 3);
    assert_eq!(ids(&first), (vec!["a"], vec!["b", "c"], Some("c")));
    let second = page_of(&conn, first.next_after.as_deref(), 3);
    assert_eq!(ids(&second), (vec!["e"], vec!["d"], Some("d")));
    let third = page_of(&conn, second.next_after.as_deref(), 3);
    assert_eq!(ids(&third), (vec![], vec![], None), "the pages end");
    assert_eq!(
        second.damaged[0].reason,
        "column `queue_seq`: expected an integer, found text"
    );
}

#[test]
fn a_page_filtered_by_status_still_names_its_damaged_rows() {
    let conn = memory_db();
    store(&conn, "a", 1);
    store(&conn, "b", 2);
    conn.execute_batch("UPDATE tasks SET tokens_used = 'many' WHERE id = 'b'")
        .unwrap();
    let page = list_tasks(
        &conn,
        &TaskFilter {
            status: Some(Status::Queued),
            limit: 10,
            ..TaskFilter::default()
        },
    )
    .unwrap();
    assert_eq!(ids(&page), (vec!["a"], vec!["b"], Some("b")));
}

#[test]
fn restore_refuses_damaged_live_rows_and_rows_of_unknown_status_only() {
    let conn = memory_db();
    store(&conn, "live", 1);
    store(&conn, "ok", 2);
    let done = edited(record("done", Status::Completed), |p| p.queue_seq = 3);
    upsert_task(&conn, &done).unwrap();
    conn.execute_batch("UPDATE tasks SET history = 'x' WHERE id = 'done'")
        .unwrap();
    let live = load_live_tasks(&conn, usize::MAX).unwrap();
    assert_eq!(
        live.iter().map(|t| t.id().as_str()).collect::<Vec<_>>(),
        ["live", "ok"],
        "a damaged final row does not stop a start"
    );

    conn.execute_batch(
        "UPDATE tasks SET history = 'x' WHERE id = 'live'; \
         UPDATE tasks SET status = 'queueD' WHERE id = 'ok';",
    )
    .unwrap();
    let Err(DbError::DamagedLive(rows)) = load_live_tasks(&conn, usize::MAX) else {
        panic!("a damaged live row was restored")
    };
    let named: Vec<_> = rows
        .iter()
        .map(|r| (r.id.as_deref().unwrap_or("?"), r.reason.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (
                "live",
                "column `history`: not a JSON list of {event, timestamp, details}"
            ),
            ("ok", "column `status`: unknown status `queueD`"),
        ]
    );
    let message = DbError::DamagedLive(rows).to_string();
    assert!(
        message.starts_with("2 stored task row(s) that may be live cannot be decoded"),
        "{message}"
    );
    assert!(message.contains("task \"live\" (row 1)"), "{message}");
}

#[test]
fn rows_of_unknown_status_are_found_whatever_their_type() {
    let conn = memory_db();
    for (i, status) in [
        "7",
        "x'00'",
        "'aaa'",
        "'completed2'",
        "'zzz'",
        "'cancelled'",
    ]
    .iter()
    .enumerate()
    {
        store(&conn, &format!("t{i}"), i as u64);
        conn.execute_batch(&format!(
            "UPDATE tasks SET status = {status} WHERE id = 't{i}'"
        ))
        .unwrap();
    }
    let Err(DbError::DamagedLive(rows)) = load_live_tasks(&conn, usize::MAX) else {
        panic!("rows of unknown status were left out")
    };
    let mut found: Vec<_> = rows.iter().filter_map(|r| r.id.as_deref()).collect();
    found.sort_unstable();
    assert_eq!(found, ["t0", "t1", "t2", "t3", "t4"]);
}

#[test]
fn rows_of_unknown_status_are_found_through_the_index() {
    let conn = memory_db();
    for range in super::reads::unknown_status_ranges() {
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE {range}"
            ))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().all(|step| step.contains("USING")),
            "{range}: {plan:?}"
        );
    }
}

#[test]
fn the_retention_sweep_reads_only_expired_final_tasks_through_its_index() {
    let conn = memory_db();
    let plan: Vec<String> = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            super::rows::DELETE_EXPIRED
        ))
        .unwrap()
        .query_map([1], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        plan,
        ["SEARCH tasks USING INDEX tasks_expiry (updated_at<?)"]
    );
    let at = |task: Task, ms: u64| edited(task, |p| p.updated_at_ms = ms);
    upsert_task(&conn, &at(record("old-done", Status::Completed), 10)).unwrap();
    upsert_task(&conn, &at(record("old-cancelled", Status::Cancelled), 10)).unwrap();
    upsert_task(&conn, &at(record("old-dead", Status::DeadLetter), 10)).unwrap();
    upsert_task(&conn, &at(record("old-queued", Status::Queued), 10)).unwrap();
    upsert_task(&conn, &at(record("new-done", Status::Completed), 30)).unwrap();
    assert_eq!(delete_expired(&conn, 20).unwrap(), 2);
    let left: Vec<String> = conn
        .prepare("SELECT id FROM tasks ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, ["new-done", "old-dead", "old-queued"]);
}

#[test]
fn a_count_row_that_cannot_be_decoded_is_left_out_and_named() {
    let conn = memory_db();
    store(&conn, "a", 1);
    conn.execute_batch(
        "UPDATE task_counts SET n = 'lots' WHERE status = 'completed' AND priority = 'low'",
    )
    .unwrap();
    let (counts, damaged) = count_by_status_priority(&conn).unwrap();
    assert_eq!(counts, [("queued".into(), "normal".into(), 1)]);
    assert_eq!(
        damaged,
        [DamagedRow {
            table: Table::TaskCounts,
            id: Some("completed/low".into()),
            rowid: None,
            reason: "column `n`: expected an integer, found text".into(),
        }]
    );
}

#[test]
fn the_restore_read_leaves_long_texts_in_storage_by_their_length_in_bytes() {
    let conn = memory_db();
    let task = record("a", Status::Queued)
        .with_description(Payload::from("héllo"))
        .with_metadata(Payload::from(r#"{"k":1}"#));
    upsert_task(&conn, &task).unwrap();
    let live = load_live_tasks(&conn, 6).unwrap();
    assert_eq!(
        *live[0].description(),
        Payload::from("héllo"),
        "6 bytes fit"
    );
    assert_eq!(*live[0].metadata(), Payload::Stored { len: 7 });
    let live = load_live_tasks(&conn, 5).unwrap();
    assert_eq!(*live[0].description(), Payload::Stored { len: 6 });
    assert_eq!(
        get_payload(&conn, "a").unwrap(),
        Some(("héllo".to_owned(), r#"{"k":1}"#.to_owned()))
    );
    assert_eq!(get_payload(&conn, "nope").unwrap(), None);
}

#[test]
fn description_heads_are_the_first_characters_of_the_tasks_found() {
    let conn = memory_db();
    let task = record("a", Status::Completed).with_description(Payload::from("ééééé and more"));
    upsert_task(&conn, &task).unwrap();
    let heads = description_heads(&conn, &["a".to_owned(), "gone".to_owned()], 3).unwrap();
    assert_eq!(heads, vec![("a".to_owned(), "ééé".to_owned())]);
}

#[test]
fn a_long_text_is_checked_when_it_is_read_back_and_one_that_is_not_text_at_restore() {
    let conn = memory_db();
    store(&conn, "t", 1);
    conn.execute_batch("UPDATE tasks SET metadata = '[\"not an object\"]' WHERE id = 't'")
        .unwrap();
    // Long: only its length is read at start; reading it back names the damage.
    let live = load_live_tasks(&conn, 4).unwrap();
    assert_eq!(*live[0].metadata(), Payload::Stored { len: 17 });
    let Err(DbError::Damaged(row)) = get_payload(&conn, "t") else {
        panic!("damaged metadata was given back")
    };
    assert_eq!(
        (row.id.as_deref(), row.rowid, row.reason.as_str()),
        (
            Some("t"),
            Some(1),
            "column `metadata`: JSON that is not an object"
        )
    );
    // A value that is not text is never taken for a length.
    conn.execute_batch("UPDATE tasks SET description = x'3132' WHERE id = 't'")
        .unwrap();
    let Err(DbError::DamagedLive(rows)) = load_live_tasks(&conn, 4) else {
        panic!("a description that is not text was restored")
    };
    assert_eq!(
        rows[0].reason,
        "column `description`: expected text, found NULL or a value of another type"
    );
}

/// The records a queue emits for `tasks` submitted at `now_ms`, as stored.
fn submitted(tasks: Vec<coordinator_queue::NewTask>, now_ms: u64) -> Vec<Task> {
    let mut queue = coordinator_queue::Queue::new(coordinator_queue::QueueConfig::default());
    for task in tasks {
        queue.submit(now_ms, task).unwrap();
    }
    queue
        .drain_changes()
        .into_iter()
        .map(|c| c.into_task())
        .collect()
}

#[test]
fn options_are_stored_with_their_edges_and_the_key_is_unique_per_submitter() {
    use coordinator_queue::NewTask;
    let conn = memory_db();
    let records = submitted(
        vec![
            NewTask::new("a", "x")
                .with_submitted_by("alice")
                .with_idempotency_key("k"),
            NewTask::new("later", "x").with_run_at(50),
            NewTask::new("b", "x").with_depends_on(["a", "later"]),
        ],
        10,
    );
    for task in &records {
        upsert_task(&conn, task).unwrap();
    }
    let live = load_live_tasks(&conn, 256).unwrap();
    assert_eq!(live, records);
    assert_eq!(dependents(&conn, "a").unwrap(), ["b"]);
    assert_eq!(dependents(&conn, "later").unwrap(), ["b"]);
    assert_eq!(
        task_by_key(&conn, "alice", "k").unwrap(),
        Some(("a".to_owned(), Priority::Normal, Status::Queued, 10))
    );
    assert_eq!(task_by_key(&conn, "bob", "k").unwrap(), None);
    assert_eq!(
        task_statuses(&conn, &["later".into(), "gone".into()]).unwrap(),
        [
            ("later".to_owned(), Some(Status::Scheduled)),
            ("gone".to_owned(), None)
        ]
    );
    // A second task with the key of the first is refused by the store itself.
    let again = submitted(
        vec![NewTask::new("a2", "x")
            .with_submitted_by("alice")
            .with_idempotency_key("k")],
        11,
    );
    assert!(upsert_task(&conn, &again[0]).is_err());
    // Another submitter's key is its own.
    let bob = submitted(
        vec![NewTask::new("b2", "x")
            .with_submitted_by("bob")
            .with_idempotency_key("k")],
        11,
    );
    upsert_task(&conn, &bob[0]).unwrap();
    // The dependencies' results, in order; none for one not completed.
    let done = edited(records[0].clone(), |p| {
        p.status = Status::Completed;
        p.outcome = Some(Completion {
            result: r#"{"n":1}"#.into(),
            tokens_used: None,
        });
    });
    upsert_task(&conn, &done).unwrap();
    assert_eq!(
        dependency_results(&conn, "b").unwrap(),
        [
            ("a".to_owned(), Some(r#"{"n":1}"#.to_owned())),
            ("later".to_owned(), None)
        ]
    );
    // The edges go with the task.
    conn.execute("DELETE FROM tasks WHERE id = 'b'", [])
        .unwrap();
    assert_eq!(dependents(&conn, "a").unwrap(), Vec::<String>::new());
    assert_eq!(counts_of(&conn, "waiting"), 0);
    assert_eq!(counts_of(&conn, "scheduled"), 1);
}

fn counts_of(conn: &Connection, status: &str) -> u64 {
    counts(conn)
        .into_iter()
        .filter(|(s, _, _)| s == status)
        .map(|(_, _, n)| n)
        .sum()
}

/// A scheduled record (run at `run_at_ms`) with place `queue_seq`.
fn scheduled(id: &str, run_at_ms: u64, queue_seq: u64) -> Task {
    edited(record(id, Status::Queued), |p| {
        p.status = Status::Scheduled;
        p.run_at_ms = Some(run_at_ms);
        p.queue_seq = queue_seq;
    })
}

#[test]
fn a_version_3_database_is_migrated_and_takes_the_task_options() {
    let path = temp_db("migrate-v3");
    {
        let conn = database_at_version(&path, 3);
        // As version 3 wrote them: reclaim counts, no option columns.
        insert_old_row(&conn, "old-queued", "queued");
        insert_old_row(&conn, "old-done", "completed");
        conn.execute(
            "UPDATE tasks SET reclaim_count = 2, queue_seq = 7 WHERE id = 'old-queued'",
            [],
        )
        .unwrap();
    }
    let conn = open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let old = get_task(&conn, "old-queued").unwrap().unwrap();
    assert_eq!(
        (old.status(), old.reclaim_count(), old.run_at_ms()),
        (Status::Queued, 2, None)
    );
    assert!(old.depends_on().is_empty() && old.idempotency_key().is_none());
    // The start reads it, and places go on after the old ones.
    let live = load_restore_set(&conn, 256).unwrap();
    assert_eq!(live.tasks.len(), 1);
    assert_eq!(live.next_queue_seq, 8);
    // New rows with options: a dependency on the old completed task, and a
    // scheduled task read back through the new index.
    let dependent = edited(record("new", Status::Queued), |p| {
        p.status = Status::Waiting;
        p.depends_on = vec![TaskId::from("old-done")];
        p.queue_seq = 8;
    });
    upsert_task(&conn, &dependent).unwrap();
    assert_eq!(dependents(&conn, "old-done").unwrap(), ["new"]);
    upsert_task(&conn, &scheduled("later", 5_000, 9)).unwrap();
    let load = coordinator_queue::ScheduledLoad::new((0, 0), 10_000, 10);
    let (page, damaged) = load_scheduled(&conn, &load, 256).unwrap();
    assert!(damaged.is_empty());
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.id().as_str()).collect();
    assert_eq!((ids, page.next), (vec!["later"], None));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn scheduled_rows_are_read_a_page_at_a_time_in_run_at_order() {
    let conn = memory_db();
    // Out of order, a tie in run_at, and other statuses around them.
    for (id, run_at, seq) in [("c", 300, 3), ("a", 100, 1), ("b2", 200, 5), ("b1", 200, 2)] {
        upsert_task(&conn, &scheduled(id, run_at, seq)).unwrap();
    }
    upsert_task(
        &conn,
        &edited(record("q", Status::Queued), |p| p.queue_seq = 4),
    )
    .unwrap();
    let read = |from, until, limit| {
        let load = coordinator_queue::ScheduledLoad::new(from, until, limit);
        let (page, damaged) = load_scheduled(&conn, &load, 256).unwrap();
        assert!(damaged.is_empty());
        let ids: Vec<String> = page.tasks.iter().map(|t| t.id().to_string()).collect();
        (ids, page.next)
    };
    assert_eq!(
        read((0, 0), 1_000, 2),
        (vec!["a".into(), "b1".into()], Some((200, 5)))
    );
    assert_eq!(
        read((200, 5), 1_000, 2),
        (vec!["b2".into(), "c".into()], None)
    );
    // Only those due by `until`; the next one named whatever its time.
    assert_eq!(read((0, 0), 150, 10), (vec!["a".into()], Some((200, 2))));
    assert_eq!(read((250, 0), 260, 10), (vec![], Some((300, 3))));
    // The start keeps none of them, and places go on after all of them.
    let live = load_restore_set(&conn, 256).unwrap();
    let ids: Vec<&str> = live.tasks.iter().map(|t| t.id().as_str()).collect();
    assert_eq!((ids, live.next_queue_seq), (vec!["q"], 6));
    // The read is answered by the index.
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks INDEXED BY tasks_scheduled \
             WHERE status = 'scheduled' AND (run_at, queue_seq) >= (?1, ?2) AND run_at <= ?3 \
             ORDER BY run_at, queue_seq LIMIT 5",
            [0, 0, 1_000],
            |r| r.get(3),
        )
        .unwrap();
    assert!(
        plan.contains("tasks_scheduled") && plan.contains("run_at"),
        "{plan}"
    );
    println!("plan of the window read: {plan}");
}

#[test]
fn a_scheduled_dependency_of_a_waiting_task_is_restored_and_a_damaged_scheduled_row_refuses_the_start(
) {
    let conn = memory_db();
    upsert_task(&conn, &scheduled("dep", 9_000, 1)).unwrap();
    upsert_task(&conn, &scheduled("other", 9_000, 2)).unwrap();
    let waiting = edited(record("w", Status::Queued), |p| {
        p.status = Status::Waiting;
        p.depends_on = vec![TaskId::from("dep")];
        p.queue_seq = 3;
    });
    upsert_task(&conn, &waiting).unwrap();
    let live = load_restore_set(&conn, 256).unwrap();
    let mut ids: Vec<&str> = live.tasks.iter().map(|t| t.id().as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["dep", "w"]);
    conn.execute(
        "UPDATE tasks SET history = 'not json' WHERE id = 'other'",
        [],
    )
    .unwrap();
    assert!(matches!(
        load_restore_set(&conn, 256),
        Err(DbError::DamagedLive(rows)) if rows.len() == 1
    ));
}

/// The history text a SQLite row keeps for a task's usual life: event
/// numbers, the first timestamp and then differences, details written only
/// when they change.
#[test]
fn a_history_is_stored_compactly() {
    let entry = |event, timestamp_ms, details: &str| HistoryEntry {
        event,
        timestamp_ms,
        details: details.into(),
    };
    let history = vec![
        entry(HistoryEvent::Submitted, 1_795_650_951_933, ""),
        entry(
            HistoryEvent::Assigned,
            1_795_650_952_002,
            "agent=a \"1\" generation=1",
        ),
        entry(
            HistoryEvent::Accepted,
            1_795_650_952_017,
            "agent=a \"1\" generation=1",
        ),
        entry(
            HistoryEvent::Completed,
            1_795_650_952_017,
            "agent=a \"1\" generation=1",
        ),
        entry(HistoryEvent::Released, 1_795_650_952_000, ""),
    ];
    let text = rows::history_text(&history);
    assert_eq!(
        text,
        r#"[0,1795650951933,1,69,"agent=a \"1\" generation=1",2,15,3,0,11,-17,""]"#
    );
    assert_eq!(rows::parse_history(&text), Some(history.clone()));
    // The form written before schema version 6 (and by PostgreSQL) still reads.
    assert_eq!(rows::parse_history(&history_json(&history)), Some(history));
    assert_eq!(rows::parse_history("[]"), Some(vec![]));
    // An unknown number, a missing time or a time that overflows is no history.
    for bad in [
        "[12,1]",
        "[0]",
        "[0,1,1]",
        "[0,1,\"x\",1,-2]",
        "[0,-1]",
        "[[0,1]]",
    ] {
        assert_eq!(rows::parse_history(bad), None, "{bad}");
    }
}

/// A state change rewrites only the columns that change after submission;
/// the queue position is written again only when the history says it moved.
#[test]
fn an_update_leaves_the_fixed_columns_and_the_queue_position_alone() {
    let conn = memory_db();
    let first = record("t", Status::Queued);
    upsert_task(&conn, &first).unwrap();
    // A record that disagrees on a fixed column: the stored one is kept.
    let assigned = edited(first.clone(), |p| {
        p.status = Status::Assigned;
        p.generation = 1;
        p.holder = Some(Holder {
            agent_id: "a".into(),
            assigned_at_ms: 5,
            last_alive_at_ms: 5,
        });
        p.submitted_by = Some("someone else".into());
        p.queue_seq = 99;
    });
    upsert_task(&conn, &assigned).unwrap();
    let back = get_task(&conn, "t").unwrap().unwrap();
    assert_eq!(back.status(), Status::Assigned);
    assert_eq!(back.assigned_to().map(|a| a.as_str()), Some("a"));
    assert_eq!(back.submitted_by(), first.submitted_by());
    assert_eq!(back.queue_seq(), first.queue_seq());
    // Released: the new position is written.
    let released = edited(first, |p| {
        p.queue_seq = 99;
        p.history.push(HistoryEntry {
            event: HistoryEvent::Released,
            timestamp_ms: 7,
            details: "".into(),
        });
    });
    upsert_task(&conn, &released).unwrap();
    let back = get_task(&conn, "t").unwrap().unwrap();
    assert_eq!(back, released);
}

/// A new file gets the small pages and the long automatic checkpoint; a file
/// made with SQLite's default pages keeps them, with a checkpoint of the
/// same size in bytes.
#[test]
fn a_new_file_has_small_pages_and_an_old_one_keeps_its_own() {
    let pragma = |conn: &Connection, name: &str| -> i64 {
        conn.pragma_query_value(None, name, |r| r.get(0)).unwrap()
    };
    let path = temp_db("pages");
    let conn = open(&path).unwrap();
    assert_eq!(pragma(&conn, "page_size"), PAGE_SIZE);
    assert_eq!(
        pragma(&conn, "wal_autocheckpoint"),
        WAL_CHECKPOINT_BYTES / PAGE_SIZE
    );
    drop(conn);
    let old = path.with_file_name("old.db");
    let conn = Connection::open(&old).unwrap();
    // Written with 4 KiB pages before this coordinator knew better.
    conn.execute_batch(&format!(
        "PRAGMA page_size = 4096; PRAGMA application_id = {APPLICATION_ID};"
    ))
    .unwrap();
    drop(conn);
    let conn = open(&old).unwrap();
    assert_eq!(pragma(&conn, "page_size"), 4096);
    assert_eq!(
        pragma(&conn, "wal_autocheckpoint"),
        WAL_CHECKPOINT_BYTES / 4096
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

proptest! {
    /// A history of any times reads back as it was written: each number,
    /// however large or negative its difference, is written exactly.
    #[test]
    fn a_history_of_any_times_reads_back_as_written(times in proptest::collection::vec(any::<u64>(), 1..6)) {
        let history: Vec<HistoryEntry> = times
            .iter()
            .map(|&timestamp_ms| HistoryEntry {
                event: HistoryEvent::Requeued,
                timestamp_ms,
                details: "".into(),
            })
            .collect();
        prop_assert_eq!(rows::parse_history(&rows::history_text(&history)), Some(history));
    }
}

#[test]
fn a_history_with_the_extreme_times_reads_back_as_written() {
    for times in [
        [0, u64::MAX],
        [u64::MAX, 0],
        [i64::MAX as u64, 0],
        [0, i64::MAX as u64 + 1],
        [10, 9],
    ] {
        let history: Vec<HistoryEntry> = times
            .iter()
            .map(|&timestamp_ms| HistoryEntry {
                event: HistoryEvent::Submitted,
                timestamp_ms,
                details: "x".into(),
            })
            .collect();
        assert_eq!(
            rows::parse_history(&rows::history_text(&history)),
            Some(history),
            "{times:?}"
        );
    }
}
