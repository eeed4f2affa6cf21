//! The submit options as the session answers them: lookups of what storage
//! knows, repeats of idempotency keys, and dependents' assignments.

use super::*;

fn submit_one(s: &mut Session, request: u64, task: NewTask) {
    s.handle_request(
        T0,
        RequestId::new(request),
        Request::Submit { tasks: vec![task] },
    );
}

fn receipts(outputs: &[Output]) -> Vec<Receipt> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Reply {
                answer: Answer::Submitted(r),
                ..
            } => Some(r.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The agent on connection 1 completes `task_id` (its first assignment).
fn complete_first(s: &mut Session, task_id: &str, result: serde_json::Value) {
    s.handle_message(
        T0,
        ConnId::new(1),
        AgentMessage::TaskComplete {
            task_id: task_id.into(),
            generation: 1,
            result,
            tokens_used: None,
        },
    );
}

fn keyed(id: &str, key: &str) -> NewTask {
    NewTask::new(id, "work")
        .with_submitted_by("alice")
        .with_idempotency_key(key)
}

#[test]
fn a_repeat_of_a_live_key_is_the_first_task_and_creates_nothing() {
    let mut s = session();
    submit_one(&mut s, 1, keyed("t1", "k"));
    // Not live yet: storage is asked, after the commits before it.
    let out = settle(&mut s);
    let Some(Output::Lookup { request, keys, .. }) = out.first().cloned() else {
        panic!("a lookup first: {out:?}")
    };
    assert_eq!(keys, vec![("alice".to_owned(), "k".to_owned())]);
    s.handle_looked_up(T0, request, Ok(Lookup::default()));
    let first = receipts(&settle(&mut s));
    assert_eq!(
        (first[0].task_id.as_str(), first[0].duplicate),
        ("t1", false)
    );
    // The repeat is answered from the live task, without a lookup or a record.
    submit_one(&mut s, 2, keyed("t2", "k"));
    let out = drain(&mut s);
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))));
    let again = receipts(&out);
    assert_eq!(
        (again[0].task_id.as_str(), again[0].duplicate),
        ("t1", true)
    );
    assert!(s.scheduler().queue().get(&TaskId::from("t2")).is_none());
}

#[test]
fn a_key_storage_knows_is_a_duplicate_of_the_stored_task() {
    let mut s = session();
    submit_one(&mut s, 1, keyed("t9", "k"));
    let Some(Output::Lookup { request, .. }) = settle(&mut s).first().cloned() else {
        panic!("a lookup")
    };
    let stored = Receipt {
        task_id: "t1".into(),
        priority: "normal",
        created_at_ms: T0 - 5,
        status: "queued",
        duplicate: true,
    };
    let lookup = Lookup {
        statuses: Vec::new(),
        keyed: vec![(("alice".into(), "k".into()), Some(stored.clone()))],
    };
    s.handle_looked_up(T0, request, Ok(lookup));
    assert_eq!(receipts(&settle(&mut s)), vec![stored]);
    assert!(s.scheduler().queue().is_empty());
}

#[test]
fn dependencies_not_live_are_looked_up_and_unknown_ones_refused() {
    let mut s = session();
    submit_one(
        &mut s,
        1,
        NewTask::new("t", "x").with_depends_on(["old", "nope"]),
    );
    let Some(Output::Lookup {
        request,
        dependencies,
        ..
    }) = settle(&mut s).first().cloned()
    else {
        panic!("a lookup")
    };
    assert_eq!(dependencies, vec!["old".to_owned(), "nope".to_owned()]);
    let lookup = Lookup {
        statuses: vec![
            ("old".into(), Some(Status::Completed)),
            ("nope".into(), None),
        ],
        keyed: Vec::new(),
    };
    s.handle_looked_up(T0, request, Ok(lookup));
    let out = settle(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply { answer: Answer::Refused(r), .. }]
            if r.kind == RefusalKind::Invalid && r.detail.contains("nope")),
        "{out:?}"
    );
    assert!(s.scheduler().queue().is_empty());
}

#[test]
fn a_dependency_that_ends_while_the_lookup_runs_is_seen() {
    let mut s = session();
    connect(&mut s, ConnId::new(1), "a1");
    submit(&mut s, 1, &["dep"]);
    settle(&mut s);
    // Live at the submission: not looked up; the key is.
    submit_one(&mut s, 2, keyed("t", "k").with_depends_on(["dep"]));
    let Some(Output::Lookup {
        request,
        dependencies,
        ..
    }) = settle(&mut s).first().cloned()
    else {
        panic!("a lookup")
    };
    assert!(dependencies.is_empty());
    // The dependency completes meanwhile and leaves memory.
    complete_first(&mut s, "dep", serde_json::json!({"n": 1}));
    settle(&mut s);
    assert!(s.scheduler().queue().get(&TaskId::from("dep")).is_none());
    s.handle_looked_up(T0, request, Ok(Lookup::default()));
    let receipts = receipts(&settle(&mut s));
    assert_eq!(receipts[0].status, "queued");
}

#[test]
fn a_dependents_assignment_carries_its_dependencies_results() {
    let mut s = session();
    submit(&mut s, 1, &["dep"]);
    submit_one(&mut s, 2, NewTask::new("t", "x").with_depends_on(["dep"]));
    let out = settle(&mut s);
    assert_eq!(receipts(&out)[1].status, "waiting");
    connect(&mut s, ConnId::new(1), "a1");
    complete_first(&mut s, "dep", serde_json::json!({"n": 1}));
    let out = settle(&mut s);
    assert!(
        out.contains(&Output::LoadPayload {
            task_id: TaskId::from("t")
        }),
        "{out:?}"
    );
    s.handle_payload_loaded(
        T0,
        &TaskId::from("t"),
        Ok(Some(LoadedPayload {
            description: "x".into(),
            metadata: r#"{"a":true}"#.into(),
            dependencies: vec![("dep".into(), Some(r#"{"n":1}"#.into()))],
        })),
    );
    let out = settle(&mut s);
    let metadata = out.iter().find_map(|o| match o {
        Output::Send {
            frame: Frame::Assign(a),
            ..
        } => a.metadata.as_inline().map(str::to_owned),
        _ => None,
    });
    let metadata: serde_json::Value = serde_json::from_str(&metadata.expect("assigned")).unwrap();
    assert_eq!(
        metadata,
        serde_json::json!({"a": true, "dependencies": {"dep": {"n": 1}}})
    );
}

#[test]
fn two_submits_of_one_key_racing_through_their_lookups_create_one_task() {
    let mut s = session();
    connect(&mut s, ConnId::new(1), "a1");
    // Both are looked up before either is answered: storage knows neither.
    submit_one(&mut s, 1, keyed("t1", "k"));
    submit_one(&mut s, 2, keyed("t2", "k"));
    let lookups: Vec<RequestId> = settle(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::Lookup { request, .. } => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(lookups.len(), 2, "both submits are looked up");
    s.handle_looked_up(T0, lookups[0], Ok(Lookup::default()));
    let first = receipts(&settle(&mut s));
    assert_eq!(
        (first[0].task_id.as_str(), first[0].duplicate),
        ("t1", false)
    );
    // The first task completes and leaves memory before the second lookup
    // (read before the first commit) comes back saying the key is free.
    complete_first(&mut s, "t1", serde_json::json!({}));
    settle(&mut s);
    assert!(s.scheduler().queue().get(&TaskId::from("t1")).is_none());
    s.handle_looked_up(T0, lookups[1], Ok(Lookup::default()));
    let out = settle(&mut s);
    let again = receipts(&out);
    assert_eq!(
        (again[0].task_id.as_str(), again[0].duplicate),
        ("t1", true),
        "{out:?}"
    );
    assert!(s.scheduler().queue().get(&TaskId::from("t2")).is_none());
}
