//! Tests of the route table: resolution and agreement with openapi.json.

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
fn head_takes_the_get_route_of_its_path() {
    assert_eq!(
        resolve(&Method::HEAD, "/health").unwrap().0.route,
        Route::Health
    );
    assert_eq!(
        resolve(&Method::HEAD, "/api/tasks/stats").unwrap().0.route,
        Route::TaskStats
    );
    let (spec, params) = resolve(&Method::HEAD, "/api/tasks/abc").unwrap();
    assert_eq!(
        (spec.route, params),
        (Route::GetTask, vec!["abc".to_owned()])
    );
    assert_eq!(
        resolve(&Method::HEAD, "/api/tasks/abc/cancel").unwrap_err(),
        NoRoute::MethodNotAllowed
    );
    assert_eq!(
        resolve(&Method::HEAD, "/api/admin/tokens/x").unwrap_err(),
        NoRoute::MethodNotAllowed
    );
    assert_eq!(
        resolve(&Method::HEAD, "/nothing").unwrap_err(),
        NoRoute::NotFound
    );
}

#[test]
fn every_get_route_takes_head() {
    for spec in ROUTES.iter().filter(|r| r.method == Method::GET) {
        let path = spec.path.replace("{id}", "x").replace("{agent_id}", "x");
        assert_eq!(
            resolve(&Method::HEAD, &path).map(|(s, _)| s.route),
            Ok(spec.route),
            "HEAD {path}"
        );
    }
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
