//! Unit tests of the agent session: exact output sequences for each protocol
//! path.

use serde_json::{json, Value};

use super::{AgentSession, HeldTask, Outcome, Output, ReportError, RunId, SessionConfig, NOT_HELD};
use crate::protocol::{AgentMessage, CoordinatorMessage, CurrentTask, ErrorCode};

const GRACE_MS: u64 = 1_000;

fn config() -> SessionConfig {
    SessionConfig {
        shutdown_grace_ms: GRACE_MS,
    }
}

fn task(task_id: &str, generation: u64) -> HeldTask {
    HeldTask {
        task_id: task_id.into(),
        generation,
        description: format!("do {task_id}"),
        metadata: json!({"k": 1}),
        assigned_at: 7,
        outcome: None,
    }
}

fn with_outcome(mut task: HeldTask, outcome: Outcome) -> HeldTask {
    task.outcome = Some(outcome);
    task
}

fn done() -> Outcome {
    Outcome::Complete {
        result: json!({"ok": true}),
        tokens_used: Some(3),
    }
}

fn broke() -> Outcome {
    Outcome::Failed {
        error: "exit status 3".into(),
    }
}

fn assign(task_id: &str, generation: u64) -> CoordinatorMessage {
    let t = task(task_id, generation);
    CoordinatorMessage::TaskAssign {
        task_id: t.task_id,
        description: t.description,
        metadata: t.metadata,
        generation: t.generation,
        assigned_at: t.assigned_at,
    }
}

fn ack(task_id: &str, status: &str) -> CoordinatorMessage {
    CoordinatorMessage::TaskAck {
        task_id: task_id.into(),
        status: status.into(),
    }
}

fn cont(task_id: &str, generation: u64) -> CoordinatorMessage {
    CoordinatorMessage::TaskContinue {
        task_id: task_id.into(),
        generation,
    }
}

fn reassign(task_id: &str) -> CoordinatorMessage {
    CoordinatorMessage::TaskReassign {
        task_id: task_id.into(),
    }
}

/// What identify names as the held task.
fn current(task_id: &str, generation: u64) -> Option<CurrentTask> {
    Some(CurrentTask {
        task_id: task_id.into(),
        generation,
    })
}

fn send(message: AgentMessage) -> Output {
    Output::Send(message)
}

fn accepted(task_id: &str) -> Output {
    send(AgentMessage::TaskAccepted {
        task_id: task_id.into(),
    })
}

fn recovering(task_id: &str) -> Output {
    send(AgentMessage::TaskRecovering {
        task_id: task_id.into(),
    })
}

fn rejected(task_id: &str, reason: &str) -> Output {
    send(AgentMessage::TaskRejected {
        task_id: task_id.into(),
        reason: Some(reason.into()),
    })
}

fn completed(task_id: &str, generation: u64) -> Output {
    send(AgentMessage::TaskComplete {
        task_id: task_id.into(),
        generation,
        result: json!({"ok": true}),
        tokens_used: Some(3),
    })
}

/// A new job of `task` under run `run`.
fn start(run: u64, task: HeldTask) -> Output {
    Output::StartJob {
        run: RunId(run),
        task,
        restored: false,
    }
}

/// The job of a task restored from the state hook, under run `run`.
fn resume(run: u64, task: HeldTask) -> Output {
    Output::StartJob {
        run: RunId(run),
        task,
        restored: true,
    }
}

fn cancel_job(run: u64, task_id: &str) -> Output {
    Output::CancelJob {
        run: RunId(run),
        task_id: task_id.into(),
    }
}

/// The running job ends with `outcome`.
fn finish(s: &mut AgentSession, outcome: Outcome) {
    let run = s.running.expect("a job runs");
    s.handle_job_finished(run, outcome)
        .expect("the running job's outcome is taken");
}

/// The running job reports `progress`.
fn progress(s: &mut AgentSession, progress: Value) {
    let run = s.running.expect("a job runs");
    s.handle_progress(run, progress)
        .expect("the running job's progress is taken");
}

/// Every output until there is none, each save reported as done.
fn drain(s: &mut AgentSession) -> Vec<Output> {
    let mut outputs = Vec::new();
    while let Some(output) = s.poll_output() {
        let save = matches!(output, Output::SaveState(_) | Output::ClearState);
        outputs.push(output);
        if save {
            s.handle_state_saved(Ok(()));
        }
    }
    outputs
}

/// A connected session with nothing held.
fn idle() -> AgentSession {
    let mut s = AgentSession::new(config(), None);
    s.handle_connected();
    assert_eq!(drain(&mut s), []);
    s
}

/// A connected session running t1 (generation 1).
fn running_t1() -> AgentSession {
    let mut s = idle();
    s.handle_message(assign("t1", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(task("t1", 1)),
            accepted("t1"),
            start(1, task("t1", 1)),
        ]
    );
    s
}

/// A connected session whose t1 outcome went out and waits for its ack.
fn reported_t1() -> AgentSession {
    let mut s = running_t1();
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            completed("t1", 1),
        ]
    );
    s
}

#[test]
fn a_task_is_saved_accepted_run_reported_and_cleared_on_ack() {
    let mut s = running_t1();
    progress(&mut s, json!(0.5));
    assert_eq!(
        drain(&mut s),
        [send(AgentMessage::TaskProgress {
            task_id: "t1".into(),
            progress: Some(json!(0.5)),
        })]
    );
    s.handle_message(ack("t1", "accepted"));
    assert_eq!(drain(&mut s), []);
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            completed("t1", 1),
        ]
    );
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState]);
    // Free again: the next task is taken.
    s.handle_message(assign("t2", 4));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(task("t2", 4)),
            accepted("t2"),
            start(2, task("t2", 4)),
        ]
    );
}

#[test]
fn nothing_is_sent_before_the_state_file_write_is_reported() {
    let mut s = idle();
    s.handle_message(assign("t1", 1));
    assert_eq!(s.poll_output(), Some(Output::SaveState(task("t1", 1))));
    assert_eq!(s.poll_output(), None);
    assert_eq!(s.poll_output(), None);
    s.handle_state_saved(Ok(()));
    assert_eq!(s.poll_output(), Some(accepted("t1")));
    assert_eq!(s.poll_output(), Some(start(1, task("t1", 1))));
    assert_eq!(s.poll_output(), None);
}

#[test]
fn a_task_that_cannot_be_saved_is_rejected_and_not_run() {
    let mut s = idle();
    s.handle_message(assign("t1", 1));
    assert_eq!(s.poll_output(), Some(Output::SaveState(task("t1", 1))));
    s.handle_state_saved(Err("disk full".into()));
    assert_eq!(
        drain(&mut s),
        [rejected("t1", "cannot save the task: disk full")]
    );
    // Nothing is held: the next task is taken.
    s.handle_message(assign("t2", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(task("t2", 1)),
            accepted("t2"),
            start(1, task("t2", 1)),
        ]
    );
}

#[test]
fn a_failed_update_of_the_state_file_changes_nothing() {
    let mut s = running_t1();
    finish(&mut s, done());
    assert_eq!(
        s.poll_output(),
        Some(Output::SaveState(with_outcome(task("t1", 1), done())))
    );
    s.handle_state_saved(Err("disk full".into()));
    assert_eq!(drain(&mut s), [completed("t1", 1)]);
}

#[test]
fn a_failed_command_is_reported_as_task_failed() {
    let mut s = running_t1();
    finish(&mut s, broke());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), broke())),
            send(AgentMessage::TaskFailed {
                task_id: "t1".into(),
                generation: 1,
                error: Some("exit status 3".into()),
                reason: None,
            }),
        ]
    );
    s.handle_message(ack("t1", "retried"));
    assert_eq!(drain(&mut s), [Output::ClearState]);
}

#[test]
fn a_task_arriving_while_busy_is_rejected() {
    let mut s = running_t1();
    s.handle_message(assign("t2", 1));
    assert_eq!(drain(&mut s), [rejected("t2", "busy")]);
    s.handle_message(ack("t2", "rejected"));
    assert_eq!(drain(&mut s), []);
    // Still busy while the outcome waits for its ack.
    finish(&mut s, done());
    let _ = drain(&mut s);
    s.handle_message(assign("t3", 1));
    assert_eq!(drain(&mut s), [rejected("t3", "busy")]);
}

#[test]
fn stale_and_unknown_acks_are_ignored() {
    let mut s = running_t1();
    // Not while the command runs, not "accepted", not another task's.
    s.handle_message(ack("t1", "complete"));
    s.handle_message(ack("other", "complete"));
    assert_eq!(drain(&mut s), []);
    finish(&mut s, done());
    let _ = drain(&mut s);
    s.handle_message(ack("t1", "accepted"));
    s.handle_message(ack("other", "complete"));
    s.handle_message(ack("other", "cancelled"));
    assert_eq!(drain(&mut s), []);
    // The outcome is still held: a reconnect resends it.
    s.handle_disconnected();
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            completed("t1", 1),
        ]
    );
}

#[test]
fn a_saved_task_is_recovered_then_continued_by_running_its_command() {
    let mut s = AgentSession::new(config(), Some(task("t1", 1)));
    assert_eq!(drain(&mut s), []);
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 2));
    assert_eq!(
        drain(&mut s),
        [Output::SaveState(task("t1", 2)), resume(1, task("t1", 2)),]
    );
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 2), done())),
            completed("t1", 2),
        ]
    );
}

#[test]
fn a_saved_outcome_is_reported_after_continue_with_the_new_generation() {
    let mut s = AgentSession::new(config(), Some(with_outcome(task("t1", 1), done())));
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 2));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 2), done())),
            completed("t1", 2),
        ]
    );
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState]);
}

#[test]
fn a_saved_task_reassigned_elsewhere_is_dropped() {
    let mut s = AgentSession::new(config(), Some(task("t1", 1)));
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(CoordinatorMessage::TaskReassign {
        task_id: "t1".into(),
    });
    assert_eq!(drain(&mut s), [Output::ClearState]);
    s.handle_message(assign("t2", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(task("t2", 1)),
            accepted("t2"),
            start(1, task("t2", 1)),
        ]
    );
}

#[test]
fn a_continue_for_a_task_not_held_is_rejected_and_a_reassign_ignored() {
    let mut s = AgentSession::new(config(), Some(task("t1", 1)));
    s.handle_connected();
    let _ = drain(&mut s);
    s.handle_message(cont("other", 5));
    s.handle_message(CoordinatorMessage::TaskReassign {
        task_id: "other".into(),
    });
    assert_eq!(drain(&mut s), [rejected("other", NOT_HELD)]);
    // The held task is untouched: its continue still resumes it.
    s.handle_message(cont("t1", 2));
    assert!(drain(&mut s).contains(&resume(1, task("t1", 2))));
}

#[test]
fn a_continue_for_an_assignment_never_received_is_rejected() {
    // The coordinator committed an assignment and stopped before sending it;
    // the one that took over re-attaches the task to us on identify.
    let mut s = idle();
    s.handle_message(cont("lost", 1));
    assert_eq!(drain(&mut s), [rejected("lost", NOT_HELD)]);
    // Still free for work.
    s.handle_message(assign("t2", 1));
    assert!(drain(&mut s).contains(&accepted("t2")));
}

#[test]
fn the_held_task_assigned_again_is_adopted_not_rejected() {
    let mut s = AgentSession::new(config(), Some(task("t1", 1)));
    s.handle_connected();
    let _ = drain(&mut s);
    s.handle_message(assign("t1", 3));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(task("t1", 3)),
            accepted("t1"),
            resume(1, task("t1", 3)),
        ]
    );
    // Assigned again while its command runs: adopted, the command goes on.
    s.handle_message(assign("t1", 4));
    assert_eq!(
        drain(&mut s),
        [Output::SaveState(task("t1", 4)), accepted("t1")]
    );
    // With an outcome: reported again.
    finish(&mut s, done());
    let _ = drain(&mut s);
    s.handle_message(assign("t1", 5));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 5), done())),
            accepted("t1"),
            completed("t1", 5),
        ]
    );
}

#[test]
fn an_outcome_made_while_disconnected_is_saved_and_reported_after_continue() {
    let mut s = running_t1();
    s.handle_disconnected();
    assert!(s.wants_connection());
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [Output::SaveState(with_outcome(task("t1", 1), done()))]
    );
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            completed("t1", 1),
        ]
    );
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState]);
}

#[test]
fn an_outcome_made_while_recovering_waits_for_continue() {
    let mut s = running_t1();
    s.handle_disconnected();
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [Output::SaveState(with_outcome(task("t1", 1), done()))]
    );
    s.handle_message(cont("t1", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            completed("t1", 1),
        ]
    );
}

#[test]
fn unsent_messages_are_dropped_on_disconnect() {
    let mut s = idle();
    s.handle_message(assign("t1", 1));
    assert_eq!(s.poll_output(), Some(Output::SaveState(task("t1", 1))));
    s.handle_state_saved(Ok(()));
    s.handle_disconnected();
    assert_eq!(drain(&mut s), [start(1, task("t1", 1))]);
}

#[test]
fn cancel_stops_the_running_job_clears_the_task_and_reports_once_the_job_is_dropped() {
    let mut s = running_t1();
    s.handle_message(CoordinatorMessage::TaskCancel {
        task_id: "t1".into(),
    });
    assert_eq!(drain(&mut s), [cancel_job(1, "t1"), Output::ClearState]);
    // Unknown or repeated cancels change nothing.
    s.handle_message(CoordinatorMessage::TaskCancel {
        task_id: "t1".into(),
    });
    s.handle_message(CoordinatorMessage::TaskCancel {
        task_id: "other".into(),
    });
    assert_eq!(drain(&mut s), []);
    // The program lets go of the job: the coordinator hears that the agent is
    // done with the task (so it need not wait for the cancel grace), once.
    s.handle_job_dropped(RunId(1));
    assert_eq!(drain(&mut s), [rejected("t1", "cancelled")]);
    s.handle_job_dropped(RunId(1));
    assert_eq!(drain(&mut s), []);
    s.handle_message(ack("t1", "cancelled"));
    assert_eq!(drain(&mut s), []);
    s.handle_message(assign("t2", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(task("t2", 1)),
            accepted("t2"),
            start(2, task("t2", 1)),
        ]
    );
}

#[test]
fn a_cancelled_job_that_gives_an_outcome_anyway_reports_the_cancel_once() {
    let mut s = running_t1();
    s.handle_message(CoordinatorMessage::TaskCancel {
        task_id: "t1".into(),
    });
    let _ = drain(&mut s);
    assert_eq!(
        s.handle_job_finished(RunId(1), done()),
        Err(ReportError::Cancelled)
    );
    assert_eq!(drain(&mut s), [rejected("t1", "cancelled")]);
    s.handle_job_dropped(RunId(1));
    assert_eq!(drain(&mut s), []);
}

#[test]
fn cancel_after_the_command_ended_clears_the_outcome_and_reports_at_once() {
    let mut s = reported_t1();
    s.handle_message(CoordinatorMessage::TaskCancel {
        task_id: "t1".into(),
    });
    assert_eq!(
        drain(&mut s),
        [rejected("t1", "cancelled"), Output::ClearState]
    );
}

#[test]
fn shutdown_while_idle_exits_at_once() {
    let mut s = idle();
    s.handle_shutdown(100);
    assert_eq!(drain(&mut s), [Output::Exit]);
    assert!(!s.wants_connection());
    // Nothing after Exit.
    s.handle_message(assign("t1", 1));
    s.handle_shutdown(200);
    assert_eq!(drain(&mut s), []);

    let mut offline = AgentSession::new(config(), None);
    offline.handle_shutdown(100);
    assert_eq!(drain(&mut offline), [Output::Exit]);
}

#[test]
fn shutdown_while_busy_lets_the_command_finish_and_exits_after_the_ack() {
    let mut s = running_t1();
    s.handle_shutdown(100);
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.poll_timeout(), Some(100 + GRACE_MS));
    assert!(s.wants_connection());
    s.handle_message(assign("t2", 1));
    assert_eq!(drain(&mut s), [rejected("t2", "shutting_down")]);
    s.handle_message(ack("t2", "rejected"));
    assert_eq!(drain(&mut s), []);
    s.handle_timeout(100 + GRACE_MS - 1);
    assert_eq!(drain(&mut s), []);
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            completed("t1", 1),
        ]
    );
    assert_eq!(s.poll_timeout(), None);
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState, Output::Exit]);
}

#[test]
fn shutdown_while_busy_kills_the_command_after_the_grace_and_keeps_the_task() {
    let mut s = running_t1();
    s.handle_shutdown(100);
    s.handle_shutdown(500); // a second signal does not move the deadline
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.poll_timeout(), Some(100 + GRACE_MS));
    s.handle_timeout(100 + GRACE_MS);
    assert_eq!(drain(&mut s), [cancel_job(1, "t1"), Output::Exit,]);
}

#[test]
fn shutdown_while_disconnected_waits_for_the_command_saves_its_outcome_and_exits() {
    let mut s = running_t1();
    s.handle_disconnected();
    s.handle_shutdown(100);
    assert_eq!(drain(&mut s), []);
    assert!(!s.wants_connection());
    assert_eq!(s.poll_timeout(), Some(100 + GRACE_MS));
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            Output::Exit,
        ]
    );

    let mut s = running_t1();
    s.handle_disconnected();
    s.handle_shutdown(100);
    s.handle_timeout(100 + GRACE_MS);
    assert_eq!(drain(&mut s), [cancel_job(1, "t1"), Output::Exit,]);
}

#[test]
fn shutdown_while_disconnected_holding_an_outcome_exits_and_keeps_it() {
    let mut s = reported_t1();
    s.handle_disconnected();
    s.handle_shutdown(100);
    assert_eq!(drain(&mut s), [Output::Exit]);
}

#[test]
fn a_draining_runner_reconnects_to_report_then_exits() {
    let mut s = running_t1();
    s.handle_shutdown(100);
    s.handle_disconnected();
    assert!(s.wants_connection());
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [Output::SaveState(with_outcome(task("t1", 1), done()))]
    );
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            completed("t1", 1),
        ]
    );
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState, Output::Exit]);
}

#[test]
fn a_draining_runner_does_not_start_a_recovered_command() {
    let mut s = AgentSession::new(config(), Some(task("t1", 1)));
    s.handle_connected();
    let _ = drain(&mut s);
    s.handle_shutdown(100);
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.poll_timeout(), None);
    s.handle_message(cont("t1", 2));
    assert_eq!(
        drain(&mut s),
        [Output::SaveState(task("t1", 2)), Output::Exit]
    );
}

#[test]
fn a_draining_runner_ignores_other_tasks_acks_cancels_and_errors() {
    let mut s = reported_t1();
    s.handle_shutdown(100);
    s.handle_message(ack("other", "rejected"));
    s.handle_message(CoordinatorMessage::TaskCancel {
        task_id: "other".into(),
    });
    s.handle_message(CoordinatorMessage::error(
        ErrorCode::NotAssigned,
        Some("other"),
        "",
    ));
    assert_eq!(drain(&mut s), []);
    s.handle_message(CoordinatorMessage::TaskReassign {
        task_id: "t1".into(),
    });
    assert_eq!(drain(&mut s), [Output::ClearState, Output::Exit]);
}

#[test]
fn a_refused_report_drops_the_task_only_if_it_is_no_longer_ours() {
    for code in [ErrorCode::StaleGeneration, ErrorCode::NotAssigned] {
        let mut s = reported_t1();
        s.handle_message(CoordinatorMessage::error(code, Some("t1"), "gone"));
        assert_eq!(drain(&mut s), [Output::ClearState], "{code:?}");
    }
    let mut s = reported_t1();
    s.handle_message(CoordinatorMessage::error(
        ErrorCode::InvalidState,
        Some("t1"),
        "",
    ));
    s.handle_message(CoordinatorMessage::error(
        ErrorCode::StaleGeneration,
        Some("other"),
        "",
    ));
    s.handle_message(CoordinatorMessage::error(
        ErrorCode::InvalidMessage,
        None,
        "oops",
    ));
    assert_eq!(drain(&mut s), []);
    // Before the outcome exists, an error about the task keeps it.
    let mut s = running_t1();
    s.handle_message(CoordinatorMessage::error(
        ErrorCode::NotAssigned,
        Some("t1"),
        "",
    ));
    assert_eq!(drain(&mut s), []);
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 1), done())),
            completed("t1", 1),
        ]
    );
}

#[test]
fn progress_goes_out_only_for_the_running_job_while_connected() {
    let mut s = running_t1();
    assert_eq!(
        s.handle_progress(RunId(7), json!(1)),
        Err(ReportError::UnknownRun)
    );
    assert_eq!(drain(&mut s), []);
    s.handle_disconnected();
    // Taken, but there is nowhere to send it.
    assert_eq!(s.handle_progress(RunId(1), json!(1)), Ok(()));
    assert_eq!(drain(&mut s), []);
    let mut s = reported_t1();
    assert_eq!(
        s.handle_progress(RunId(1), json!(1)),
        Err(ReportError::AlreadyReported)
    );
    assert_eq!(drain(&mut s), []);
}

#[test]
fn a_report_from_a_run_that_is_over_is_refused_and_changes_nothing() {
    // Reported twice.
    let mut s = reported_t1();
    assert_eq!(
        s.handle_job_finished(RunId(1), broke()),
        Err(ReportError::AlreadyReported)
    );
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.current_task(), current("t1", 1));

    // Cancelled: its late outcome is not wanted, and the next task's run is not
    // mistaken for it.
    let mut s = running_t1();
    s.handle_message(CoordinatorMessage::TaskCancel {
        task_id: "t1".into(),
    });
    assert_eq!(drain(&mut s), [cancel_job(1, "t1"), Output::ClearState]);
    assert_eq!(
        s.handle_job_finished(RunId(1), done()),
        Err(ReportError::Cancelled)
    );
    assert_eq!(drain(&mut s), [rejected("t1", "cancelled")]);
    assert_eq!(
        s.handle_progress(RunId(1), json!(1)),
        Err(ReportError::Cancelled)
    );
    assert_eq!(drain(&mut s), []);
    s.handle_message(assign("t2", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(task("t2", 1)),
            accepted("t2"),
            start(2, task("t2", 1)),
        ]
    );
    assert_eq!(
        s.handle_job_finished(RunId(1), done()),
        Err(ReportError::Cancelled)
    );
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.handle_job_finished(RunId(2), done()), Ok(()));

    // A run that never was.
    let mut s = idle();
    assert_eq!(
        s.handle_job_finished(RunId(1), done()),
        Err(ReportError::UnknownRun)
    );
    assert_eq!(drain(&mut s), []);
}

#[test]
fn reports_after_exit_are_refused_as_stopped() {
    let mut s = running_t1();
    s.handle_shutdown(100);
    s.handle_timeout(100 + GRACE_MS);
    assert_eq!(drain(&mut s), [cancel_job(1, "t1"), Output::Exit]);
    assert_eq!(
        s.handle_job_finished(RunId(1), done()),
        Err(ReportError::Stopped)
    );
    assert_eq!(
        s.handle_progress(RunId(1), json!(1)),
        Err(ReportError::Stopped)
    );
    assert_eq!(drain(&mut s), []);
}

#[test]
fn a_refused_identify_cancels_the_running_job_keeps_the_task_and_exits() {
    let mut s = running_t1();
    s.handle_disconnected();
    s.handle_refused();
    assert_eq!(drain(&mut s), [cancel_job(1, "t1"), Output::Exit]);
    assert!(!s.wants_connection());
    assert_eq!(s.current_task(), current("t1", 1));

    let mut s = AgentSession::new(config(), Some(task("t1", 1)));
    s.handle_refused();
    assert_eq!(drain(&mut s), [Output::Exit]);

    let mut s = AgentSession::new(config(), None);
    s.handle_refused();
    assert_eq!(drain(&mut s), [Output::Exit]);
}

#[test]
fn identify_names_the_held_task_from_assignment_to_ack() {
    let mut s = AgentSession::new(config(), None);
    assert_eq!(s.current_task(), None);
    s.handle_connected();
    s.handle_message(assign("t1", 1));
    assert_eq!(s.current_task(), current("t1", 1));
    let _ = drain(&mut s);
    finish(&mut s, done());
    let _ = drain(&mut s);
    assert_eq!(s.current_task(), current("t1", 1));
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState]);
    assert_eq!(s.current_task(), None);
    // After a restart, the task of the state file.
    let restarted = AgentSession::new(config(), Some(with_outcome(task("t2", 4), broke())));
    assert_eq!(restarted.current_task(), current("t2", 4));
}

#[test]
fn a_reconnect_while_running_names_the_task_recovers_it_and_reports_with_the_new_generation() {
    let mut s = running_t1();
    s.handle_disconnected();
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.current_task(), current("t1", 1));
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 2));
    // The command goes on: it is not started again.
    assert_eq!(drain(&mut s), [Output::SaveState(task("t1", 2))]);
    assert_eq!(s.current_task(), current("t1", 2));
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 2), done())),
            completed("t1", 2),
        ]
    );
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState]);
    assert_eq!(s.current_task(), None);
}

#[test]
fn every_reconnect_recovers_again_not_only_the_first() {
    let mut s = running_t1();
    for generation in 2..5 {
        s.handle_disconnected();
        assert_eq!(s.current_task(), current("t1", generation - 1));
        s.handle_connected();
        assert_eq!(drain(&mut s), [recovering("t1")]);
        s.handle_message(cont("t1", generation));
        assert_eq!(drain(&mut s), [Output::SaveState(task("t1", generation))]);
    }
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 4), done())),
            completed("t1", 4),
        ]
    );
}

#[test]
fn a_reconnect_with_an_unacknowledged_outcome_names_it_and_reports_it_after_continue() {
    let mut s = reported_t1();
    s.handle_disconnected();
    assert_eq!(s.current_task(), current("t1", 1));
    s.handle_connected();
    // The outcome waits for the answer.
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 3));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 3), done())),
            completed("t1", 3),
        ]
    );
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState]);
    assert_eq!(s.current_task(), None);
}

#[test]
fn a_repeated_continue_changes_nothing() {
    // A coordinator that re-attaches on identify's current_task and answers
    // task_recovering as well: two task_continue with one generation.
    let mut s = reported_t1();
    s.handle_disconnected();
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 2));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 2), done())),
            completed("t1", 2),
        ]
    );
    s.handle_message(cont("t1", 2));
    assert_eq!(drain(&mut s), []);
    s.handle_message(ack("t1", "complete"));
    assert_eq!(drain(&mut s), [Output::ClearState]);

    // While running: the command is neither started again nor resaved.
    let mut s = running_t1();
    s.handle_disconnected();
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(cont("t1", 2));
    assert_eq!(drain(&mut s), [Output::SaveState(task("t1", 2))]);
    s.handle_message(cont("t1", 2));
    assert_eq!(drain(&mut s), []);
}

#[test]
fn a_continue_with_another_generation_after_the_answer_is_adopted_and_reported_again() {
    let mut s = reported_t1();
    s.handle_disconnected();
    s.handle_connected();
    let _ = drain(&mut s);
    s.handle_message(cont("t1", 2));
    let _ = drain(&mut s);
    s.handle_message(cont("t1", 3));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 3), done())),
            completed("t1", 3),
        ]
    );
}

#[test]
fn the_held_task_assigned_again_before_the_answer_is_adopted_and_the_answer_is_a_repeat() {
    // A coordinator that reclaimed the task on the disconnect may assign it to us
    // again before it reads task_recovering.
    let mut s = running_t1();
    s.handle_disconnected();
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(assign("t1", 2));
    assert_eq!(
        drain(&mut s),
        [Output::SaveState(task("t1", 2)), accepted("t1")]
    );
    s.handle_message(cont("t1", 2));
    assert_eq!(drain(&mut s), []);
    finish(&mut s, done());
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(task("t1", 2), done())),
            completed("t1", 2),
        ]
    );
}

#[test]
fn a_reassign_after_a_reconnect_kills_the_running_command_and_drops_the_task() {
    let mut s = running_t1();
    s.handle_disconnected();
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(reassign("t1"));
    assert_eq!(drain(&mut s), [cancel_job(1, "t1"), Output::ClearState,]);
    assert_eq!(s.current_task(), None);
    // A repeated reassign changes nothing; the runner is free for new work.
    s.handle_message(reassign("t1"));
    assert_eq!(drain(&mut s), []);
    s.handle_message(assign("t2", 1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(task("t2", 1)),
            accepted("t2"),
            start(2, task("t2", 1)),
        ]
    );
    // The next reconnect names the new task.
    s.handle_disconnected();
    assert_eq!(s.current_task(), current("t2", 1));
}

#[test]
fn a_reassign_after_a_reconnect_drops_an_unacknowledged_outcome_unsent() {
    let mut s = reported_t1();
    s.handle_disconnected();
    s.handle_connected();
    assert_eq!(drain(&mut s), [recovering("t1")]);
    s.handle_message(reassign("t1"));
    assert_eq!(drain(&mut s), [Output::ClearState]);
    assert_eq!(s.current_task(), None);
}

#[test]
fn a_job_dropped_without_an_outcome_fails_and_a_reported_one_is_left_alone() {
    let mut s = running_t1();
    s.handle_job_dropped(RunId(1));
    assert_eq!(
        drain(&mut s),
        [
            Output::SaveState(with_outcome(
                task("t1", 1),
                Outcome::Failed {
                    error: super::JOB_DROPPED.into()
                }
            )),
            send(AgentMessage::TaskFailed {
                task_id: "t1".into(),
                generation: 1,
                error: Some(super::JOB_DROPPED.into()),
                reason: None,
            }),
        ]
    );
    let mut s = reported_t1();
    s.handle_job_dropped(RunId(1));
    s.handle_job_dropped(RunId(9));
    assert_eq!(drain(&mut s), []);
}
