//! Logs and metrics of what the session did: committed records, reclaims,
//! agents coming and going, refused messages.
//!
//! Ids come from peers: they are logged as `&str` values (never `%`), which the
//! text format quotes and escapes (see `crate::logging`).

use coordinator_queue::Change;
use tracing::{info, warn};

use super::metrics;
use crate::session::{Batch, Notice};

/// A batch handed to the writer: one log line and one count per recorded event.
pub fn batch(batch: &Batch) {
    for change in &batch.changes {
        log_change(change);
        metrics::record_change(change);
    }
}

fn log_change(change: &Change) {
    let Some(entry) = change.recorded_event() else {
        return;
    };
    let task = change.task();
    info!(
        task_id = task.id().as_str(),
        agent_id = task.assigned_to().map(|a| a.as_str()).unwrap_or("-"),
        generation = task.generation(),
        status = task.status().as_str(),
        event = entry.event.as_str(),
        "task {}",
        entry.event.as_str()
    );
}

/// A notice from the session.
pub fn notice(notice: &Notice) {
    match notice {
        Notice::Reclaimed {
            task_id,
            agent_id,
            reason,
        } => {
            info!(
                task_id = task_id.as_str(),
                agent_id = agent_id.as_str(),
                reason = reason.as_str(),
                "task reclaimed"
            );
            metrics::record_reclaim(reason.as_str());
        }
        Notice::AgentIdentified { agent_id, conn } => {
            info!(agent_id = agent_id.as_str(), %conn, "agent identified");
        }
        Notice::AgentDisconnected { agent_id, conn } => {
            info!(agent_id = agent_id.as_str(), %conn, "agent disconnected");
        }
        Notice::IdentifyRefused { agent_id, code } => {
            warn!(
                agent_id = agent_id.as_str(),
                code = code.as_str(),
                "identify refused"
            );
        }
        Notice::ProtocolError { code } => metrics::record_protocol_error(code.as_str()),
        Notice::SlowConsumer { agent_id, conn } => {
            let agent_id = agent_id.as_ref().map(|a| a.as_str()).unwrap_or("-");
            warn!(agent_id, %conn, "agent too slow to read; dropping its connection");
        }
        Notice::SubmitRefused { reason } => metrics::record_submit_refused(reason),
        Notice::ScheduledLoadFailed { error } => {
            warn!(
                error = error.as_str(),
                "cannot read the scheduled tasks coming due; trying again in a second"
            );
        }
        Notice::AssignUndeliverable {
            task_id,
            agent_id,
            error,
        } => {
            warn!(
                task_id = task_id.as_str(),
                agent_id = agent_id.as_str(),
                error = error.as_str(),
                "task_assign not sent: the task's stored description and metadata could not be read; the task failed"
            );
        }
    }
}
