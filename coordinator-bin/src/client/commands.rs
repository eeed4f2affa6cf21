//! The client subcommands: `submit`, `tasks`, `task`, `agents`, `cancel`,
//! `retry`, `watch`, `drain`, `undrain`.

use crate::client::api_client::{Client, Reply};
use crate::client::watch;
use serde_json::{json, Value};

use crate::cli::{ClientArgs, ClientCommand};

type BoxError = Box<dyn std::error::Error>;

/// Prints a line; a closed stdout (`coordinator tasks | head`) ends the program quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

pub(crate) fn connect(args: &ClientArgs) -> Result<Client, BoxError> {
    let addrs = addrs(&args.url)?;
    let token = args
        .token
        .as_deref()
        .ok_or("no token: give --token or set COORDINATOR_TOKEN")?;
    Ok(Client::new(&addrs.join(","), Some(token)))
}

/// The `host:port` of each URL of `--url` (`http://HOST:PORT`, several
/// separated by commas).
pub(crate) fn addrs(urls: &str) -> Result<Vec<String>, BoxError> {
    urls.split(',')
        .map(|url| {
            url.trim()
                .starts_with("http://")
                .then(|| crate::client::api_client::addr_of(url))
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "--url takes http://HOST:PORT, several separated by commas (got `{url}`)"
                    )
                    .into()
                })
        })
        .collect()
}

pub(crate) fn check(reply: Reply) -> Result<Value, BoxError> {
    if (200..300).contains(&reply.status) {
        Ok(reply.body)
    } else {
        let code = reply.body["error"].as_str().unwrap_or("error");
        let detail = reply.body["detail"].as_str().unwrap_or("");
        Err(format!("HTTP {}: {code}: {detail}", reply.status).into())
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn print_task(task: &Value) {
    for key in [
        "id",
        "description",
        "status",
        "priority",
        "assigned_to",
        "generation",
        "retry_count",
        "max_retries",
        "needed_capabilities",
        "tokens_used",
        "last_error",
        "created_at",
        "updated_at",
    ] {
        out!("{key:<20}{}", cell(&task[key]));
    }
    out!("{:<20}{}", "result", task["result"]);
    out!("history:");
    if let Some(history) = task["history"].as_array() {
        for h in history {
            out!(
                "  {}  {:<14}{}",
                cell(&h["timestamp"]),
                cell(&h["event"]),
                cell(&h["details"])
            );
        }
    }
}

/// Drains or undrains an agent.
async fn drain(client: &ClientArgs, agent_id: &str, drained: bool) -> Result<(), BoxError> {
    let action = if drained { "drain" } else { "undrain" };
    let path = format!("/api/agents/{}/{action}", watch::escape(agent_id));
    let body = check(connect(client)?.post(&path, &json!({})).await?)?;
    if client.json {
        out!("{body}");
    } else if body["changed"] == json!(false) {
        out!("{agent_id} was already {action}ed");
    } else {
        out!("{agent_id} {action}ed");
    }
    Ok(())
}

/// Runs one client subcommand.
pub fn run(command: ClientCommand) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(command))
}

async fn run_async(command: ClientCommand) -> Result<(), BoxError> {
    match command {
        ClientCommand::Submit {
            description,
            priority,
            capabilities,
            metadata,
            max_retries,
            run_at,
            delay,
            idempotency_key,
            depends_on,
            wait,
            client,
        } => {
            let metadata: Value = match metadata {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| format!("--metadata is not JSON: {e}"))?,
                None => json!({}),
            };
            let mut body = json!({"description": description, "priority": priority, "metadata": metadata, "needed_capabilities": capabilities});
            if let Some(n) = max_retries {
                body["max_retries"] = json!(n);
            }
            if let Some(at) = run_at {
                body["run_at"] = json!(at);
            }
            if let Some(ms) = delay {
                body["delay_ms"] = json!(ms);
            }
            if let Some(key) = idempotency_key {
                body["idempotency_key"] = json!(key);
            }
            if !depends_on.is_empty() {
                body["depends_on"] = json!(depends_on);
            }
            let mut http = connect(&client)?;
            let receipt = check(http.post("/api/tasks", &body).await?)?;
            let id = receipt["task_id"].as_str().unwrap_or_default().to_owned();
            if !wait {
                if client.json {
                    out!("{receipt}");
                } else {
                    out!("{id}");
                }
                return Ok(());
            }
            eprintln!("submitted {id}; waiting for it to finish");
            let task = watch::until_final(&client, &mut http, &id, |_| {}).await?;
            let status = task["status"].as_str().unwrap_or_default().to_owned();
            if client.json {
                out!("{task}");
            } else {
                out!("{id} {status}");
                out!("{}", task["result"]);
            }
            if status != "completed" {
                return Err(
                    format!("task {id} ended {status}: {}", cell(&task["last_error"])).into(),
                );
            }
        }
        ClientCommand::Watch {
            task,
            agent,
            status,
            client,
        } => watch::watch(&client, task, agent, status).await?,
        ClientCommand::Drain { agent_id, client } => drain(&client, &agent_id, true).await?,
        ClientCommand::Undrain { agent_id, client } => drain(&client, &agent_id, false).await?,
        ClientCommand::Tasks {
            status,
            priority,
            limit,
            client,
        } => {
            let mut query = format!("limit={limit}");
            if let Some(s) = status {
                query += &format!("&status={s}");
            }
            if let Some(p) = priority {
                query += &format!("&priority={p}");
            }
            let body = check(
                connect(&client)?
                    .get(&format!("/api/tasks?{query}"))
                    .await?,
            )?;
            if client.json {
                out!("{body}");
                return Ok(());
            }
            let rows = body["tasks"]
                .as_array()
                .map(|tasks| {
                    tasks
                        .iter()
                        .map(|t| {
                            vec![
                                cell(&t["id"]),
                                cell(&t["status"]),
                                cell(&t["priority"]),
                                cell(&t["assigned_to"]),
                                cell(&t["generation"]),
                                cell(&t["retry_count"]),
                                short(&cell(&t["description"]), 40),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(
                &[
                    "ID",
                    "STATUS",
                    "PRIORITY",
                    "AGENT",
                    "GEN",
                    "RETRIES",
                    "DESCRIPTION",
                ],
                rows,
            );
            for row in body["damaged"].as_array().into_iter().flatten() {
                eprintln!(
                    "left out, its stored row is damaged: task {} (row {}): {}",
                    cell(&row["id"]),
                    cell(&row["rowid"]),
                    cell(&row["detail"])
                );
            }
        }
        ClientCommand::Task { id, client } => {
            let task = check(connect(&client)?.get(&format!("/api/tasks/{id}")).await?)?;
            if client.json {
                out!("{task}");
            } else {
                print_task(&task);
            }
        }
        ClientCommand::Agents { client } => {
            let body = check(connect(&client)?.get("/api/agents").await?)?;
            if client.json {
                out!("{body}");
                return Ok(());
            }
            let rows = body["agents"]
                .as_array()
                .map(|agents| {
                    agents
                        .iter()
                        .map(|a| {
                            vec![
                                cell(&a["agent_id"]),
                                cell(&a["state"]),
                                cell(&a["connected"]),
                                cell(&a["current_task"]),
                                cell(&a["capabilities"]),
                                cell(&a["flags"]),
                                cell(&a["drained"]),
                                cell(&a["completed"]),
                                cell(&a["failed"]),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(
                &[
                    "AGENT",
                    "STATE",
                    "CONNECTED",
                    "TASK",
                    "CAPABILITIES",
                    "FLAGS",
                    "DRAINED",
                    "DONE",
                    "FAILED",
                ],
                rows,
            );
        }
        ClientCommand::Cancel { id, client } => {
            let body = check(
                connect(&client)?
                    .post(&format!("/api/tasks/{id}/cancel"), &json!({}))
                    .await?,
            )?;
            if client.json {
                out!("{body}")
            } else {
                out!("{id} cancelled")
            }
        }
        ClientCommand::Retry { id, client } => {
            let body = check(
                connect(&client)?
                    .post(&format!("/api/tasks/{id}/retry"), &json!({}))
                    .await?,
            )?;
            if client.json {
                out!("{body}")
            } else {
                out!("{id} queued again")
            }
        }
    }
    Ok(())
}
