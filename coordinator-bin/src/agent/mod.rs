//! `coordinator agent`: the bundled sidecar that makes any command-line program an
//! agent, written on the agent SDK of `transport-ws`
//! ([`coordinator_transport::client::agent`]). One task at a time; the task is saved to the
//! state file before it is accepted and its outcome is kept until the coordinator
//! acknowledges it; every (re)connect while holding a task names it in `identify`
//! (`current_task`) and sends `task_recovering`, so that the task is re-attached
//! rather than run again. Those rules are the SDK's; this file only runs a
//! command per job, forwards its progress lines and outcome, and turns SIGTERM
//! and SIGINT into a graceful stop.

mod command;
pub mod config;

use std::time::Duration;

use coordinator_transport::client::agent::{AgentClient, Job, Outcome, StateFile};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use command::RunSettings;
use config::RunnerConfig;

/// On exit, stopped commands get this long to be reaped (their process group is
/// killed on the way).
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM/SIGINT (exit 0) or a refused token (error).
pub fn run(config: RunnerConfig) -> Result<(), String> {
    crate::logging::init_logging(crate::cli::LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(main_loop(config))
}

async fn main_loop(config: RunnerConfig) -> Result<(), String> {
    let state = StateFile::new(&config.state_file);
    if let Some(task) = state.read()? {
        tracing::info!(
            task_id = task.task_id.as_str(),
            generation = task.generation,
            "state file holds a task; will recover it"
        );
    }
    let mut builder = AgentClient::builder(&config.hubs, &config.agent_id, &config.token)
        .capabilities(config.capabilities.clone())
        .client_type("coordinator-agent")
        .state_hook(state)
        .identify_timeout(config.identify_timeout)
        .backoff(config.backoff_initial, config.backoff_max)
        .shutdown_grace(config.shutdown_grace);
    if let Some(name) = &config.name {
        builder = builder.name(name);
    }
    let settings = RunSettings {
        exec: config.exec.clone(),
        timeout: config.task_timeout,
        max_output_bytes: config.max_output_bytes,
    };
    let mut signals = Signals::new()?;
    let mut agent = tokio::select! {
        agent = builder.connect() => agent.map_err(|e| e.to_string())?,
        // Nothing runs yet: a held task stays in the state file.
        () = signals.recv() => return Ok(()),
    };
    let mut commands: Vec<JoinHandle<()>> = Vec::new();
    loop {
        tokio::select! {
            job = agent.next() => match job {
                Some(job) => {
                    commands.retain(|c| !c.is_finished());
                    commands.push(tokio::spawn(run_job(job, settings.clone())));
                }
                None => break,
            },
            () = signals.recv() => {
                tracing::info!("stop requested: taking no new work");
                agent.stop();
            }
        }
    }
    // Commands stopped by a cancellation: their process groups are killed; wait
    // (bounded) until they are gone.
    for command in commands {
        let _ = tokio::time::timeout(REAP_TIMEOUT, command).await;
    }
    agent.join().await.map_err(|e| e.to_string())
}

/// Runs one job's command and reports its progress lines and outcome.
async fn run_job(job: Job, settings: RunSettings) {
    let handle = job.handle();
    let task_id = job.task_id().to_owned();
    tracing::info!(
        task_id,
        generation = job.generation(),
        restored = job.is_restored(),
        "running the command"
    );
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let progress = handle.clone();
    // Ends with the command's stdout.
    tokio::spawn(async move {
        while let Some(value) = progress_rx.recv().await {
            // Refused once the job is over; nothing to do about that.
            let _ = progress.progress(value).await;
        }
    });
    let outcome = command::run(&job, &settings, progress_tx, job.cancel_token()).await;
    let reported = match outcome {
        Some(Outcome::Complete {
            result,
            tokens_used,
        }) => match tokens_used {
            Some(tokens) => handle.complete_with_tokens(result, tokens).await,
            None => handle.complete(result).await,
        },
        Some(Outcome::Failed { error }) => handle.fail(error).await,
        None => {
            tracing::info!(task_id, "command stopped: the job was cancelled");
            return;
        }
    };
    if let Err(e) = reported {
        tracing::warn!(task_id, error = %e, "the command's outcome was not taken");
    }
}

/// SIGTERM and SIGINT as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            int: signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
