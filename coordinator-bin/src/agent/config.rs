//! Settings of `coordinator agent`: flags, `COORDINATOR_AGENT_*` variables, and an
//! optional TOML file (flags and variables win over the file).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Flags of `coordinator agent`.
#[derive(Debug, Clone, Args, Default)]
pub struct AgentArgs {
    /// A TOML file with any of the settings below (keys as the flags, with `_`).
    #[arg(long, env = "COORDINATOR_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The coordinator's WebSocket URL, e.g. ws://127.0.0.1:4000/ws (wss:// for
    /// TLS; http(s):// also accepted; without a port, 80 or 443). Repeat for
    /// several coordinators (the variable takes a comma-separated list): they are
    /// tried in turn until one answers.
    #[arg(
        long = "hub",
        value_name = "URL",
        env = "COORDINATOR_AGENT_HUB",
        value_delimiter = ','
    )]
    pub hubs: Vec<String>,
    /// The agent id the token was created for.
    #[arg(long, env = "COORDINATOR_AGENT_AGENT_ID")]
    pub agent_id: Option<String>,
    /// The agent token (`coordinator token create AGENT_ID`).
    #[arg(long, env = "COORDINATOR_AGENT_TOKEN")]
    pub token: Option<String>,
    /// A capability; repeat for several (the variable takes a comma-separated list).
    #[arg(
        long = "capability",
        env = "COORDINATOR_AGENT_CAPABILITIES",
        value_delimiter = ','
    )]
    pub capabilities: Vec<String>,
    /// The command run for each task, through `sh -c`, with the task JSON on stdin.
    #[arg(long, env = "COORDINATOR_AGENT_EXEC")]
    pub exec: Option<String>,
    /// Where the held task is kept across restarts.
    #[arg(long, env = "COORDINATOR_AGENT_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Kill the command and fail the task after this many seconds (default: no limit).
    #[arg(long, env = "COORDINATOR_AGENT_TASK_TIMEOUT")]
    pub task_timeout: Option<u64>,
    /// At most this many bytes of stdout go into a result.
    #[arg(long, env = "COORDINATOR_AGENT_MAX_OUTPUT_BYTES")]
    pub max_output_bytes: Option<usize>,
    /// On SIGTERM/SIGINT, let a running command finish for up to this many seconds.
    #[arg(long, env = "COORDINATOR_AGENT_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// First reconnect delay in milliseconds (doubles up to the maximum).
    #[arg(long, env = "COORDINATOR_AGENT_BACKOFF_INITIAL_MS")]
    pub backoff_initial_ms: Option<u64>,
    /// Largest reconnect delay in milliseconds.
    #[arg(long, env = "COORDINATOR_AGENT_BACKOFF_MAX_MS")]
    pub backoff_max_ms: Option<u64>,
    /// How long one connection attempt may take, from the TCP connect to the
    /// coordinator's `identified`, in milliseconds (default 10000); a coordinator
    /// that does not answer in time counts as unreachable and the next is tried.
    #[arg(long, env = "COORDINATOR_AGENT_IDENTIFY_TIMEOUT_MS")]
    pub identify_timeout_ms: Option<u64>,
    /// A display name.
    #[arg(long, env = "COORDINATOR_AGENT_NAME")]
    pub name: Option<String>,
}

/// `hub` in the file: one URL or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Hubs {
    One(String),
    Several(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    hub: Option<Hubs>,
    agent_id: Option<String>,
    token: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    exec: Option<String>,
    state_file: Option<PathBuf>,
    task_timeout: Option<u64>,
    max_output_bytes: Option<usize>,
    shutdown_grace: Option<u64>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    identify_timeout_ms: Option<u64>,
    name: Option<String>,
}

/// The settings, complete and checked.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// WebSocket URLs, tried in turn.
    pub hubs: Vec<String>,
    /// Agent id.
    pub agent_id: String,
    /// Token.
    pub token: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Command line.
    pub exec: String,
    /// State file.
    pub state_file: PathBuf,
    /// Per-task timeout.
    pub task_timeout: Option<Duration>,
    /// Output cap.
    pub max_output_bytes: usize,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Backoff start.
    pub backoff_initial: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// The most one connection attempt may take.
    pub identify_timeout: Duration,
    /// Display name.
    pub name: Option<String>,
}

impl AgentArgs {
    /// Merges flags, variables and the file; names what is missing.
    pub fn resolve(self) -> Result<RunnerConfig, String> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let need = |flag: &str, value: Option<String>| {
            value.ok_or_else(|| {
                format!(
                    "missing --{flag} (or COORDINATOR_AGENT_{}, or `{}` in the config file)",
                    flag.to_uppercase().replace('-', "_"),
                    flag.replace('-', "_")
                )
            })
        };
        let capabilities = if self.capabilities.is_empty() {
            file.capabilities
        } else {
            self.capabilities
        };
        let hubs: Vec<String> = if self.hubs.is_empty() {
            match file.hub {
                Some(Hubs::One(hub)) => vec![hub],
                Some(Hubs::Several(hubs)) => hubs,
                None => Vec::new(),
            }
        } else {
            self.hubs
        };
        let hubs: Vec<String> = hubs.into_iter().filter(|h| !h.trim().is_empty()).collect();
        if hubs.is_empty() {
            need("hub", None)?;
        }
        for hub in &hubs {
            coordinator_transport::client::HubUrl::parse(hub).map_err(|e| e.to_string())?;
        }
        Ok(RunnerConfig {
            hubs,
            agent_id: need("agent-id", self.agent_id.or(file.agent_id))?,
            token: need("token", self.token.or(file.token))?,
            capabilities: capabilities.into_iter().filter(|c| !c.is_empty()).collect(),
            exec: need("exec", self.exec.or(file.exec))?,
            state_file: self
                .state_file
                .or(file.state_file)
                .unwrap_or_else(|| PathBuf::from("./agent-state.json")),
            task_timeout: self
                .task_timeout
                .or(file.task_timeout)
                .map(Duration::from_secs),
            max_output_bytes: self
                .max_output_bytes
                .or(file.max_output_bytes)
                .unwrap_or(64 * 1024),
            shutdown_grace: Duration::from_secs(
                self.shutdown_grace.or(file.shutdown_grace).unwrap_or(30),
            ),
            backoff_initial: Duration::from_millis(
                self.backoff_initial_ms
                    .or(file.backoff_initial_ms)
                    .unwrap_or(1_000),
            ),
            backoff_max: Duration::from_millis(
                self.backoff_max_ms
                    .or(file.backoff_max_ms)
                    .unwrap_or(60_000),
            ),
            identify_timeout: Duration::from_millis(
                self.identify_timeout_ms
                    .or(file.identify_timeout_ms)
                    .unwrap_or(10_000),
            ),
            name: self.name.or(file.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_fills_what_flags_and_variables_leave_out() {
        let dir = std::env::temp_dir().join(format!("agent-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        std::fs::write(
            &file,
            "hub = \"ws://127.0.0.1:4000/ws\"\nagent_id = \"from-file\"\ntoken = \"t\"\nexec = \"true\"\ncapabilities = [\"gpu\"]\ntask_timeout = 9\n",
        )
        .unwrap();
        let args = AgentArgs {
            config: Some(file.clone()),
            agent_id: Some("from-flag".into()),
            ..AgentArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.agent_id, "from-flag");
        assert_eq!(config.hubs, ["ws://127.0.0.1:4000/ws"]);
        assert_eq!(config.capabilities, ["gpu"]);
        assert_eq!(config.task_timeout, Some(Duration::from_secs(9)));
        assert_eq!(config.state_file, PathBuf::from("./agent-state.json"));
        assert_eq!(config.backoff_initial, Duration::from_secs(1));
        assert_eq!(config.backoff_max, Duration::from_secs(60));
        assert_eq!(config.identify_timeout, Duration::from_secs(10));
        std::fs::write(
            &file,
            "hub = [\"ws://a:1/ws\", \"wss://b\"]\nagent_id = \"x\"\ntoken = \"t\"\nexec = \"true\"\n",
        )
        .unwrap();
        let config = AgentArgs {
            config: Some(file.clone()),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.hubs, ["ws://a:1/ws", "wss://b"]);
        std::fs::write(&file, "hub = \"ws://x:1/ws\"\nunknown_key = 1\n").unwrap();
        let err = AgentArgs {
            config: Some(file),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("unknown"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_bad_hub_url_is_refused_before_anything_starts() {
        let err = AgentArgs {
            hubs: vec!["ws://ok:1/ws".into(), "ftp://x/ws".into()],
            agent_id: Some("a".into()),
            token: Some("t".into()),
            exec: Some("true".into()),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.contains("ftp://x/ws") && err.contains("scheme"),
            "{err}"
        );
        let err = AgentArgs {
            agent_id: Some("a".into()),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("--hub"), "{err}");
    }

    #[test]
    fn a_missing_setting_is_named() {
        let err = AgentArgs {
            hubs: vec!["ws://x:1/ws".into()],
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.contains("--agent-id") && err.contains("COORDINATOR_AGENT_AGENT_ID"),
            "{err}"
        );
    }
}
