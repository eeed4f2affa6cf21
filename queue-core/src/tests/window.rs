//! Unit tests of the window of scheduled tasks kept in memory.

use super::*;
use crate::testing::MemoryStore;

const AHEAD_MS: u64 = 60_000;

fn windowed(max_tasks: usize) -> QueueConfig {
    QueueConfig::default().with_scheduled_window(Some(ScheduledWindow::new(AHEAD_MS, max_tasks)))
}

fn id(s: &str) -> TaskId {
    TaskId::from(s)
}

fn later(name: &str, run_at_ms: u64) -> NewTask {
    NewTask::new(name, "x").with_run_at(run_at_ms)
}

/// Persists, then does what a shell does at `now_ms`: the timeout, and every
/// read the queue asks for, answered from `store`. Returns the tasks released.
fn drive(q: &mut Queue, store: &mut MemoryStore, now_ms: u64) -> Vec<TaskId> {
    store.persist(q).unwrap();
    let mut released = Vec::new();
    for _ in 0..100 {
        q.handle_timeout(now_ms);
        released.extend(std::iter::from_fn(|| q.poll_released()));
        store.persist(q).unwrap();
        let Some(load) = q.poll_load(now_ms) else {
            return released;
        };
        let page = store.load_scheduled(&load);
        q.handle_scheduled_loaded(now_ms, page);
    }
    panic!("the queue keeps asking for reads");
}

/// Runs the clock from `from_ms` to `to_ms`, waking when the queue says.
fn run_until(q: &mut Queue, store: &mut MemoryStore, from_ms: u64, to_ms: u64) -> Vec<TaskId> {
    let mut now = from_ms;
    let mut released = drive(q, store, now);
    for _ in 0..10_000 {
        match q.poll_timeout() {
            Some(at) if at <= to_ms => {
                assert!(at >= now || at == 0, "a wake-up in the past: {at} < {now}");
                now = now.max(at);
                released.extend(drive(q, store, now));
            }
            _ => return released,
        }
    }
    panic!("no progress");
}

#[test]
fn a_far_future_task_leaves_memory_and_a_near_one_stays() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    q.submit(T0, later("far", T0 + 10 * AHEAD_MS)).unwrap();
    q.submit(T0, later("near", T0 + 1_000)).unwrap();
    // Its record goes out first; it leaves memory at the next timeout (at once).
    assert_eq!(q.poll_timeout(), Some(0));
    let released = drive(&mut q, &mut store, T0);
    assert!(released.is_empty());
    assert!(q.get(&id("far")).is_none());
    assert_eq!(q.get(&id("near")).unwrap().status(), Status::Scheduled);
    assert_eq!(q.scheduled_in_memory(), 1);
    assert_eq!(store.get(&id("far")).unwrap().status(), Status::Scheduled);
    assert_eq!(q.stored_from(), Some((T0 + 10 * AHEAD_MS, 0)));
    assert_eq!(q.len(), 1);
    // Next wake-up: the near task's time.
    assert_eq!(q.poll_timeout(), Some(T0 + 1_000));
    assert_eq!(q.poll_load(T0 + 1_000), None);
}

#[test]
fn a_stored_task_is_read_back_when_it_comes_within_the_window_and_runs_on_time() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    let far = T0 + 10 * AHEAD_MS;
    q.submit(T0, later("far", far)).unwrap();
    drive(&mut q, &mut store, T0);
    // The read is due when its run_at comes within the window, not before.
    assert_eq!(q.poll_timeout(), Some(far - AHEAD_MS));
    assert_eq!(q.poll_load(far - AHEAD_MS - 1), None);
    let load = q.poll_load(far - AHEAD_MS).unwrap();
    assert_eq!(load, ScheduledLoad::new((far, 0), far, 100));
    // One read at a time.
    assert_eq!(q.poll_load(far - AHEAD_MS), None);
    assert_eq!(q.poll_timeout(), None);
    let page = store.load_scheduled(&load);
    q.handle_scheduled_loaded(far - AHEAD_MS, page);
    assert_eq!(q.get(&id("far")).unwrap().status(), Status::Scheduled);
    assert_eq!(q.stored_from(), None);
    assert_eq!(q.poll_timeout(), Some(far));
    assert_eq!(drive(&mut q, &mut store, far), vec![id("far")]);
    assert_eq!(store.get(&id("far")).unwrap().status(), Status::Queued);
}

#[test]
fn at_most_max_tasks_stay_in_memory_and_all_run_in_run_at_order() {
    let mut q = Queue::new(windowed(3));
    let mut store = MemoryStore::new();
    // Submitted out of order, all within the window.
    let times = [9, 3, 7, 1, 8, 2, 6, 4, 5, 10];
    for (i, t) in times.iter().enumerate() {
        q.submit(T0, later(&format!("t{t}"), T0 + t * 100)).unwrap();
        drive(&mut q, &mut store, T0);
        assert!(q.scheduled_in_memory() <= 3, "after submit {i}");
    }
    assert_eq!(q.scheduled_in_memory(), 3);
    let in_memory: Vec<bool> = (1..=10)
        .map(|t| q.get(&id(&format!("t{t}"))).is_some())
        .collect();
    assert_eq!(
        in_memory,
        [true, true, true, false, false, false, false, false, false, false],
        "the earliest three"
    );
    let released = run_until(&mut q, &mut store, T0, T0 + 2_000);
    let expected: Vec<TaskId> = (1..=10).map(|t| id(&format!("t{t}"))).collect();
    assert_eq!(released, expected);
    let order: Vec<TaskId> = q.queued_in_order().map(|t| t.id.clone()).collect();
    assert_eq!(order, expected, "lane order follows run_at");
}

#[test]
fn a_dependency_left_in_storage_counts_as_live() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    let far = T0 + 10 * AHEAD_MS;
    q.submit(T0, later("far", far)).unwrap();
    drive(&mut q, &mut store, T0);
    assert!(q.get(&id("far")).is_none());
    // Unknown without what storage says; waiting with it.
    let dependent = NewTask::new("after", "x").with_depends_on(["far"]);
    assert_eq!(
        q.submit(T0, dependent.clone()).unwrap_err(),
        SubmitError::UnknownDependency(id("far"))
    );
    let mut dependent = dependent;
    dependent
        .settled_dependencies
        .push((id("far"), Status::Scheduled));
    assert_eq!(q.submit(T0, dependent).unwrap().status(), Status::Waiting);
    // Read back, released and completed: the dependent is released.
    run_until(&mut q, &mut store, T0, far);
    let agent = agent("a");
    let g = q.assign(far, &id("far"), &agent).unwrap();
    q.complete(far, &id("far"), &agent, g, done("{}")).unwrap();
    assert_eq!(q.get(&id("after")).unwrap().status(), Status::Queued);
    assert_eq!(q.poll_released(), Some(id("after")));
}

#[test]
fn cancelling_a_stored_task_cancels_its_dependents() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    q.submit(T0, later("far", T0 + 10 * AHEAD_MS)).unwrap();
    drive(&mut q, &mut store, T0);
    let mut dependent = NewTask::new("after", "x").with_depends_on(["far"]);
    dependent
        .settled_dependencies
        .push((id("far"), Status::Scheduled));
    q.submit(T0, dependent).unwrap();
    store.persist(&mut q).unwrap();
    let record = store.get(&id("far")).unwrap().clone();
    q.cancel_stored(T0 + 1, record).unwrap();
    let changes = store.persist(&mut q).unwrap();
    assert_eq!(
        statuses(&changes),
        vec![
            ("far".into(), Status::Cancelled),
            ("after".into(), Status::Cancelled)
        ]
    );
    assert_eq!(
        store.get(&id("after")).unwrap().last_error(),
        Some("dependency_failed:far")
    );
    assert!(q.is_empty());
}

#[test]
fn a_stale_record_of_a_task_read_back_since_is_not_cancelled_again() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    let far = T0 + 10 * AHEAD_MS;
    q.submit(T0, later("far", far)).unwrap();
    drive(&mut q, &mut store, T0);
    let stale = store.get(&id("far")).unwrap().clone();
    // Read back, released, completed: what storage said before is stale.
    run_until(&mut q, &mut store, T0, far);
    let agent = agent("a");
    let g = q.assign(far, &id("far"), &agent).unwrap();
    q.complete(far, &id("far"), &agent, g, done("{}")).unwrap();
    store.persist(&mut q).unwrap();
    assert_eq!(
        q.cancel_stored(far, stale),
        Err(TaskError::NotFound(id("far")))
    );
    assert!(q.drain_changes().is_empty());
}

#[test]
fn a_row_of_a_task_that_ended_during_the_read_is_not_brought_back() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    let far = T0 + 10 * AHEAD_MS;
    q.submit(T0, later("far", far)).unwrap();
    drive(&mut q, &mut store, T0);
    let load = q.poll_load(far - AHEAD_MS).unwrap();
    // The read saw the row; the task is cancelled before the answer comes.
    let page = store.load_scheduled(&load);
    let record = store.get(&id("far")).unwrap().clone();
    q.cancel_stored(far - AHEAD_MS, record).unwrap();
    store.persist(&mut q).unwrap();
    q.handle_scheduled_loaded(far - AHEAD_MS, page);
    assert!(q.get(&id("far")).is_none());
    assert!(q.is_empty());
}

#[test]
fn a_task_evicted_during_a_read_is_read_by_the_next_one() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    let far = T0 + 10 * AHEAD_MS;
    q.submit(T0, later("a", far)).unwrap();
    drive(&mut q, &mut store, T0);
    let now = far - AHEAD_MS;
    let load = q.poll_load(now).unwrap();
    let page = store.load_scheduled(&load);
    // Submitted after the read: it goes to storage, and the read missed it.
    q.submit(now, later("b", far + 5 * AHEAD_MS)).unwrap();
    q.submit(now, later("c", far - 1)).unwrap();
    q.handle_timeout(now);
    store.persist(&mut q).unwrap();
    q.handle_scheduled_loaded(now, page);
    assert!(q.get(&id("a")).is_some());
    assert!(q.get(&id("c")).is_some());
    assert!(q.get(&id("b")).is_none());
    let released = run_until(&mut q, &mut store, now, far + 5 * AHEAD_MS);
    assert_eq!(released, vec![id("c"), id("a"), id("b")]);
}

#[test]
fn a_failed_read_is_tried_again_a_second_later() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    let far = T0 + 10 * AHEAD_MS;
    q.submit(T0, later("far", far)).unwrap();
    drive(&mut q, &mut store, T0);
    let now = far - AHEAD_MS;
    let load = q.poll_load(now).unwrap();
    q.handle_scheduled_load_failed(now);
    assert_eq!(q.poll_timeout(), Some(now + 1_000));
    assert_eq!(q.poll_load(now + 999), None);
    let again = q.poll_load(now + 1_000).unwrap();
    assert_eq!((again.from, again.limit), (load.from, load.limit));
}

#[test]
fn a_windowed_restore_leaves_scheduled_tasks_in_storage_and_reads_the_due_ones() {
    let mut q = Queue::new(windowed(100));
    let mut store = MemoryStore::new();
    q.submit(T0, later("far", T0 + 10 * AHEAD_MS)).unwrap();
    q.submit(T0, later("near", T0 + 1_000)).unwrap();
    q.submit(T0, later("due", T0 + 10)).unwrap();
    q.submit(T0, NewTask::new("queued", "x")).unwrap();
    q.submit(T0, NewTask::new("waits", "x").with_depends_on(["far"]))
        .unwrap();
    drive(&mut q, &mut store, T0);
    let now = T0 + 500;
    let mut restored = store.restore_queue_windowed(windowed(100)).unwrap();
    // The dependency of a waiting task comes with it, then leaves memory.
    assert!(restored.get(&id("far")).is_some());
    assert!(restored.get(&id("near")).is_none());
    assert_eq!(restored.poll_timeout(), Some(0));
    let released = drive(&mut restored, &mut store, now);
    assert_eq!(released, vec![id("due")]);
    assert!(restored.get(&id("far")).is_none());
    assert_eq!(
        restored.get(&id("near")).unwrap().status(),
        Status::Scheduled
    );
    assert_eq!(
        restored.get(&id("waits")).unwrap().status(),
        Status::Waiting
    );
    // New tasks take places after every stored one.
    restored.submit(now, NewTask::new("new", "x")).unwrap();
    let seq = restored.get(&id("new")).unwrap().queue_seq;
    assert!(store.records().all(|t| t.queue_seq < seq));
}
