//! The route table: every route the HTTP server answers, in one place. The router
//! resolves requests against it and the OpenAPI document is checked against it.

use hyper::Method;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid token (agent or admin).
    Token,
    /// Any valid token, in the header or as `?token=` (for `EventSource`).
    Watch,
    /// An admin token.
    Admin,
}

/// The routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: liveness and uptime.
    Health,
    /// `GET /metrics`: OpenMetrics text.
    Metrics,
    /// `GET /openapi.json`: this API's OpenAPI document.
    OpenApi,
    /// `GET /dashboard`: the operator page.
    Dashboard,
    /// `GET /ws`: the agents' WebSocket upgrade.
    Ws,
    /// `POST /api/tasks`: submit one task.
    SubmitTask,
    /// `POST /api/tasks/batch`: submit many tasks, all or none.
    SubmitBatch,
    /// `GET /api/tasks`: tasks, filtered and paged.
    ListTasks,
    /// `GET /api/tasks/dead-letter`: dead-letter tasks, paged.
    DeadLetter,
    /// `GET /api/tasks/stats`: counts by status and lane.
    TaskStats,
    /// `GET /api/tasks/{id}`: one task with its history.
    GetTask,
    /// `POST /api/tasks/{id}/cancel`: cancel a live task.
    CancelTask,
    /// `POST /api/tasks/{id}/retry`: requeue a dead-letter task.
    RetryTask,
    /// `GET /api/agents`: every known agent.
    ListAgents,
    /// `GET /api/agents/{id}`: one agent.
    GetAgent,
    /// `POST /api/admin/tokens`: make a token.
    CreateToken,
    /// `GET /api/admin/tokens`: the tokens (no secrets).
    ListTokens,
    /// `DELETE /api/admin/tokens/{agent_id}`: revoke a name's tokens.
    RevokeToken,
    /// `GET /api/dashboard/state`: the dashboard snapshot.
    DashboardState,
    /// `GET /api/events`: server-sent events of committed changes.
    Events,
    /// `POST /api/agents/{id}/drain`: no new work for the agent.
    DrainAgent,
    /// `POST /api/agents/{id}/undrain`: new work for the agent again.
    UndrainAgent,
}

/// One row of the table.
#[derive(Debug)]
pub struct RouteSpec {
    /// The HTTP method.
    pub method: Method,
    /// The path template; `{name}` matches one non-empty segment.
    pub path: &'static str,
    /// Which route.
    pub route: Route,
    /// Who may call it.
    pub access: Access,
}

impl RouteSpec {
    /// True when only the leader answers it: a standby answers every route but
    /// the public ones (health, metrics, the OpenAPI document, the dashboard
    /// page, and the WebSocket upgrade, whose `identify` it closes with 1013)
    /// with 503 `not_leader`.
    pub fn needs_leader(&self) -> bool {
        self.access != Access::Public
    }
}

const fn spec(method: Method, path: &'static str, route: Route, access: Access) -> RouteSpec {
    RouteSpec {
        method,
        path,
        route,
        access,
    }
}

/// Every route. Literal paths come before templates that could also match them.
pub const ROUTES: &[RouteSpec] = &[
    spec(Method::GET, "/health", Route::Health, Access::Public),
    spec(Method::GET, "/metrics", Route::Metrics, Access::Public),
    spec(Method::GET, "/openapi.json", Route::OpenApi, Access::Public),
    spec(Method::GET, "/dashboard", Route::Dashboard, Access::Public),
    spec(Method::GET, "/ws", Route::Ws, Access::Public),
    spec(Method::POST, "/api/tasks", Route::SubmitTask, Access::Token),
    spec(Method::GET, "/api/tasks", Route::ListTasks, Access::Token),
    spec(
        Method::POST,
        "/api/tasks/batch",
        Route::SubmitBatch,
        Access::Token,
    ),
    spec(
        Method::GET,
        "/api/tasks/dead-letter",
        Route::DeadLetter,
        Access::Token,
    ),
    spec(
        Method::GET,
        "/api/tasks/stats",
        Route::TaskStats,
        Access::Token,
    ),
    spec(
        Method::GET,
        "/api/tasks/{id}",
        Route::GetTask,
        Access::Token,
    ),
    spec(
        Method::POST,
        "/api/tasks/{id}/cancel",
        Route::CancelTask,
        Access::Token,
    ),
    spec(
        Method::POST,
        "/api/tasks/{id}/retry",
        Route::RetryTask,
        Access::Token,
    ),
    spec(Method::GET, "/api/agents", Route::ListAgents, Access::Token),
    spec(
        Method::GET,
        "/api/agents/{id}",
        Route::GetAgent,
        Access::Token,
    ),
    spec(
        Method::POST,
        "/api/agents/{id}/drain",
        Route::DrainAgent,
        Access::Admin,
    ),
    spec(
        Method::POST,
        "/api/agents/{id}/undrain",
        Route::UndrainAgent,
        Access::Admin,
    ),
    spec(Method::GET, "/api/events", Route::Events, Access::Watch),
    spec(
        Method::GET,
        "/api/dashboard/state",
        Route::DashboardState,
        Access::Token,
    ),
    spec(
        Method::POST,
        "/api/admin/tokens",
        Route::CreateToken,
        Access::Admin,
    ),
    spec(
        Method::GET,
        "/api/admin/tokens",
        Route::ListTokens,
        Access::Admin,
    ),
    spec(
        Method::DELETE,
        "/api/admin/tokens/{agent_id}",
        Route::RevokeToken,
        Access::Admin,
    ),
];

/// Why a request matched no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// No template matches the path.
    NotFound,
    /// The path exists, with other methods.
    MethodNotAllowed,
}

fn matches(template: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut want = template.trim_matches('/').split('/');
    let mut got = path
        .trim_end_matches('/')
        .trim_start_matches('/')
        .split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => params.push(g.to_owned()),
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// The route for a request and the values of its `{}` segments. `HEAD` takes
/// the `GET` route of its path (hyper sends the answer's headers without its
/// body).
pub fn resolve(method: &Method, path: &str) -> Result<(&'static RouteSpec, Vec<String>), NoRoute> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let mut path_known = false;
    for spec in ROUTES {
        if let Some(params) = matches(spec.path, path) {
            if spec.method == method {
                return Ok((spec, params));
            }
            path_known = true;
        }
    }
    Err(if path_known {
        NoRoute::MethodNotAllowed
    } else {
        NoRoute::NotFound
    })
}

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../../openapi.json");

#[cfg(test)]
mod tests;
