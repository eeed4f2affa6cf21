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
    /// An admin token.
    Admin,
}

/// The routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    OpenApi,
    Dashboard,
    Ws,
    SubmitTask,
    SubmitBatch,
    ListTasks,
    DeadLetter,
    TaskStats,
    GetTask,
    CancelTask,
    RetryTask,
    ListAgents,
    GetAgent,
    CreateToken,
    ListTokens,
    RevokeToken,
    DashboardState,
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

/// The route for a request and the values of its `{}` segments.
pub fn resolve(method: &Method, path: &str) -> Result<(&'static RouteSpec, Vec<String>), NoRoute> {
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
pub const OPENAPI: &str = include_str!("../../openapi.json");

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn literal_routes_win_over_templates() {
        assert_eq!(
            resolve(&Method::GET, "/api/tasks/stats").unwrap().0.route,
            Route::TaskStats
        );
        let (spec, params) = resolve(&Method::GET, "/api/tasks/abc").unwrap();
        assert_eq!(
            (spec.route, params),
            (Route::GetTask, vec!["abc".to_owned()])
        );
        assert_eq!(
            resolve(&Method::PUT, "/api/tasks").unwrap_err(),
            NoRoute::MethodNotAllowed
        );
        assert_eq!(
            resolve(&Method::GET, "/api/nothing").unwrap_err(),
            NoRoute::NotFound
        );
        assert_eq!(
            resolve(&Method::GET, "/api/tasks//cancel").unwrap_err(),
            NoRoute::NotFound
        );
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        assert_eq!(
            documented, served,
            "openapi.json and the route table disagree"
        );
    }
}
