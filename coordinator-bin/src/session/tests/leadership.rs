//! Leadership: what a standby answers, what losing the lease stops at once, and
//! how a takeover serves again.

use coordinator_queue::Status;
use coordinator_transport::protocol::AgentMessage;

use super::{connect, dead_letter_record, drain, identify, poll, session, settle, submit, T0};
use crate::session::*;

const LEADER: &str = "http://10.0.0.2:4000";

fn standby(leader: Option<&str>) -> Session {
    Session::new_standby(SessionConfig::default(), T0, leader.map(str::to_owned)).unwrap()
}

fn not_leader(request: u64, leader: Option<&str>) -> Output {
    Output::Reply {
        request: RequestId::new(request),
        answer: Answer::NotLeader(NotLeader {
            leader_url: leader.map(str::to_owned),
            retry_after_s: NOT_LEADER_RETRY_AFTER_S,
        }),
    }
}

fn try_again(conn: ConnId, reason: &str) -> Output {
    Output::Close {
        conn,
        code: CLOSE_TRY_AGAIN_LATER,
        reason: reason.to_owned().into(),
    }
}

fn standby_role(leader: Option<&str>) -> Output {
    Output::Role(Role::Standby {
        leader_url: leader.map(str::to_owned),
    })
}

#[test]
fn a_session_made_with_new_leads_in_the_first_epoch() {
    let s = session();
    assert_eq!(s.role(), &Role::Leader { epoch: FIRST_EPOCH });
    assert_eq!(s.role().as_str(), "leader");
    assert_eq!(s.role().not_leader(), None);
}

#[test]
fn a_standby_refuses_every_request_at_once_and_stages_nothing() {
    let mut s = standby(Some(LEADER));
    submit(&mut s, 1, &["t1"]);
    s.handle_request(T0, RequestId::new(2), Request::Agents);
    s.handle_request(
        T0,
        RequestId::new(3),
        Request::Retry {
            task_id: "d1".into(),
        },
    );
    assert_eq!(
        drain(&mut s),
        vec![
            not_leader(1, Some(LEADER)),
            not_leader(2, Some(LEADER)),
            not_leader(3, Some(LEADER))
        ]
    );
    assert!(s.is_settled());
    assert_eq!(s.scheduler().queue().get(&"t1".into()), None);
}

#[test]
fn a_standby_closes_identify_with_1013_and_the_leader_url() {
    let mut s = standby(Some(LEADER));
    let c = ConnId::new(1);
    s.handle_opened(T0, c);
    s.handle_message(T0, c, identify("a1", "secret"));
    assert_eq!(drain(&mut s), vec![try_again(c, LEADER)]);
    // Nothing more is read from it.
    s.handle_message(T0, c, AgentMessage::Ping {});
    assert_eq!(drain(&mut s), vec![]);
    // Without a known leader the reason says so.
    let mut s = standby(None);
    s.handle_opened(T0, c);
    s.handle_message(T0, c, identify("a1", "secret"));
    assert_eq!(drain(&mut s), vec![try_again(c, NOT_LEADER_REASON)]);
}

#[test]
fn a_leader_url_too_long_for_a_close_frame_is_not_cut() {
    let long = format!("http://{}.example:4000", "x".repeat(120));
    let role = Role::Standby {
        leader_url: Some(long.clone()),
    };
    assert_eq!(role.close_reason(), NOT_LEADER_REASON);
    // The HTTP answer carries it whole.
    assert_eq!(role.not_leader().unwrap().leader_url, Some(long));
}

#[test]
fn a_standby_keeps_no_timers_and_never_sweeps_or_purges() {
    let mut s = standby(None);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(T0 + 365 * 24 * 3_600_000);
    assert_eq!(drain(&mut s), vec![]);
    // An open socket still has its identify deadline.
    s.handle_opened(T0, ConnId::new(1));
    assert_eq!(
        s.poll_timeout(),
        Some(T0 + SessionConfig::default().identify_timeout_ms)
    );
}

#[test]
fn losing_leadership_refuses_what_is_not_committed_and_closes_every_socket() {
    let mut s = session();
    let agent = ConnId::new(1);
    connect(&mut s, agent, "a1");
    let waiting = ConnId::new(2);
    s.handle_opened(T0, waiting);
    // Request 1's batch is in flight, request 2's still staged.
    submit(&mut s, 1, &["t1"]);
    let Some(Output::Persist(in_flight)) = poll(&mut s) else {
        panic!("the batch of t1 is handed out")
    };
    submit(&mut s, 2, &["t2"]);
    s.handle_lost_leadership(T0 + 1);
    assert_eq!(
        drain(&mut s),
        vec![
            not_leader(1, None),
            not_leader(2, None),
            try_again(agent, NOT_LEADER_REASON),
            try_again(waiting, NOT_LEADER_REASON),
            standby_role(None),
        ]
    );
    // A late commit report releases nothing: no task_assign, no 201.
    s.handle_committed(in_flight.seq);
    assert_eq!(drain(&mut s), vec![]);
    assert!(s.is_settled());
    // The live state is gone; further requests are refused.
    assert_eq!(s.scheduler().queue().get(&"t1".into()), None);
    assert_eq!(s.scheduler().agents().count(), 0);
    submit(&mut s, 3, &["t3"]);
    assert_eq!(drain(&mut s), vec![not_leader(3, None)]);
    // Frames from the closed sockets change nothing.
    s.handle_message(T0 + 2, agent, AgentMessage::Ping {});
    s.handle_closed(T0 + 2, agent);
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn what_is_committed_still_leaves_when_leadership_is_lost() {
    let mut s = session();
    submit(&mut s, 1, &["t1"]);
    let Some(Output::Persist(batch)) = poll(&mut s) else {
        panic!("the batch of t1 is handed out")
    };
    s.handle_committed(batch.seq);
    // Lost before the driver drained the released answer.
    s.handle_lost_leadership(T0 + 1);
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply { request, answer: Answer::Submitted(r) }, Output::Role(Role::Standby { .. })] if *request == RequestId::new(1) && r[0].task_id == "t1"),
        "{out:?}"
    );
}

#[test]
fn a_retry_waiting_for_its_record_is_refused_when_leadership_is_lost() {
    let mut s = session();
    s.handle_request(
        T0,
        RequestId::new(7),
        Request::Retry {
            task_id: "d1".into(),
        },
    );
    assert_eq!(
        settle(&mut s),
        vec![Output::Load {
            request: RequestId::new(7),
            task_id: "d1".into()
        }]
    );
    s.handle_lost_leadership(T0 + 1);
    assert_eq!(drain(&mut s), vec![not_leader(7, None), standby_role(None)]);
    // The record arriving late changes nothing.
    s.handle_loaded(T0 + 2, RequestId::new(7), Ok(Some(dead_letter_record())));
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn the_lease_naming_another_leader_steps_a_leader_down_and_moves_a_standby() {
    let mut s = session();
    s.handle_leader_is(T0, Some(LEADER.into()));
    assert_eq!(drain(&mut s), vec![standby_role(Some(LEADER))]);
    // Said again: nothing changes.
    s.handle_leader_is(T0, Some(LEADER.into()));
    assert_eq!(drain(&mut s), vec![]);
    let other = "http://10.0.0.3:4000";
    s.handle_leader_is(T0, Some(other.into()));
    assert_eq!(drain(&mut s), vec![standby_role(Some(other))]);
    // Losing what it does not have is nothing.
    s.handle_lost_leadership(T0);
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn a_takeover_restores_the_stored_state_and_serves_in_a_newer_epoch() {
    let mut s = standby(Some(LEADER));
    let record = dead_letter_record();
    assert_eq!(
        s.handle_became_leader(T0, 0, Vec::new()),
        Err(LeadershipError::StaleEpoch {
            offered: 0,
            seen: 0
        })
    );
    assert_eq!(drain(&mut s), vec![]);
    s.handle_became_leader(T0, 1, Vec::new()).unwrap();
    assert_eq!(s.role(), &Role::Leader { epoch: 1 });
    assert_eq!(drain(&mut s), vec![Output::Role(Role::Leader { epoch: 1 })]);
    assert_eq!(
        s.handle_became_leader(T0, 2, Vec::new()),
        Err(LeadershipError::AlreadyLeader { epoch: 1 })
    );
    s.handle_lost_leadership(T0 + 1);
    let _ = drain(&mut s);
    assert_eq!(
        s.handle_became_leader(T0 + 2, 1, Vec::new()),
        Err(LeadershipError::StaleEpoch {
            offered: 1,
            seen: 1
        })
    );
    s.handle_became_leader(T0 + 2, 2, vec![record]).unwrap();
    assert_eq!(
        s.scheduler().queue().get(&"d1".into()).map(|t| t.status()),
        None,
        "a dead-letter record is not live state"
    );
    // It serves: a submission is staged and answered after its commit.
    let _ = drain(&mut s);
    submit(&mut s, 1, &["t1"]);
    let out = settle(&mut s);
    assert!(matches!(
        &out[..],
        [Output::Reply {
            answer: Answer::Submitted(_),
            ..
        }]
    ));
    assert_eq!(
        s.scheduler().queue().get(&"t1".into()).map(|t| t.status()),
        Some(Status::Queued)
    );
}
