//! The HTTP API on hyper. One request: resolve its route in the table,
//! authenticate it by the route's access, dispatch it to the route's handler;
//! an error becomes a JSON answer.
//!
//! Code map: `routes.rs` (the table and the OpenAPI document), `access.rs`
//! (bearer tokens), `body.rs` (bodies and query strings), `ask.rs` (asking the
//! session), `json.rs` (JSON views), `response.rs` (building answers) and
//! `handlers/` (one function per route, grouped by resource; each decodes,
//! calls, encodes).

mod access;
mod ask;
pub(crate) mod body;
pub(crate) mod handlers;
mod json;
mod response;
pub(crate) mod routes;

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use coordinator_transport::server::{SocketConfig, SocketEvent};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::sync::mpsc;

use crate::server::api_error::ApiError;
use crate::server::auth::Authenticator;
use crate::server::driver::Command;
use crate::server::events::EventHub;
use crate::server::store::Store;
pub use body::BodyLimits;
use handlers::{agents, events, ops, tasks, tokens, ws};
use response::{error_response, Resp};
use routes::{NoRoute, Route};

/// Everything the handlers share.
pub struct AppState {
    /// The engine's inbox.
    pub commands: mpsc::Sender<Command>,
    /// The engine's socket inbox.
    pub sockets: mpsc::Sender<SocketEvent>,
    /// Read-only database connections.
    pub store: Arc<dyn Store>,
    /// Token checks.
    pub auth: Authenticator,
    /// Limits of agent sockets.
    pub socket_config: SocketConfig,
    /// How large a request body may be and how long it may take to arrive.
    pub body_limits: BodyLimits,
    /// When the service started.
    pub started: Instant,
    /// Connection ids for sockets.
    pub next_connection: AtomicU64,
    /// Committed events for watchers.
    pub events: Arc<EventHub>,
    /// Leader or standby, as the session last said.
    pub role: tokio::sync::watch::Receiver<crate::session::Role>,
}

/// Serves one request; never fails (errors become JSON answers).
pub async fn handle(req: Request<Incoming>, state: Arc<AppState>) -> Result<Resp, Infallible> {
    Ok(serve(req, &state)
        .await
        .unwrap_or_else(|err| error_response(&err)))
}

/// What a handler may need of the request besides its body.
struct Call {
    /// The name of the caller's token; empty on public routes.
    caller: String,
    /// The value of the path's `{}` segment; empty when it has none.
    id: String,
    /// The raw query string; empty when there is none.
    query: String,
}

async fn serve(req: Request<Incoming>, state: &AppState) -> Result<Resp, ApiError> {
    let (spec, params) = routes::resolve(req.method(), req.uri().path())
        .map_err(|no| no_route(no, req.method(), req.uri().path()))?;
    if spec.needs_leader() {
        // Before the token check: a standby reads nothing for a client it sends away.
        if let Some(refusal) = state.role.borrow().not_leader() {
            return Err(ApiError::not_leader(refusal));
        }
    }
    let query = req.uri().query().unwrap_or("");
    let identity = access::authenticate(req.headers(), query, &state.auth, spec.access).await?;
    let call = Call {
        caller: identity
            .as_ref()
            .map(|i| i.name().to_owned())
            .unwrap_or_default(),
        id: params.into_iter().next().unwrap_or_default(),
        query: req.uri().query().unwrap_or("").to_owned(),
    };
    dispatch(spec.route, req, state, call).await
}

async fn dispatch(
    route: Route,
    req: Request<Incoming>,
    state: &AppState,
    call: Call,
) -> Result<Resp, ApiError> {
    let Call { caller, id, query } = call;
    match route {
        Route::Health => Ok(ops::health(state)),
        Route::Metrics => ops::metrics(state).await,
        Route::OpenApi => Ok(ops::openapi()),
        Route::Dashboard => Ok(ops::dashboard_page()),
        Route::DashboardState => ops::dashboard_state(state).await,
        Route::Ws => ws::upgrade(req, state),
        Route::SubmitTask => tasks::submit(req, state, &caller).await,
        Route::SubmitBatch => tasks::submit_batch(req, state, &caller).await,
        Route::ListTasks => tasks::list(state, &query).await,
        Route::DeadLetter => tasks::dead_letter(state, &query).await,
        Route::TaskStats => tasks::stats(state).await,
        Route::GetTask => tasks::get(state, id).await,
        Route::CancelTask => tasks::cancel(state, id).await,
        Route::RetryTask => tasks::retry(state, id).await,
        Route::ListAgents => agents::list(state).await,
        Route::GetAgent => agents::get(state, &id).await,
        Route::DrainAgent => agents::drain(state, &id, true).await,
        Route::UndrainAgent => agents::drain(state, &id, false).await,
        Route::Events => events::stream(state, req.headers(), &query),
        Route::CreateToken => tokens::create(req, state).await,
        Route::ListTokens => tokens::list(state).await,
        Route::RevokeToken => tokens::revoke(state, id, &query).await,
    }
}

/// The 404 or 405 of a request no route takes.
fn no_route(no: NoRoute, method: &Method, path: &str) -> ApiError {
    match no {
        NoRoute::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {method} {path}"),
        ),
        NoRoute::MethodNotAllowed => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} does not take {method}"),
        ),
    }
}

#[cfg(test)]
mod tests;
