//! JSON views of what the session and the database answer (tasks themselves
//! are in [`crate::server::task_json`]).

use coordinator_queue::{Priority, Status};
use serde_json::{json, Map, Value};

use crate::server::db::{DamagedRow, TaskPage};
use crate::server::task_json::task_json;
use crate::session::{AgentInfo, DashboardSnapshot};

/// One agent.
pub fn agent_json(agent: &AgentInfo) -> Value {
    json!({
        "agent_id": agent.agent_id,
        "name": agent.name,
        "state": agent.state,
        "connected": agent.connected,
        "current_task": agent.current_task,
        "generation": agent.generation,
        "capabilities": agent.capabilities,
        "flags": agent.flags,
        "state_since": agent.state_since_ms,
        "awaiting_recovery": agent.awaiting_recovery,
        "drained": agent.drained,
        "completed": agent.tally.completed,
        "failed": agent.tally.failed,
        "mean_duration_ms": agent.tally.mean_duration_ms(),
    })
}

/// The dashboard's state: lanes, live counts, agents, recent completions and
/// throughput.
pub fn dashboard_json(snapshot: &DashboardSnapshot) -> Value {
    let lanes: Map<String, Value> = Priority::ALL
        .iter()
        .zip(snapshot.queue_depth)
        .map(|(p, depth)| (p.as_str().to_owned(), json!(depth)))
        .collect();
    let recent: Vec<Value> = snapshot
        .recent_completions
        .iter()
        .map(|c| {
            json!({
                "task_id": c.task_id,
                "description": c.description.as_deref().unwrap_or_default(),
                "agent_id": c.agent_id,
                "duration_ms": c.duration_ms,
                "tokens_used": c.tokens_used,
                "completed_at": c.completed_at_ms,
            })
        })
        .collect();
    let agents: Vec<Value> = snapshot.agents.iter().map(agent_json).collect();
    let per_minute = snapshot.completed_last_minute;
    let unroutable: Vec<Value> = snapshot
        .unroutable
        .iter()
        .map(|u| json!({"needed_capabilities": u.needed.names(), "missing": u.missing.names(), "tasks": u.n_tasks}))
        .collect();
    let chart: Vec<Value> = snapshot
        .chart
        .iter()
        .map(|m| {
            let depth: Map<String, Value> = Priority::ALL
                .iter()
                .zip(m.queue_depth)
                .map(|(p, depth)| (p.as_str().to_owned(), json!(depth)))
                .collect();
            json!({"minute": m.minute_ms, "completed": m.completed, "failed": m.failed, "queue_depth": depth})
        })
        .collect();
    json!({
        "uptime_ms": snapshot.uptime_ms,
        "now": snapshot.now_ms,
        "queue_depth": lanes,
        "live": {
            "queued": snapshot.queued,
            "assigned": snapshot.assigned,
            "working": snapshot.working,
        },
        "agents": agents,
        "recent_completions": recent,
        "throughput": {"completed_last_minute": per_minute, "per_second": per_minute as f64 / 60.0},
        "unroutable": {"tasks": unroutable.iter().filter_map(|u| u["tasks"].as_u64()).sum::<u64>(), "by_capabilities": unroutable},
        "chart": chart,
    })
}

/// One page of tasks; `next_after` is the id of the page's last row, to ask
/// for the next; `damaged` names the rows of the page that cannot be decoded
/// (left out of `tasks` and `count`).
pub fn task_page_json(page: &TaskPage) -> Value {
    let items: Vec<Value> = page.tasks.iter().map(task_json).collect();
    let damaged: Vec<Value> = page.damaged.iter().map(damaged_json).collect();
    json!({"tasks": items, "count": items.len(), "next_after": page.next_after, "damaged": damaged})
}

/// A stored row left out of a list: its id (null if unreadable), its rowid and
/// what is wrong with it.
pub fn damaged_json(row: &DamagedRow) -> Value {
    json!({"id": row.id, "rowid": row.rowid, "detail": row.reason})
}

/// Task counts from `(status, lane, n)` rows: the total, per status and per
/// lane (every status and lane present, zero when no row names it), and the
/// dead-letter count.
pub fn stats_json(counts: &[(String, String, u64)]) -> Value {
    let mut by_status = Map::new();
    let mut by_priority = Map::new();
    for s in Status::ALL {
        by_status.insert(s.as_str().into(), json!(0));
    }
    for p in Priority::ALL {
        by_priority.insert(p.as_str().into(), json!(0));
    }
    let mut total = 0;
    let mut dead = 0;
    for (status, priority, n) in counts {
        let n = *n;
        total += n;
        if status == "dead_letter" {
            dead += n;
        }
        let s = by_status.entry(status.as_str()).or_insert(json!(0));
        *s = json!(s.as_u64().unwrap_or(0) + n);
        let p = by_priority.entry(priority.as_str()).or_insert(json!(0));
        *p = json!(p.as_u64().unwrap_or(0) + n);
    }
    json!({"total": total, "by_status": by_status, "by_priority": by_priority, "dead_letter": dead})
}
