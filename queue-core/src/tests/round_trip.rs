//! With the `serde` feature: every record the queue hands out survives a JSON
//! round trip, names on the wire are the stable `as_str` names, and bad records
//! are refused.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::*;

fn through_json<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let text = serde_json::to_string(value).expect("serializes");
    serde_json::from_str(&text).expect("deserializes")
}

/// A queue whose records use every part of a task: lanes, capabilities,
/// metadata, a submitter, a deadline, a holder, a history with a reclaim and a
/// retry, a completion with tokens, a cancel. Returns it with its changes.
fn busy_queue() -> (Queue, Vec<Change>) {
    let mut q = queue();
    let (a1, a2) = (agent("a1"), agent("a2"));
    let mut new = NewTask::new("t1", "build the docs")
        .with_priority(Priority::High)
        .with_capabilities(["linux", "gpu"])
        .with_max_retries(2)
        .with_complete_by(T0 + 60_000);
    new.metadata = r#"{"repo":"x"}"#.to_owned();
    new.submitted_by = Some("ci".to_owned());
    q.submit(T0, new).unwrap();
    q.submit(T0, NewTask::new("t2", "lint").with_priority(Priority::Low))
        .unwrap();
    q.submit(T0, NewTask::new("t3", "test")).unwrap();
    q.submit(T0, NewTask::new("t5", "render").with_capabilities(["gpu"]))
        .unwrap();

    q.assign(T0 + 1, &TaskId::from("t1"), &a1).unwrap();
    q.accept(T0 + 2, &TaskId::from("t1"), &a1).unwrap();
    q.progress(T0 + 3, &TaskId::from("t1"), &a1).unwrap();
    let reclaimed = q.reclaim(T0 + 4, &TaskId::from("t1"), ReclaimReason::Disconnected);
    assert_eq!(reclaimed.unwrap().outcome, ReclaimOutcome::Requeued);
    let generation = q.assign(T0 + 5, &TaskId::from("t1"), &a2).unwrap();
    let failed = q.fail(T0 + 6, &TaskId::from("t1"), &a2, generation, "disk full");
    assert_eq!(failed, Ok(FailOutcome::Retried));
    let generation = q.assign(T0 + 7, &TaskId::from("t1"), &a1).unwrap();
    q.accept(T0 + 8, &TaskId::from("t1"), &a1).unwrap();
    q.complete(
        T0 + 9,
        &TaskId::from("t1"),
        &a1,
        generation,
        Completion {
            result: r#"{"ok":true}"#.to_owned(),
            tokens_used: Some(42),
        },
    )
    .unwrap();
    q.cancel(T0 + 10, &TaskId::from("t2")).unwrap();
    q.assign(T0 + 11, &TaskId::from("t3"), &a2).unwrap();
    let changes = q.drain_changes();
    (q, changes)
}

#[test]
fn every_change_survives_a_json_round_trip() {
    let (_, changes) = busy_queue();
    let kinds = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count();
    assert!(kinds(|c| matches!(c, Change::Updated(_))) > 0);
    assert!(kinds(|c| matches!(c, Change::Touched(_))) > 0);
    assert_eq!(kinds(|c| matches!(c, Change::Finalized(_))), 2);
    for change in &changes {
        assert_eq!(&through_json(change), change);
    }
}

#[test]
fn a_new_task_survives_a_json_round_trip() {
    let mut new = NewTask::new("t", "x")
        .with_priority(Priority::Urgent)
        .with_capabilities(["b", "a"])
        .with_max_retries(0)
        .with_complete_by(T0);
    new.submitted_by = Some("ops".to_owned());
    assert_eq!(through_json(&new), new);
    let plain = NewTask::new("t", "x");
    assert_eq!(through_json(&plain), plain);
}

#[test]
fn a_queue_restored_from_json_records_carries_on_like_one_restored_from_the_records() {
    let (original, _) = busy_queue();
    // What is still live: t3 held by a2, t5 queued.
    let records: Vec<Task> = ["t3", "t5"]
        .iter()
        .map(|id| original.get(&TaskId::from(*id)).expect("live").clone())
        .collect();
    let mut direct = Queue::restore(QueueConfig::default(), records.clone()).unwrap();
    let mut via_json =
        Queue::restore(QueueConfig::default(), records.iter().map(through_json)).unwrap();
    assert_eq!(direct.stats(), via_json.stats());

    let a2 = agent("a2");
    for q in [&mut direct, &mut via_json] {
        q.accept(T0 + 20, &TaskId::from("t3"), &a2).unwrap();
        q.submit(T0 + 21, NewTask::new("t4", "more")).unwrap();
        let reclaimed = q.reclaim(T0 + 22, &TaskId::from("t3"), ReclaimReason::Stuck);
        assert_eq!(reclaimed.unwrap().agent_id, a2);
        q.assign(T0 + 23, &TaskId::from("t5"), &a2).unwrap();
    }
    assert_eq!(direct.drain_changes(), via_json.drain_changes());
    assert_eq!(direct.stats(), via_json.stats());
}

#[test]
fn names_on_the_wire_are_the_stable_names() {
    let name = |v: Value| v.as_str().map(str::to_owned);
    for p in Priority::ALL {
        assert_eq!(name(json!(p)).as_deref(), Some(p.as_str()));
    }
    for s in Status::ALL {
        assert_eq!(name(json!(s)).as_deref(), Some(s.as_str()));
    }
    for e in HistoryEvent::ALL {
        assert_eq!(name(json!(e)).as_deref(), Some(e.as_str()));
    }
    for r in [
        ReclaimReason::Disconnected,
        ReclaimReason::AcceptTimeout,
        ReclaimReason::Stuck,
        ReclaimReason::RecoveryExpired,
        ReclaimReason::SlowConsumer,
    ] {
        assert_eq!(name(json!(r)).as_deref(), Some(r.as_str()));
    }
    assert_eq!(json!(TaskId::from("t1")), json!("t1"));
    assert_eq!(json!(AgentId::from("a1")), json!("a1"));

    let (_, changes) = busy_queue();
    let touched = changes
        .iter()
        .find(|c| matches!(c, Change::Touched(_)))
        .unwrap();
    let value = json!(touched);
    assert_eq!(value["touched"]["id"], json!("t1"));
    assert_eq!(value["touched"]["status"], json!("working"));
}

#[test]
fn a_record_with_unsorted_capabilities_reads_as_the_sorted_set() {
    let (q, _) = busy_queue();
    let mut value = json!(q.get(&TaskId::from("t3")).unwrap());
    value["needed_capabilities"] = json!(["linux", "gpu", "linux"]);
    let task: Task = serde_json::from_value(value).unwrap();
    assert_eq!(task.needed_capabilities().names(), ["gpu", "linux"]);
}

#[test]
fn an_inconsistent_record_does_not_deserialize() {
    let (q, _) = busy_queue();
    let mut value = json!(q.get(&TaskId::from("t3")).unwrap());
    assert_eq!(value["status"], json!("assigned"));
    value["holder"] = Value::Null;
    let err = serde_json::from_value::<Task>(value).unwrap_err();
    assert!(err.to_string().contains("has no holder"), "{err}");
}

#[test]
fn bad_records_are_refused_with_an_error() {
    let (q, _) = busy_queue();
    let good = json!(q.get(&TaskId::from("t3")).unwrap());
    let mut unknown_status = good.clone();
    unknown_status["status"] = json!("lost");
    let err = serde_json::from_value::<Task>(unknown_status).unwrap_err();
    assert!(err.to_string().contains("lost"), "{err}");

    let mut no_generation = good.clone();
    no_generation.as_object_mut().unwrap().remove("generation");
    let err = serde_json::from_value::<Task>(no_generation).unwrap_err();
    assert!(err.to_string().contains("generation"), "{err}");

    let err = serde_json::from_value::<Change>(json!({"deleted": good})).unwrap_err();
    assert!(err.to_string().contains("deleted"), "{err}");
}

#[test]
fn a_text_is_a_string_on_the_wire_and_a_stored_one_its_length() {
    let mut q = Queue::new(QueueConfig {
        max_inline_payload_bytes: 4,
        ..QueueConfig::default()
    });
    q.submit(T0, NewTask::new("t", "long enough")).unwrap();
    let submitted = q.drain_changes().pop().unwrap();
    assert_eq!(json!(submitted.task())["description"], json!("long enough"));
    let kept = q.get(&TaskId::from("t")).unwrap();
    assert_eq!(json!(kept)["description"], json!({"stored_bytes": 11}));
    assert_eq!(json!(kept)["metadata"], json!("{}"));
    assert_eq!(&through_json(kept), kept);
}
