//! Tests of the list filters that the dashboard uses: capability and search.

use coordinator_queue::{NewTask, Queue, QueueConfig, Task};
use rusqlite::Connection;

use super::{list_tasks, TaskFilter};
use crate::server::db::{migrate, upsert_task};

fn db_with(tasks: &[(&str, &str, &[&str])]) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    migrate(&conn, std::path::Path::new(":memory:")).unwrap();
    let mut queue = Queue::new(QueueConfig::default());
    for (id, description, caps) in tasks {
        queue
            .submit(
                1,
                NewTask::new(*id, *description).with_capabilities(caps.iter().copied()),
            )
            .unwrap();
    }
    for change in queue.drain_changes() {
        upsert_task(&conn, change.task()).unwrap();
    }
    conn
}

fn ids(tasks: Vec<Task>) -> Vec<String> {
    tasks.into_iter().map(|t| t.id().to_string()).collect()
}

fn list(conn: &Connection, capability: Option<&str>, search: Option<&str>) -> Vec<String> {
    let filter = TaskFilter {
        capability: capability.map(str::to_owned),
        search: search.map(str::to_owned),
        limit: 100,
        ..TaskFilter::default()
    };
    ids(list_tasks(conn, &filter).unwrap().tasks)
}

#[test]
fn capability_and_prefix_search_filter_the_list() {
    let conn = db_with(&[
        ("t-1", "Build the docs", &["linux"]),
        ("t-2", "build the app", &["linux", "gpu"]),
        ("x_3", "50% done", &[]),
        ("x-4", "deploy", &["gpu"]),
    ]);
    assert_eq!(list(&conn, Some("gpu"), None), ["t-2", "x-4"]);
    assert_eq!(list(&conn, Some("linu"), None), Vec::<String>::new());
    // Description prefix, ASCII case ignored; id prefix.
    assert_eq!(list(&conn, None, Some("build")), ["t-1", "t-2"]);
    assert_eq!(list(&conn, None, Some("t-")), ["t-1", "t-2"]);
    assert_eq!(list(&conn, Some("linux"), Some("BUILD THE A")), ["t-2"]);
    // `_` and `%` are literal.
    assert_eq!(list(&conn, None, Some("x_")), ["x_3"]);
    assert_eq!(list(&conn, None, Some("50%")), ["x_3"]);
    assert_eq!(list(&conn, None, Some("5_%")), Vec::<String>::new());
}
