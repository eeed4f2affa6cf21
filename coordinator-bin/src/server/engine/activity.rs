//! What the dashboard shows beyond the queue: recent completions and throughput.

use queue_core::Task;

use super::Engine;
use crate::server::clock::now_ms;

/// A completion shown on the dashboard.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct RecentCompletion {
    task_id: String,
    description: String,
    agent_id: Option<String>,
    duration_ms: u64,
    tokens_used: Option<u64>,
    completed_at: u64,
}

/// How many recent completions the dashboard shows.
pub(super) const RECENT: usize = 20;

/// Completions per second over the last minute, in a ring of one-second buckets.
#[derive(Debug)]
pub(super) struct Throughput {
    buckets: [(u64, u64); 60],
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            buckets: [(0, 0); 60],
        }
    }
}

impl Throughput {
    pub(super) fn record(&mut self, now_ms: u64) {
        let second = now_ms / 1000;
        let slot = &mut self.buckets[(second % 60) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
    }

    pub(super) fn last_minute(&self, now_ms: u64) -> u64 {
        let second = now_ms / 1000;
        self.buckets
            .iter()
            .filter(|(s, _)| *s + 60 > second && *s <= second)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Engine {
    pub(super) fn note_completion(&mut self, task: &Task) {
        self.throughput.record(task.updated_at_ms);
        if self.recent.len() == RECENT {
            self.recent.pop_back();
        }
        self.recent.push_front(RecentCompletion {
            task_id: task.id.to_string(),
            description: task.description.chars().take(120).collect(),
            agent_id: task.assigned_to().map(|a| a.to_string()),
            duration_ms: task
                .updated_at_ms
                .saturating_sub(task.assigned_at_ms().unwrap_or(task.created_at_ms)),
            tokens_used: task.tokens_used(),
            completed_at: task.updated_at_ms,
        });
    }

    pub(super) fn dashboard(&self) -> serde_json::Value {
        let now = now_ms();
        let stats = self.scheduler.queue().stats();
        let depth = self.scheduler.queue().queued_by_lane();
        let lanes: serde_json::Map<String, serde_json::Value> = queue_core::Priority::ALL
            .iter()
            .map(|p| {
                (
                    p.as_str().to_owned(),
                    serde_json::json!(depth[p.rank() as usize]),
                )
            })
            .collect();
        let per_minute = self.throughput.last_minute(now);
        serde_json::json!({
            "uptime_ms": self.config.started.elapsed().as_millis() as u64,
            "now": now,
            "queue_depth": lanes,
            "live": {
                "queued": stats.status(queue_core::Status::Queued),
                "assigned": stats.status(queue_core::Status::Assigned),
                "working": stats.status(queue_core::Status::Working),
            },
            "agents": self.agent_infos(),
            "recent_completions": self.recent,
            "throughput": {"completed_last_minute": per_minute, "per_second": per_minute as f64 / 60.0},
        })
    }
}
