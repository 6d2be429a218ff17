//! `/v1/fleet/rollouts` (admin): create a draft, read it with its counts per
//! state per wave, start, pause, resume, approve the next wave, cancel, and
//! its event history.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use reelay_shared::fleet::RolloutId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::Admin,
    error::{ApiError, ApiResult, JsonBody},
    fleet::rollouts::{self, Command, NewRollout, RolloutView},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/fleet/rollouts", get(list).post(create))
        .route("/v1/fleet/rollouts/{id}", get(show))
        .route("/v1/fleet/rollouts/{id}/start", post(start))
        .route("/v1/fleet/rollouts/{id}/pause", post(pause))
        .route("/v1/fleet/rollouts/{id}/resume", post(resume))
        .route("/v1/fleet/rollouts/{id}/cancel", post(cancel))
        .route("/v1/fleet/rollouts/{id}/approve", post(approve))
        .route("/v1/fleet/rollouts/{id}/events", get(history))
}

fn rollout_id(id: &str) -> ApiResult<RolloutId> {
    RolloutId::parse(id).ok_or(ApiError::NoSuch("rollout"))
}

/// `POST /v1/fleet/rollouts`: 201 with the draft.
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<NewRollout>,
) -> ApiResult<(StatusCode, Json<RolloutView>)> {
    let id = rollouts::create(&state, admin, body).await?;
    Ok((StatusCode::CREATED, Json(rollouts::view(&state, id).await?)))
}

async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    Ok(Json(rollouts::view(&state, rollout_id(&id)?).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/fleet/rollouts?limit=&cursor=`: newest first.
async fn list(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 100".into(),
        ));
    }
    let bad = || ApiError::BadRequest("cursor is not one this API returned".into());
    let before = match q.cursor.as_deref() {
        None => None,
        Some(cursor) => {
            let text = URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(bad)?;
            let (micros, id) = text.split_once(':').ok_or_else(bad)?;
            let at = micros
                .parse()
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .ok_or_else(bad)?;
            Some((at, RolloutId::parse(id).ok_or_else(bad)?))
        }
    };
    let mut page = state.store.rollouts(before, limit + 1).await?;
    let next_cursor = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|r| {
            URL_SAFE_NO_PAD.encode(format!("{}:{}", r.created_at.timestamp_micros(), r.id))
        })
    } else {
        None
    };
    let mut views = Vec::with_capacity(page.len());
    for r in page {
        views.push(rollouts::view(&state, r.id).await?);
    }
    Ok(Json(
        json!({ "rollouts": views, "next_cursor": next_cursor }),
    ))
}

async fn start(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    let id = rollout_id(&id)?;
    rollouts::start(&state, id).await?;
    Ok(Json(rollouts::view(&state, id).await?))
}

async fn run(state: &AppState, id: &str, command: Command) -> ApiResult<Json<RolloutView>> {
    let id = rollout_id(id)?;
    rollouts::command(state, id, command).await?;
    Ok(Json(rollouts::view(state, id).await?))
}

async fn pause(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    run(&state, &id, Command::Pause).await
}

async fn resume(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    run(&state, &id, Command::Resume).await
}

async fn cancel(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    run(&state, &id, Command::Cancel).await
}

async fn approve(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    run(&state, &id, Command::Approve).await
}

/// `GET /v1/fleet/rollouts/{id}/events`: the rollout's own events.
async fn history(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = rollout_id(&id)?;
    state
        .store
        .rollout(id)
        .await?
        .ok_or(ApiError::NoSuch("rollout"))?;
    let events = state.store.history(id).await?;
    Ok(Json(json!({ "rollout_id": id, "events": events })))
}
