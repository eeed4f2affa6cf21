//! Who is calling: the bearer token of a request checked against the route's
//! access.

use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, StatusCode};

use crate::server::api_error::ApiError;
use crate::server::auth::{Authenticator, Identity};
use crate::server::http::routes::Access;

/// The caller's identity if the route's access lets it in; `None` on public
/// routes (no token is looked at). 401 without a known token, 403 for an agent
/// token on an admin route. On [`Access::Watch`] routes the token may also come
/// as the `token` key of the query string (`EventSource` cannot send headers).
pub async fn authenticate(
    headers: &HeaderMap,
    query: &str,
    auth: &Authenticator,
    access: Access,
) -> Result<Option<Identity>, ApiError> {
    match access {
        Access::Public => Ok(None),
        Access::Token => Ok(Some(identify(headers, auth).await?)),
        Access::Watch => match bearer_token(headers) {
            Some(_) => Ok(Some(identify(headers, auth).await?)),
            None => {
                let token = query_token(query).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "missing Authorization: Bearer <token> (or ?token=)",
                    )
                })?;
                let identity = auth.check(&token).await.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "unknown or revoked token",
                    )
                })?;
                Ok(Some(identity))
            }
        },
        Access::Admin => {
            let identity = identify(headers, auth).await?;
            if !matches!(identity, Identity::Admin(_)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this route needs an admin token",
                ));
            }
            Ok(Some(identity))
        }
    }
}

async fn identify(headers: &HeaderMap, auth: &Authenticator) -> Result<Identity, ApiError> {
    let token = bearer_token(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <token>",
        )
    })?;
    auth.check(token).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown or revoked token",
        )
    })
}

/// The `token` key of a query string, trimmed; `None` when absent or empty.
pub fn query_token(query: &str) -> Option<String> {
    super::body::query_pairs(query)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header, trimmed; `None`
/// when the header is missing, not text, of another scheme, or empty.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests;
