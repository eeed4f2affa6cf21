//! Prometheus metrics, served at `/metrics`.

use std::sync::OnceLock;

use coordinator_queue::{Change, HistoryEvent};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

struct Metrics {
    registry: Registry,
    submitted: Counter,
    assigned: Counter,
    completed: Counter,
    retried: Counter,
    dead_lettered: Counter,
    cancelled: Counter,
    reclaimed: Family<ReasonLabel, Counter>,
    protocol_errors: Family<CodeLabel, Counter>,
    submits_refused: Family<ReasonLabel, Counter>,
    frames: Family<TypeLabel, Counter>,
    token_table_loads: Counter,
    damaged_rows: Family<TableLabel, Counter>,
    batch_rows: Histogram,
    commit_seconds: Histogram,
    submit_to_assign: Histogram,
    submit_to_complete: Histogram,
    tasks_in_memory: Gauge,
    scheduled_in_memory: Gauge,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("coordinator");
        let m = Metrics {
            submitted: Counter::default(),
            assigned: Counter::default(),
            completed: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
            cancelled: Counter::default(),
            reclaimed: Family::default(),
            protocol_errors: Family::default(),
            submits_refused: Family::default(),
            frames: Family::default(),
            token_table_loads: Counter::default(),
            damaged_rows: Family::default(),
            batch_rows: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            submit_to_assign: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            submit_to_complete: Histogram::new(exponential_buckets(0.0001, 2.0, 20)),
            tasks_in_memory: Gauge::default(),
            scheduled_in_memory: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("tasks_submitted", "Tasks submitted", m.submitted.clone());
        registry.register(
            "tasks_assigned",
            "Task assignments pushed to agents",
            m.assigned.clone(),
        );
        registry.register("tasks_completed", "Tasks completed", m.completed.clone());
        registry.register(
            "tasks_retried",
            "Failures that sent a task back to the queue",
            m.retried.clone(),
        );
        registry.register(
            "tasks_dead_lettered",
            "Tasks moved to the dead letter",
            m.dead_lettered.clone(),
        );
        registry.register("tasks_cancelled", "Tasks cancelled", m.cancelled.clone());
        registry.register(
            "tasks_reclaimed",
            "Tasks taken back from agents, by reason",
            m.reclaimed.clone(),
        );
        registry.register(
            "protocol_errors",
            "Error frames sent to agents, by code",
            m.protocol_errors.clone(),
        );
        registry.register(
            "submits_refused",
            "Submissions (and retries from the dead letter) refused by admission control, by reason (queue_full, metadata_too_large)",
            m.submits_refused.clone(),
        );
        registry.register(
            "ws_messages_received",
            "WebSocket messages received, by type",
            m.frames.clone(),
        );
        registry.register(
            "tasks_in_memory",
            "Live tasks the leader holds in memory (scheduled tasks beyond the window stay in storage only)",
            m.tasks_in_memory.clone(),
        );
        registry.register(
            "scheduled_tasks_in_memory",
            "Scheduled tasks the leader holds in memory: those due within --scheduled-window-ms, at most --scheduled-window-tasks",
            m.scheduled_in_memory.clone(),
        );
        registry.register(
            "token_table_loads",
            "Reads of the whole token table (first load, expiry, unknown tokens within the reload budget)",
            m.token_table_loads.clone(),
        );
        for table in ["tasks", "tokens", "task_counts"] {
            let _ = m.damaged_rows.get_or_create(&TableLabel { table });
        }
        registry.register(
            "damaged_rows",
            "Distinct stored rows that reads found cannot be decoded, by table: each row counts once, when first met since start (at most 10000 are told apart); the rows are left as they are",
            m.damaged_rows.clone(),
        );
        registry.register(
            "writer_batch_rows",
            "Rows written per group commit",
            m.batch_rows.clone(),
        );
        registry.register(
            "writer_commit_seconds",
            "Duration of a group commit",
            m.commit_seconds.clone(),
        );
        registry.register(
            "submit_to_assign_seconds",
            "Time from submission to first assignment",
            m.submit_to_assign.clone(),
        );
        registry.register(
            "submit_to_complete_seconds",
            "Time from submission to completion",
            m.submit_to_complete.clone(),
        );
        Metrics { registry, ..m }
    })
}

/// Counts one persisted change by the event it records.
pub fn record_change(change: &Change) {
    let m = metrics();
    let task = change.task();
    let Some(entry) = change.recorded_event() else {
        return;
    };
    let since_submit = entry.timestamp_ms.saturating_sub(task.created_at_ms()) as f64 / 1000.0;
    match entry.event {
        HistoryEvent::Submitted | HistoryEvent::Requeued => {
            m.submitted.inc();
        }
        HistoryEvent::Assigned => {
            m.assigned.inc();
            if task.generation() == 1 {
                m.submit_to_assign.observe(since_submit);
            }
        }
        HistoryEvent::Completed => {
            m.completed.inc();
            m.submit_to_complete.observe(since_submit);
        }
        HistoryEvent::Retried => {
            m.retried.inc();
        }
        HistoryEvent::DeadLettered => {
            m.dead_lettered.inc();
        }
        HistoryEvent::Cancelled => {
            m.cancelled.inc();
        }
        _ => {}
    }
}

/// Counts a reclaim.
pub fn record_reclaim(reason: &'static str) {
    metrics()
        .reclaimed
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

/// Counts a submission refused by admission control.
pub fn record_submit_refused(reason: &'static str) {
    metrics()
        .submits_refused
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

/// Counts an error frame.
pub fn record_protocol_error(code: &'static str) {
    metrics()
        .protocol_errors
        .get_or_create(&CodeLabel { code })
        .inc();
}

/// Counts a received message.
pub fn record_frame(kind: &'static str) {
    metrics()
        .frames
        .get_or_create(&TypeLabel { r#type: kind })
        .inc();
}

/// Counts one read of the token table.
pub fn record_token_table_load() {
    metrics().token_table_loads.inc();
}

/// Counts a damaged row met for the first time.
pub fn record_damaged_row(table: &'static str) {
    metrics()
        .damaged_rows
        .get_or_create(&TableLabel { table })
        .inc();
}

/// How many live tasks, and scheduled ones among them, memory holds.
pub fn set_in_memory(tasks: usize, scheduled: usize) {
    let m = metrics();
    m.tasks_in_memory
        .set(i64::try_from(tasks).unwrap_or(i64::MAX));
    m.scheduled_in_memory
        .set(i64::try_from(scheduled).unwrap_or(i64::MAX));
}

/// Records one group commit.
pub fn record_commit(rows: usize, micros: u64) {
    let m = metrics();
    m.batch_rows.observe(rows as f64);
    m.commit_seconds.observe(micros as f64 / 1e6);
}

/// The Prometheus text exposition of every metric, plus `extra` gauges already
/// rendered by the caller.
pub fn render(extra: &str) -> String {
    let mut out = String::new();
    let _ = encode(&mut out, &metrics().registry);
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        let mut s = stripped.to_owned();
        s.push_str(extra);
        s.push_str("# EOF\n");
        return s;
    }
    out
}
