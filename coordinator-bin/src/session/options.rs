//! The submit options that need storage: dependencies no longer live and
//! idempotency keys of final tasks are looked up ([`Output::Lookup`]) once
//! every commit before the submission has landed; the dependencies' results
//! join a dependent's `task_assign` metadata under `dependencies`.
//!
//! Between a lookup and its answer, the tasks that reach a final state are
//! remembered here (their status and key), so that nothing that ended in the
//! meantime is missed: a dependency is live, or ended while the lookup ran,
//! or storage has its final status; a key belongs to a live task, or to one
//! that ended meanwhile, or storage has it.

use std::collections::{HashMap, HashSet};

use coordinator_queue::{IdMap, NewTask, Status, SubmitError, Task, TaskId};
use serde_json::{Map, Value};

use super::api::{Answer, Receipt, Refusal, RefusalKind};
use super::{Held, Output, RequestId, Session};

/// What storage said for a submission's lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The stored status of each dependency asked for (`None`: no such task).
    pub statuses: Vec<(String, Option<Status>)>,
    /// The stored task of each (submitter, key) asked for, if any.
    pub keyed: Vec<((String, String), Option<Receipt>)>,
}

/// Submissions waiting for their lookup, and what ended meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Lookups {
    waiting: IdMap<RequestId, Vec<NewTask>>,
    ended: IdMap<TaskId, Status>,
    ended_keys: HashMap<(String, String), Receipt>,
}

impl Lookups {
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// A task reached a final state (noted only while a lookup runs).
    pub(crate) fn note_final(&mut self, task: &Task) {
        if self.waiting.is_empty() {
            return;
        }
        self.ended.insert(task.id().clone(), task.status());
        if let Some(key) = task.idempotency_key() {
            let submitter = task.submitted_by().unwrap_or("").to_owned();
            self.ended_keys
                .insert((submitter, key.to_owned()), receipt_of(task, true));
        }
    }
}

/// The receipt of a task as it is now.
pub(crate) fn receipt_of(task: &Task, duplicate: bool) -> Receipt {
    Receipt {
        task_id: task.id().to_string(),
        priority: task.priority().as_str(),
        created_at_ms: task.created_at_ms(),
        status: receipt_status(task.status()),
        duplicate,
    }
}

/// What a receipt says of a task's status: `scheduled`, `waiting` or `queued`
/// (a task assigned at once, or final since, was queued when submitted).
pub(crate) fn receipt_status(status: Status) -> &'static str {
    match status {
        Status::Scheduled | Status::Waiting => status.as_str(),
        _ => Status::Queued.as_str(),
    }
}

impl Session {
    /// Starts a submission: answered at once, or (`None`) after a lookup of
    /// what storage knows of its dependencies and keys.
    pub(crate) fn start_submit(
        &mut self,
        now_ms: u64,
        request: RequestId,
        tasks: Vec<NewTask>,
    ) -> Option<Answer> {
        let queue = self.scheduler.queue();
        let mut dependencies: Vec<String> = Vec::new();
        let mut keys: Vec<(String, String)> = Vec::new();
        for task in &tasks {
            for dep in &task.depends_on {
                if queue.get(dep).is_none() && !dependencies.iter().any(|d| d == dep.as_str()) {
                    dependencies.push(dep.to_string());
                }
            }
            if let Some(key) = &task.idempotency_key {
                let submitter = task.submitted_by.clone().unwrap_or_default();
                let live = queue.find_by_key(Some(&submitter), key).is_some();
                let pair = (submitter, key.clone());
                if !live && !keys.contains(&pair) {
                    keys.push(pair);
                }
            }
        }
        if dependencies.is_empty() && keys.is_empty() {
            return Some(self.submit(now_ms, tasks, &Lookup::default()));
        }
        self.lookups.waiting.insert(request, tasks);
        self.gate.hold(Held::Out(Output::Lookup {
            request,
            dependencies,
            keys,
        }));
        None
    }

    /// What storage said for the lookup of `request` (`Err` if it could not
    /// be read): the submission goes on, and is answered after its commit.
    pub fn handle_looked_up(
        &mut self,
        now_ms: u64,
        request: RequestId,
        lookup: Result<Lookup, String>,
    ) {
        if self.fatal.is_some() {
            return;
        }
        let Some(tasks) = self.lookups.waiting.remove(&request) else {
            return;
        };
        let answer = match lookup {
            Ok(lookup) => self.submit(now_ms, tasks, &lookup),
            Err(detail) => Answer::Refused(Refusal::new(RefusalKind::Internal, detail)),
        };
        if self.lookups.waiting.is_empty() {
            self.lookups.ended.clear();
            self.lookups.ended_keys.clear();
        }
        self.drain_scheduler();
        self.gate.hold(Held::Out(Output::Reply { request, answer }));
    }

    /// The first task of a (submitter, key), if it exists anywhere.
    fn first_with_key(&self, task: &NewTask, lookup: &Lookup) -> Option<Receipt> {
        let key = task.idempotency_key.as_ref()?;
        let submitter = task.submitted_by.clone().unwrap_or_default();
        if let Some(id) = self.scheduler.queue().find_by_key(Some(&submitter), key) {
            return self
                .scheduler
                .queue()
                .get(id)
                .map(|live| receipt_of(live, true));
        }
        let pair = (submitter, key.clone());
        if let Some(receipt) = self.lookups.ended_keys.get(&pair) {
            return Some(receipt.clone());
        }
        lookup
            .keyed
            .iter()
            .find(|(k, _)| *k == pair)
            .and_then(|(_, stored)| stored.clone())
            .map(|stored| Receipt {
                duplicate: true,
                ..stored
            })
    }

    /// Splits a submission into the repeats of earlier tasks (their receipts)
    /// and the new tasks, with what is known of their dependencies that are
    /// no longer live. Refused if a key appears twice among the new tasks.
    pub(crate) fn resolve_options(
        &self,
        tasks: Vec<NewTask>,
        lookup: &Lookup,
    ) -> Result<Vec<Result<NewTask, Receipt>>, String> {
        let mut keys: HashSet<(String, String)> = HashSet::new();
        let mut out = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            if let Some(first) = self.first_with_key(&task, lookup) {
                out.push(Err(first));
                continue;
            }
            if let Some(key) = &task.idempotency_key {
                let pair = (task.submitted_by.clone().unwrap_or_default(), key.clone());
                if !keys.insert(pair) {
                    return Err(format!(
                        "the idempotency key `{key}` appears twice in the batch"
                    ));
                }
            }
            for dep in &task.depends_on {
                if self.scheduler.queue().get(dep).is_some() {
                    continue;
                }
                let status = self.lookups.ended.get(dep).copied().or_else(|| {
                    lookup
                        .statuses
                        .iter()
                        .find(|(id, _)| id == dep.as_str())
                        .and_then(|(_, status)| *status)
                });
                // Final, or scheduled and left in storage (it counts as live).
                if let Some(status) = status.filter(|s| s.is_final() || *s == Status::Scheduled) {
                    task.settled_dependencies.push((dep.clone(), status));
                }
            }
            out.push(Ok(task));
        }
        Ok(out)
    }
}

/// A refusal of the queue that is a duplicate rather than an error.
pub(crate) fn is_duplicate(error: &SubmitError) -> bool {
    matches!(error, SubmitError::DuplicateKey(_))
}

/// `metadata` with the results of the dependencies under `dependencies`
/// (id → result as JSON, or its text if it is not JSON, or null when storage
/// no longer has it). Metadata that is not a JSON object is left as it is.
pub(crate) fn with_dependency_results(
    metadata: &str,
    results: &[(String, Option<String>)],
) -> String {
    if results.is_empty() {
        return metadata.to_owned();
    }
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(metadata) else {
        return metadata.to_owned();
    };
    let mut dependencies = Map::new();
    for (id, result) in results {
        let value = match result {
            Some(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            None => Value::Null,
        };
        dependencies.insert(id.clone(), value);
    }
    object.insert("dependencies".to_owned(), Value::Object(dependencies));
    Value::Object(object).to_string()
}
