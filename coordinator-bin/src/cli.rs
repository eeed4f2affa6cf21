//! The command line: `serve`, `agent`, `token`, `check` and the client commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Coordinator: a durable, fenced task queue that hands work to long-lived agents
/// over WebSockets.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the coordinator service (HTTP API, agent WebSockets, SQLite storage).
    Serve(ServeArgs),
    /// Run a command-line program as an agent: one task at a time, the task JSON on
    /// its stdin, its stdout as the result.
    Agent(crate::agent::config::AgentArgs),
    /// Commands that talk to a running coordinator over HTTP.
    #[command(flatten)]
    Client(ClientCommand),
    /// Manage tokens directly in the database file (works while the service runs).
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Verify a database file: SQLite's integrity check, then every row decoded.
    #[command(long_about = CHECK_ABOUT)]
    Check(CheckArgs),
}

/// The long help of `coordinator check`.
const CHECK_ABOUT: &str = "Verify a database file without changing it.

Runs SQLite's `PRAGMA integrity_check` and `PRAGMA foreign_key_check`, then reads every row \
of every table (tasks, tokens, meta, task_counts) and decodes it as the service does, and \
compares the kept counts with the tasks. Prints rows checked per table and each damaged row \
with its id and what is wrong with it.

Safe while `coordinator serve` runs on the same file: the file is opened read-only, no lock is \
taken, nothing is migrated or written; everything is read from one snapshot.

Exit status: 0 clean; 1 damage found (a row that cannot be decoded, counts that disagree, or \
SQLite's own checks failed); 2 the file could not be checked (missing or unreadable, not a \
SQLite or coordinator database, or another schema version than this coordinator's), as for a \
usage error.";

/// Settings of `coordinator check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The database file to check (never created, changed or locked).
    #[arg(long, env = "COORDINATOR_DB", default_value = "./coordinator.db")]
    pub db: PathBuf,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of `coordinator serve`; each flag can also come from its environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "COORDINATOR_LISTEN", default_value = "127.0.0.1:4000")]
    pub listen: String,
    /// The SQLite database file (created on first start), or a PostgreSQL
    /// database as `postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME` (it must
    /// exist; its tables are created on first start; no TLS).
    #[arg(long, env = "COORDINATOR_DB", default_value = "./coordinator.db")]
    pub db: PathBuf,
    /// Where the first admin token is written (default: the database path +
    /// `.admin-token`; with PostgreSQL, `./coordinator.admin-token`).
    #[arg(long, env = "COORDINATOR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Failures retried before the dead letter, for tasks that do not say.
    #[arg(long, env = "COORDINATOR_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
    /// Reclaims (disconnects, timeouts, ...) a task may go through; the one past
    /// this sends it to the dead letter with `too_many_reclaims`.
    #[arg(long, env = "COORDINATOR_MAX_RECLAIMS", default_value_t = 5)]
    pub max_reclaims: u32,
    /// An assigned task not accepted within this is reclaimed and its agent flagged `unresponsive`.
    #[arg(long, env = "COORDINATOR_ACCEPT_TIMEOUT_MS", default_value_t = 60_000)]
    pub accept_timeout_ms: u64,
    /// A held task with no sign of life for this long is reclaimed.
    #[arg(long, env = "COORDINATOR_STUCK_AFTER_MS", default_value_t = 300_000)]
    pub stuck_after_ms: u64,
    /// Period of the overdue/stuck sweep and retention cleaner.
    #[arg(long, env = "COORDINATOR_SWEEP_INTERVAL_MS", default_value_t = 30_000)]
    pub sweep_interval_ms: u64,
    /// After a restart, how long a held task waits for its agent to recover it.
    #[arg(long, env = "COORDINATOR_RECOVERY_GRACE_MS", default_value_t = 30_000)]
    pub recovery_grace_ms: u64,
    /// After `task_cancel`, how long the agent is offered no new work while its
    /// report on the cancelled task is awaited (its late report is acknowledged as
    /// `cancelled` and changes nothing).
    #[arg(long, env = "COORDINATOR_CANCEL_GRACE_MS", default_value_t = 30_000)]
    pub cancel_grace_ms: u64,
    /// A freshly identified agent that was the last holder of a task is offered no
    /// work until its first message (other than ping) or for this long, so that it
    /// can say it still works on that task and have it back instead of a second run.
    #[arg(long, env = "COORDINATOR_IDENTIFY_SETTLE_MS", default_value_t = 1_000)]
    pub identify_settle_ms: u64,
    /// A WebSocket that has not identified within this is closed (1008).
    #[arg(
        long,
        env = "COORDINATOR_IDENTIFY_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub identify_timeout_ms: u64,
    /// At most this many WebSockets may be open without having identified; more
    /// are closed at once (1008).
    #[arg(long, env = "COORDINATOR_MAX_UNIDENTIFIED", default_value_t = 1_000)]
    pub max_unidentified: usize,
    /// How often agent sockets are pinged.
    #[arg(long, env = "COORDINATOR_PING_INTERVAL_MS", default_value_t = 30_000)]
    pub ping_interval_ms: u64,
    /// A socket silent for ping interval + this is dropped.
    #[arg(long, env = "COORDINATOR_PONG_TIMEOUT_MS", default_value_t = 10_000)]
    pub pong_timeout_ms: u64,
    /// Largest WebSocket message (bigger closes the socket with 1009).
    #[arg(long, env = "COORDINATOR_MAX_FRAME_BYTES", default_value_t = 1_048_576)]
    pub max_frame_bytes: usize,
    /// Bytes of frames queued to one socket and not yet written; a socket whose
    /// queue would grow past this (or past 1024 frames) is closed with 1008.
    #[arg(long, env = "COORDINATOR_MAX_OUTBOUND_BYTES", default_value_t = 8 << 20)]
    pub max_outbound_bytes: usize,
    /// Largest HTTP request body (bigger is answered 413).
    #[arg(long, env = "COORDINATOR_MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// Longest time a client may take to send a request's headers, and again its
    /// body; past it the headers' connection is closed, a body is answered 408
    /// and its connection closed. Idle keep-alive connections close after it too.
    #[arg(long, env = "COORDINATOR_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Most open connections (HTTP and WebSocket); one more is answered 503 with
    /// `Retry-After` and closed. At start the soft limit on open files is raised
    /// to this plus 64 (within the hard limit; logged, with a warning if the hard
    /// limit is lower).
    #[arg(long, env = "COORDINATOR_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most tasks that may wait in the queue: a submission (or a retry from the
    /// dead letter) that would take it past this is refused whole, 429
    /// `queue_full` with `Retry-After`, and changes nothing.
    #[arg(long, env = "COORDINATOR_MAX_QUEUED", default_value_t = 1_000_000)]
    pub max_queued: usize,
    /// Scheduled tasks (`run_at` or `delay_ms`) due within this many ms are
    /// kept in memory; later ones stay in storage only and are read back, in
    /// `run_at` order, as they come within it. A large far-future backlog
    /// costs no memory.
    #[arg(
        long,
        env = "COORDINATOR_SCHEDULED_WINDOW_MS",
        default_value_t = 3_600_000
    )]
    pub scheduled_window_ms: u64,
    /// At most this many scheduled tasks are kept in memory, the ones due
    /// first; the rest wait in storage (see --scheduled-window-ms).
    #[arg(
        long,
        env = "COORDINATOR_SCHEDULED_WINDOW_TASKS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub scheduled_window_tasks: u64,
    /// Largest metadata of one task, in bytes of its JSON text: a submission with
    /// a larger one is refused whole, 413 `metadata_too_large`, and changes nothing.
    #[arg(long, env = "COORDINATOR_MAX_METADATA_BYTES", default_value_t = 65_536)]
    pub max_metadata_bytes: usize,
    /// Log format.
    #[arg(long, env = "COORDINATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Completed and cancelled tasks are deleted after this many hours.
    #[arg(long, env = "COORDINATOR_RETENTION_HOURS", default_value_t = 168)]
    pub retention_hours: u64,
    /// How clients reach this coordinator, `http(s)://HOST[:PORT]`: written in
    /// the lease when it leads, and given by standbys to clients they send to
    /// the leader (503 `leader`, the reason of WebSocket close 1013). Default:
    /// `http://` + the address bound. Takes effect only with several
    /// coordinators on a PostgreSQL database; a SQLite coordinator always leads
    /// (epoch 1).
    #[arg(long, env = "COORDINATOR_ADVERTISE_URL", value_parser = parse_advertise_url)]
    pub advertise_url: Option<String>,
    /// How often the leader renews the leadership lease; a standby looks at it
    /// four times as often, so it notices a leader whose process died within
    /// about a quarter of this (PostgreSQL only).
    #[arg(
        long,
        env = "COORDINATOR_LEASE_RENEW_MS",
        default_value_t = crate::session::lease::DEFAULT_RENEW_MS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub lease_renew_ms: u64,
    /// A standby takes the lease over once the leader's last renewal is older
    /// than this by the database's clock (PostgreSQL only); a leader that could
    /// not renew stops serving before. At least twice --lease-renew-ms.
    #[arg(
        long,
        env = "COORDINATOR_LEASE_TIMEOUT_MS",
        default_value_t = crate::session::lease::DEFAULT_TIMEOUT_MS
    )]
    pub lease_timeout_ms: u64,
}

impl ServeArgs {
    /// Checks the settings that depend on each other (the lease's timing).
    pub fn check(&self) -> Result<(), String> {
        crate::session::lease::check_timing(self.lease_renew_ms, self.lease_timeout_ms)
            .map_err(|e| e.to_string())
    }
}

/// Parses `--advertise-url`: `http://` or `https://`, a host, an optional
/// port, nothing else (a trailing `/` is dropped).
pub fn parse_advertise_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let refuse = |why: &str| {
        Err(format!(
            "`{url}` {why}; expected http://HOST[:PORT] or https://HOST[:PORT]"
        ))
    };
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        return refuse("has no scheme");
    };
    if !matches!(scheme, "http" | "https") {
        return refuse("is not http:// or https://");
    }
    if rest.is_empty() {
        return refuse("has no host");
    }
    if rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace) {
        return refuse("has more than a host and a port");
    }
    if let Err(e) = coordinator_transport::client::HubUrl::parse(trimmed) {
        return refuse(e.reason);
    }
    Ok(trimmed.to_owned())
}

/// `coordinator token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print only the token on stdout.
    Create {
        /// The agent id the token authenticates (or the admin's name with --admin).
        name: String,
        /// Create an admin token instead of an agent token.
        #[arg(long)]
        admin: bool,
        /// The database file, or a `postgres://` URL.
        #[arg(long, env = "COORDINATOR_DB", default_value = "./coordinator.db")]
        db: PathBuf,
    },
    /// List tokens (never their secrets).
    List {
        /// The database file, or a `postgres://` URL.
        #[arg(long, env = "COORDINATOR_DB", default_value = "./coordinator.db")]
        db: PathBuf,
    },
    /// Revoke every token of an agent id (or, with --admin, of an admin name).
    Revoke {
        /// The agent id or admin name.
        name: String,
        /// Revoke the admin tokens of NAME instead of agent tokens.
        #[arg(long)]
        admin: bool,
        /// Allow revoking the last live admin token (locks the HTTP API until a new
        /// admin token is created with `coordinator token create --admin`).
        #[arg(long)]
        force: bool,
        /// The database file, or a `postgres://` URL.
        #[arg(long, env = "COORDINATOR_DB", default_value = "./coordinator.db")]
        db: PathBuf,
    },
}

/// How the client commands reach the coordinator.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The coordinator's base URL, or several separated by commas: a request
    /// goes to the leader a standby names (503 `not_leader`), else to the next
    /// URL, also when one cannot be reached; once every one refused, the
    /// command fails saying what each answered.
    #[arg(long, env = "COORDINATOR_URL", default_value = "http://127.0.0.1:4000")]
    pub url: String,
    /// A token (admin or agent).
    #[arg(long, env = "COORDINATOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A delay given as milliseconds, or a number with `ms`, `s`, `m` or `h`.
pub fn parse_delay_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a delay such as 1500, 1500ms, 2s, 5m or 1h"))?;
    let per_unit: u64 = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
    };
    number
        .checked_mul(per_unit)
        .ok_or_else(|| format!("`{text}` is too long a delay"))
}

/// The client subcommands (they talk to a running coordinator over HTTP).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a task to a running coordinator.
    Submit {
        /// What to do.
        description: String,
        /// urgent, high, normal or low.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// A capability the agent must have; repeat for several.
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// Metadata, a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// Failures retried before the dead letter.
        #[arg(long)]
        max_retries: Option<u32>,
        /// Run not before this time, in milliseconds since the Unix epoch (the
        /// task is `scheduled` until then).
        #[arg(long, conflicts_with = "delay")]
        run_at: Option<u64>,
        /// Run not before this long after the submission: milliseconds, or a
        /// number with `ms`, `s`, `m` or `h` (`--delay 2s`).
        #[arg(long, value_parser = parse_delay_ms)]
        delay: Option<u64>,
        /// Submit once: a repeat with the same key (from the same token)
        /// returns the first task instead of creating another, even with a
        /// different body.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Run only after this task has completed (`waiting` until then; a
        /// dependency that fails or is cancelled cancels this task); repeat
        /// for several, at most 100.
        #[arg(long = "depends-on")]
        depends_on: Vec<String>,
        /// Follow the task (over the event stream) until it is final and print
        /// its result; exit non-zero unless it completed.
        #[arg(long)]
        wait: bool,
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tasks.
    Tasks {
        /// Only this status (scheduled, waiting, queued, assigned, working,
        /// completed, dead_letter, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only this lane.
        #[arg(long)]
        priority: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one task with its history.
    Task {
        /// The task id.
        id: String,
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List agents and what they do.
    Agents {
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a task (its agent is told to stop).
    Cancel {
        /// The task id.
        id: String,
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Put a dead-letter task back in the queue.
    Retry {
        /// The task id.
        id: String,
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print task and agent changes as they are committed (live, from
    /// /api/events), one line each; reconnects and resumes by itself.
    Watch {
        /// Only this task's changes; ends when the task is final (exit non-zero
        /// unless it completed).
        #[arg(long)]
        task: Option<String>,
        /// Only this agent's changes and those of the tasks it holds.
        #[arg(long)]
        agent: Option<String>,
        /// Only task changes to this status; repeat for several.
        #[arg(long)]
        status: Vec<String>,
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop offering new work to an agent (its current task finishes); kept
    /// until `undrain` or a coordinator restart. Needs an admin token.
    Drain {
        /// The agent id.
        agent_id: String,
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Offer new work to a drained agent again. Needs an admin token.
    Undrain {
        /// The agent id.
        agent_id: String,
        /// Connection settings.
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[cfg(test)]
mod tests;
