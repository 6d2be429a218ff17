//! The web console: `/console/` serves the bundle `make web` builds into
//! `REELAY_WEB_DIR/console/` (every script and style from npm, none from a
//! CDN), `/` sends people there, and `/v1/dev/tokens` mints the tokens of
//! its development sign-in buttons when `REELAY_DEV_TOKENS` is set. The
//! console's other calls are the public API's.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower_http::services::ServeDir;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::{
    auth::{self, Role},
    error::{ApiError, ApiResult, JsonBody},
    openapi::{BadRequest, TooLarge, TooManyRequests},
    routes::Routes,
    state::AppState,
    throttle::Throttled,
};

/// How long a development token lives.
const DEV_TOKEN_TTL_SECS: u64 = 86_400;

/// Scripts only from the api's own origin (no inline script, no plugin, no
/// framing by other sites); media, posters and segments come from S3
/// (presigned URLs) wherever it is, so those stay open; Uppy sets inline
/// styles and shows thumbnails from blobs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob: *; \
     media-src 'self' blob: *; connect-src 'self' *; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The console's pages are not part of the API: these routes are the ones
/// the OpenAPI document leaves out (`crate::openapi::UNDOCUMENTED`).
pub fn router() -> Routes {
    let assets = Routes::new()
        .route("/console/", get(asset))
        .route("/console/{*file}", get(asset))
        .layer(middleware::from_fn(console_headers));
    Routes::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .merge(assets)
        .routes(routes!(dev_tokens_offered, mint))
}

/// A file of the console's bundle; `/console/` is its `index.html`.
async fn asset(State(state): State<AppState>, request: Request) -> Response {
    let mut files = ServeDir::new(&state.config.web_dir).append_index_html_on_directories(true);
    match files.try_call(request).await {
        Ok(response) if response.status() == StatusCode::NOT_FOUND => {
            ApiError::NoSuch("console file (is the bundle built? `make web`)").into_response()
        }
        Ok(response) => response.map(axum::body::Body::new),
        Err(e) => ApiError::Internal(anyhow::Error::new(e).context("reading the console bundle"))
            .into_response(),
    }
}

/// The console is revalidated on every load (its file names do not change
/// between builds) and runs under a content security policy.
async fn console_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// The roles the development sign-in mints tokens for.
#[derive(Serialize, ToSchema)]
struct Offered {
    roles: [Role; 2],
}

/// Minting is on, and the request comes from this machine and not from
/// another site's page: with `REELAY_CORS_ORIGINS=*` any page a developer
/// opens could otherwise ask for an admin token.
fn dev_tokens_on(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> ApiResult<()> {
    if !state.config.dev_tokens {
        return Err(ApiError::NoSuch(
            "token minting (development only: REELAY_DEV_TOKENS is off)",
        ));
    }
    if !peer.ip().is_loopback() {
        return Err(ApiError::Forbidden(
            "development tokens are minted only for this machine",
        ));
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|site| site != "same-origin" && site != "none") {
        return Err(ApiError::Forbidden(
            "development tokens are minted only for the console's own pages",
        ));
    }
    Ok(())
}

/// Whether development tokens are minted here (development only).
///
/// 200 with the roles offered when `REELAY_DEV_TOKENS` is on, 404
/// otherwise (the console shows its sign-in buttons only then).
#[utoipa::path(get, path = "/v1/dev/tokens", tag = "ops", security(()),
    responses((status = 200, description = "Minting is on", body = Offered),
        (status = 403, description = "Not from this machine, or from another site's page",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Minting is off",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        TooManyRequests))]
async fn dev_tokens_offered(
    State(state): State<AppState>,
    _: Throttled,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<Offered>> {
    dev_tokens_on(&state, peer, &headers)?;
    Ok(Json(Offered {
        roles: [Role::User, Role::Admin],
    }))
}

/// The role of the token to mint: `user` or `admin`.
#[derive(Deserialize, ToSchema)]
struct MintRequest {
    role: Role,
}

/// A development token for a new user id, valid for a day.
#[derive(Serialize, ToSchema)]
struct Minted {
    token: String,
    user_id: Uuid,
    role: Role,
    expires_at: DateTime<Utc>,
}

/// Mint a development token for a new user (development only).
#[utoipa::path(post, path = "/v1/dev/tokens", tag = "ops", security(()), request_body = MintRequest,
    responses((status = 201, description = "The token", body = Minted), BadRequest,
        (status = 403, description = "Not from this machine, or from another site's page",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Minting is off",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        TooLarge, TooManyRequests))]
async fn mint(
    State(state): State<AppState>,
    _: Throttled,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(asked): JsonBody<MintRequest>,
) -> ApiResult<(StatusCode, Json<Minted>)> {
    dev_tokens_on(&state, peer, &headers)?;
    if asked.role == Role::Service {
        return Err(ApiError::BadRequest(
            "role: the console mints user or admin tokens".into(),
        ));
    }
    let user_id = Uuid::new_v4();
    let token = auth::issue_with_role(
        &state.config.jwt_secret,
        user_id,
        asked.role,
        DEV_TOKEN_TTL_SECS,
    )
    .map_err(ApiError::Internal)?;
    Ok((
        StatusCode::CREATED,
        Json(Minted {
            token,
            user_id,
            role: asked.role,
            expires_at: Utc::now() + chrono::Duration::seconds(DEV_TOKEN_TTL_SECS as i64),
        }),
    ))
}
