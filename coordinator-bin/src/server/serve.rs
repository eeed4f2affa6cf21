//! `coordinator serve`: open storage, rebuild the core, serve until a signal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator_queue::{QueueConfig, ScheduledWindow};
use coordinator_scheduler::SchedulerConfig;
use coordinator_transport::server::SocketConfig;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::cli::ServeArgs;
use crate::server::auth::{self, Authenticator, Identity};
use crate::server::clock::now_ms;
use crate::server::connections::{open_files_wanted, Limiter, SPARE_OPEN_FILES};
use crate::server::db;
use crate::server::driver::{Driver, Inbox};
use crate::server::events::{self, EventHub};
use crate::server::http::{self, AppState, BodyLimits};
use crate::server::lease;
use crate::server::store::{self, Location, Store};
use crate::session::lease::{Lease, LeaseConfig};
use crate::session::{Session, SessionConfig};

type BoxError = Box<dyn std::error::Error>;

/// Runs the service until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> Result<(), BoxError> {
    crate::logging::init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

fn admin_token_path(args: &ServeArgs) -> PathBuf {
    args.admin_token_file
        .clone()
        .unwrap_or_else(|| match Location::of(&args.db) {
            Location::Sqlite(path) => {
                let mut p = path.into_os_string();
                p.push(".admin-token");
                PathBuf::from(p)
            }
            Location::Postgres(_) => PathBuf::from(POSTGRES_ADMIN_TOKEN_FILE),
        })
}

/// Raises the soft limit on open files towards what `--max-connections` needs
/// (with the usual soft limit of 1,024, accepting would fail with "too many
/// open files" long before the connection cap), and says so in the log; warns
/// when the hard limit does not allow it.
#[cfg(unix)]
fn raise_open_files_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut now = soft;
    if let Some(wanted) = open_files_wanted(soft, hard, max_connections) {
        match setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
            Ok(()) => {
                now = wanted;
                tracing::info!(
                    from = soft,
                    to = wanted,
                    max_connections,
                    "open files limit raised for --max-connections"
                );
            }
            Err(e) => tracing::warn!(error = %e, soft, "cannot raise the open files limit"),
        }
    }
    let need = (max_connections as u64).saturating_add(SPARE_OPEN_FILES);
    if now < need {
        tracing::warn!(
            limit = now,
            max_connections,
            "the open files limit is below --max-connections: past about that many connections, \
             accepting fails; raise the hard limit (ulimit -Hn, systemd LimitNOFILE) or lower --max-connections"
        );
    }
}

/// The admin token file when the database is PostgreSQL and
/// `--admin-token-file` is not given (in the working directory).
const POSTGRES_ADMIN_TOKEN_FILE: &str = "coordinator.admin-token";

/// Refuses an admin token file that others could read or that is a symbolic
/// link; a missing one is fine.
fn check_admin_token_file(path: &Path) -> Result<(), BoxError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(format!(
                "cannot inspect the admin token file {}: {e}",
                path.display()
            )
            .into())
        }
    };
    if meta.file_type().is_symlink() {
        return Err(format!(
            "the admin token file {} is a symbolic link; refusing to use it (remove it, or point --admin-token-file at a regular file)",
            path.display()
        )
        .into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the admin token file {} has mode {mode:03o}: group or others can read it; refusing to start (run `chmod 600 {}` and consider revoking that token)",
                path.display(),
                path.display()
            )
            .into());
        }
    }
    Ok(())
}

/// On the very first start, creates an admin token and writes it to a new file
/// (created exclusively, without following a symbolic link, mode 0600).
async fn bootstrap_admin(store: &dyn Store, path: &Path) -> Result<(), BoxError> {
    check_admin_token_file(path)?;
    if store.meta_get("admin_bootstrapped").await?.is_some() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(nix::libc::O_NOFOLLOW);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "cannot write the admin token file {}: it already exists (left from another database?); remove it or choose another --admin-token-file",
                path.display()
            )
        } else {
            format!("cannot write the admin token file {}: {e}", path.display())
        }
    })?;
    let written = async {
        let token = auth::generate_token();
        store
            .insert_token(
                &Identity::Admin("admin".into()),
                &auth::hash(&token),
                now_ms(),
            )
            .await?;
        writeln!(file, "{token}")?;
        file.sync_all()?;
        store
            .meta_set("admin_bootstrapped", &now_ms().to_string())
            .await?;
        Ok::<(), BoxError>(())
    }
    .await;
    if let Err(e) = written {
        // Leave nothing half-made: the next start tries again.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    tracing::info!(path = %path.display(), "first start: admin token written (mode 0600)");
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    args.check()?;
    #[cfg(unix)]
    raise_open_files_limit(args.max_connections);
    let store = store::open_for_service(&args.db).await?;
    bootstrap_admin(&*store, &admin_token_path(&args)).await?;

    // Bound before the state is restored: a client that connects meanwhile
    // waits in the listen backlog and is served once restore is done, rather
    // than being refused.
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let started = Instant::now();
    let config = SessionConfig {
        scheduler: SchedulerConfig::default()
            .with_queue(
                QueueConfig::default()
                    .with_default_max_retries(args.max_retries)
                    .with_stuck_after_ms(args.stuck_after_ms)
                    .with_max_reclaims(args.max_reclaims)
                    .with_scheduled_window(Some(ScheduledWindow::new(
                        args.scheduled_window_ms,
                        usize::try_from(args.scheduled_window_tasks).unwrap_or(usize::MAX),
                    ))),
            )
            .with_accept_timeout_ms(args.accept_timeout_ms)
            .with_recovery_grace_ms(args.recovery_grace_ms)
            .with_reject_backoff_ms(1_000)
            .with_cancel_grace_ms(args.cancel_grace_ms)
            .with_identify_settle_ms(args.identify_settle_ms),
        sweep_interval_ms: args.sweep_interval_ms.max(1),
        retention_ms: args.retention_hours.saturating_mul(3_600_000),
        identify_timeout_ms: args.identify_timeout_ms,
        max_unidentified: args.max_unidentified,
        max_queued: args.max_queued,
        max_metadata_bytes: args.max_metadata_bytes,
    };
    // Long descriptions and metadata stay in storage: only their lengths are read.
    let max_inline = config.scheduler.queue.max_inline_payload_bytes;
    let lease_sql = store.lease();
    let session = match &lease_sql {
        // A shared database: start as a standby; the lease restores the live
        // state when it takes over.
        Some(_) => Session::new_standby(config, now_ms(), None)?,
        None => restore(&*store, config, max_inline, started).await?,
    };
    let lease = match lease_sql {
        Some(sql) => {
            let advertise_url = match &args.advertise_url {
                Some(url) => url.clone(),
                None => format!("http://{}", listener.local_addr()?),
            };
            let node_id = format!("{advertise_url}/{}/{}", std::process::id(), now_ms());
            let config = LeaseConfig::new(
                node_id,
                advertise_url,
                args.lease_renew_ms,
                args.lease_timeout_ms,
            )?;
            tracing::info!(advertise_url = %config.advertise_url, "standing by until the lease is free");
            Some((Lease::new(config, now_ms()), sql))
        }
        None => None,
    };

    let (writer, commits) = store.start_writer().await?;
    let auth = Authenticator::new(store.clone()).await?;
    let (commands_tx, commands_rx) = mpsc::channel(4096);
    let (sockets_tx, sockets_rx) = mpsc::channel(8192);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let events = Arc::new(EventHub::new(events::WINDOW, events::LAG_LIMIT));
    let driver = Driver::new(
        session,
        writer,
        auth.clone(),
        store.clone(),
        commands_tx.clone(),
        events.clone(),
    );
    let role = driver.role_watch();
    let inbox = Inbox {
        commands: commands_rx,
        sockets: sockets_rx,
        commits,
        shutdown: shutdown_rx.clone(),
    };
    let mut driver_task = tokio::spawn(driver.run(inbox));
    let lease_task = lease.map(|(lease, sql)| {
        tokio::spawn(lease::run(
            lease,
            sql,
            store.clone(),
            max_inline,
            commands_tx.clone(),
            shutdown_rx.clone(),
        ))
    });

    let request_timeout = Duration::from_millis(args.request_timeout_ms.max(1));
    let state = Arc::new(AppState {
        commands: commands_tx,
        sockets: sockets_tx,
        store,
        auth,
        socket_config: SocketConfig {
            max_frame_bytes: args.max_frame_bytes,
            ping_interval: Duration::from_millis(args.ping_interval_ms.max(1)),
            pong_timeout: Duration::from_millis(args.pong_timeout_ms),
            outbound_capacity: 1024,
            max_outbound_bytes: args.max_outbound_bytes,
        },
        body_limits: BodyLimits {
            max_bytes: args.max_body_bytes,
            timeout: request_timeout,
        },
        started,
        next_connection: AtomicU64::new(1),
        events,
        role,
    });
    // Signals are taken over before anyone can learn the address: a SIGTERM sent
    // right after the `serving` line is a graceful stop, never the default kill.
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "coordinator serving");

    let mut shutdown = shutdown_rx.clone();
    #[cfg(unix)]
    let signals = tokio::spawn(wait_for_signal(shutdown_tx, term));
    #[cfg(not(unix))]
    let signals = tokio::spawn(wait_for_signal(shutdown_tx));
    let connections = Limiter::new(args.max_connections);
    let mut stopped = None;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
            outcome = &mut driver_task => {
                stopped = Some(outcome);
                break;
            }
        };
        let _ = stream.set_nodelay(true);
        // The slot travels with the stream, through a WebSocket upgrade too.
        let stream = match connections.admit(stream) {
            Ok(stream) => stream,
            Err(stream) => {
                connections.refuse(stream);
                continue;
            }
        };
        let state = state.clone();
        let mut conn_shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| http::handle(req, state.clone()));
            // The header timeout also closes a keep-alive connection left idle
            // that long (hyper starts it when it waits for the next request).
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(request_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                }
            }
        });
    }
    drop(listener);
    let outcome = match stopped {
        Some(outcome) => outcome,
        None => {
            tracing::info!("shutting down: no new connections; finishing in-flight work");
            driver_task.await
        }
    };
    signals.abort();
    if let Some(lease_task) = lease_task {
        lease_task.abort();
    }
    match outcome {
        Ok(Ok(())) => {
            tracing::info!("bye");
            Ok(())
        }
        Ok(Err(fatal)) => Err(format!("stopped: {fatal}").into()),
        Err(e) => Err(format!("the driver failed: {e}").into()),
    }
}

/// The live state of a coordinator that always leads, read from `store`.
async fn restore(
    store: &dyn Store,
    config: SessionConfig,
    max_inline: usize,
    started: Instant,
) -> Result<Session, BoxError> {
    let live = store.load_live_tasks(max_inline).await.map_err(|e| match e {
        db::DbError::DamagedLive(_) => format!(
            "{e}. No task was changed and the service did not start: run `coordinator check --db {}` to list every damaged row, repair or remove those rows, and start again",
            store.describe()
        ),
        e => e.to_string(),
    })?;
    let n_live = live.tasks.len();
    let mut session = Session::new(config, now_ms(), live.tasks)?;
    // Scheduled tasks stay in storage; the session reads them as they come due.
    session.handle_stored_scheduled(live.next_queue_seq);
    tracing::info!(live_tasks = n_live, elapsed_ms = started.elapsed().as_millis() as u64, db = %store.describe(), "state restored");
    Ok(session)
}

#[cfg(unix)]
async fn wait_for_signal(shutdown: watch::Sender<bool>, mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = shutdown.send(true);
}

#[cfg(not(unix))]
async fn wait_for_signal(shutdown: watch::Sender<bool>) {
    let _ = tokio::signal::ctrl_c().await;
    let _ = shutdown.send(true);
}
