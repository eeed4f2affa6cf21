//! JSON views of tasks and the parsing of submissions.

use coordinator_queue::{
    NewTask, Priority, Task, TaskId, MAX_DEPENDENCIES, MAX_IDEMPOTENCY_KEY_BYTES,
};
use serde_json::{json, Map, Value};

use crate::server::api_error::ApiError;

/// The full JSON record of a task, with history.
pub fn task_json(task: &Task) -> Value {
    let history: Vec<Value> = task
        .history()
        .iter()
        .map(|h| json!({"event": h.event.as_str(), "timestamp": h.timestamp_ms, "details": &*h.details}))
        .collect();
    json!({
        "id": task.id().as_str(),
        "description": task.description().as_inline(),
        "metadata": task.metadata().as_inline().map(parse_or_string),
        "priority": task.priority().as_str(),
        "status": task.status().as_str(),
        "assigned_to": task.assigned_to().map(|a| a.as_str()),
        "assigned_at": task.assigned_at_ms(),
        "generation": task.generation(),
        "retry_count": task.retry_count(),
        "reclaim_count": task.reclaim_count(),
        "max_retries": task.max_retries(),
        "complete_by": task.complete_by_ms(),
        "needed_capabilities": task.needed_capabilities().names(),
        "result": task.result().map(parse_or_string),
        "tokens_used": task.tokens_used(),
        "last_error": task.last_error(),
        "submitted_by": task.submitted_by(),
        "created_at": task.created_at_ms(),
        "updated_at": task.updated_at_ms(),
        "run_at": task.run_at_ms(),
        "depends_on": task.depends_on().iter().map(|id| id.as_str()).collect::<Vec<_>>(),
        "idempotency_key": task.idempotency_key(),
        "history": history,
    })
}

fn parse_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Reads one submission object. Wrong JSON kinds are 400s, bad values 422s.
pub fn parse_submission(value: &Value, submitted_by: &str) -> Result<NewTask, ApiError> {
    let object: &Map<String, Value> = value
        .as_object()
        .ok_or_else(|| ApiError::bad_body("a task must be a JSON object"))?;
    let description = match object.get("description") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid_field("description must not be empty"))
        }
        Some(_) => return Err(ApiError::bad_body("description must be a string")),
        None => return Err(ApiError::invalid_field("description is required")),
    };
    let mut task = NewTask::new(crate::server::ids::new_task_id(), description);
    task.submitted_by = Some(submitted_by.to_owned());
    match object.get("metadata") {
        None | Some(Value::Null) => {}
        Some(m @ Value::Object(_)) => task.metadata = m.to_string(),
        Some(_) => return Err(ApiError::invalid_field("metadata must be a JSON object")),
    }
    match object.get("priority") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) => {
            task.priority = p
                .parse::<Priority>()
                .map_err(|e| ApiError::invalid_field(e.to_string()))?
        }
        Some(_) => return Err(ApiError::bad_body("priority must be a string")),
    }
    match object.get("max_retries") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let n = v.as_u64().filter(|n| *n <= 1_000).ok_or_else(|| {
                ApiError::invalid_field("max_retries must be an integer from 0 to 1000")
            })?;
            task.max_retries = Some(n as u32);
        }
    }
    match object.get("complete_by") {
        None | Some(Value::Null) => {}
        Some(v) => {
            task.complete_by_ms = Some(v.as_u64().ok_or_else(|| {
                ApiError::invalid_field("complete_by must be milliseconds since the Unix epoch")
            })?)
        }
    }
    parse_options(object, &mut task)?;
    match object.get("needed_capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s) if !s.is_empty() => names.push(s.to_owned()),
                    _ => {
                        return Err(ApiError::invalid_field(
                            "needed_capabilities must be non-empty strings",
                        ))
                    }
                }
            }
            task.needed_capabilities = names;
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "needed_capabilities must be a list of strings",
            ))
        }
    }
    Ok(task)
}

/// The submit options: `run_at` or `delay_ms` (not both), `idempotency_key`
/// (1 to 256 bytes), `depends_on` (at most 100 task ids).
fn parse_options(object: &Map<String, Value>, task: &mut NewTask) -> Result<(), ApiError> {
    let millis = |name: &str| -> Result<Option<u64>, ApiError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                ApiError::invalid_field(format!("{name} must be a whole number of milliseconds"))
            }),
        }
    };
    task.run_at_ms = millis("run_at")?;
    task.delay_ms = millis("delay_ms")?;
    if task.run_at_ms.is_some() && task.delay_ms.is_some() {
        return Err(ApiError::invalid_field("give run_at or delay_ms, not both"));
    }
    match object.get("idempotency_key") {
        None | Some(Value::Null) => {}
        Some(Value::String(key)) if (1..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&key.len()) => {
            task.idempotency_key = Some(key.clone())
        }
        Some(Value::String(_)) => {
            return Err(ApiError::invalid_field(
                "idempotency_key must be 1 to 256 bytes",
            ))
        }
        Some(_) => return Err(ApiError::invalid_field("idempotency_key must be a string")),
    }
    match object.get("depends_on") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            if items.len() > MAX_DEPENDENCIES {
                return Err(ApiError::invalid_field(format!(
                    "depends_on names {} tasks, at most {MAX_DEPENDENCIES} are allowed",
                    items.len()
                )));
            }
            for item in items {
                match item.as_str() {
                    Some(id) if !id.is_empty() => task.depends_on.push(TaskId::from(id)),
                    _ => {
                        return Err(ApiError::invalid_field(
                            "depends_on must be a list of task ids",
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "depends_on must be a list of task ids",
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
