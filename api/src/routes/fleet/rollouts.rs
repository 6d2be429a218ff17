//! `/v1/fleet/rollouts` (admin): create a draft, read it with its counts per
//! state per wave, start, pause, resume, approve the next wave, cancel, and
//! its event history.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use reelay_shared::{fleet::RolloutId, store::RecordedEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::Admin,
    cursor,
    error::{ApiError, ApiResult, JsonBody},
    fleet::rollouts::{self, Command, NewRollout, RolloutView},
    openapi::{BadRequest, Conflict, Forbidden, NotFound, TooLarge},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(start))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(cancel))
        .routes(routes!(approve))
        .routes(routes!(history))
}

// Only a schema: the counts are a map from `UpdateState`'s names, with
// every state always there.
/// Device components per update state.
#[derive(ToSchema)]
#[schema(as = UpdateStateCounts)]
#[allow(dead_code)]
pub struct StateCounts {
    queued: i64,
    requested: i64,
    acknowledged: i64,
    succeeded: i64,
    failed: i64,
    timed_out: i64,
    cancelled: i64,
}

/// The schema of a new rollout's `error_threshold`, with the bounds
/// [`rollouts::create`] enforces (the derived one of `ErrorThreshold` has
/// none).
pub fn new_error_threshold() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
    };
    let variant = |name: &str, value: ObjectBuilder| {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(name, value)
            .required(name)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    OneOfBuilder::new()
        .item(variant(
            "count",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(u32::MAX)),
        ))
        .item(variant(
            "share",
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
                .exclusive_minimum(Some(0))
                .maximum(Some(1)),
        ))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "Final failures in one wave that pause the rollout: `{\"count\": n}` \
             (n ≥ 1) or `{\"share\": s}` of the wave (0 < s ≤ 1); a tenth when absent",
        ))
        .into()
}

fn rollout_id(id: &str) -> ApiResult<RolloutId> {
    RolloutId::parse(id).ok_or(ApiError::NoSuch("rollout"))
}

/// Create a rollout (admin): a draft, nothing is sent until it starts.
///
/// 400 for what is malformed (a target that is not a firmware id, two
/// targets for one component, both or neither of `devices` and `filter`,
/// wave percentages that do not add up to 100, a setting out of bounds);
/// 404 for an unknown firmware, an unregistered device or an unknown
/// model; 409 for a target firmware that
/// is not available, or, for explicit devices, one that runs a newer
/// version than a target unless `allow_downgrade`.
#[utoipa::path(post, path = "/v1/fleet/rollouts", tag = "fleet",
    request_body = NewRollout,
    responses(
        (status = 201, description = "The draft", body = RolloutView),
        BadRequest, Forbidden, crate::openapi::Missing, Conflict, TooLarge,
    ))]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<NewRollout>,
) -> ApiResult<(StatusCode, Json<RolloutView>)> {
    let id = rollouts::create(&state, admin, body).await?;
    Ok((StatusCode::CREATED, Json(rollouts::view(&state, id).await?)))
}

/// One rollout, with its counts per state per wave (admin).
#[utoipa::path(get, path = "/v1/fleet/rollouts/{id}", tag = "fleet",
    params(("id" = Uuid, Path, description = "The rollout id")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        Forbidden, NotFound,
    ))]
async fn show(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    Ok(Json(rollouts::view(&state, rollout_id(&id)?).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Rollouts per page, 1–100 (20 when absent).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// A page of rollouts.
#[derive(Serialize, ToSchema)]
struct RolloutPage {
    /// Newest first.
    rollouts: Vec<RolloutView>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// The rollouts, newest first (admin).
#[utoipa::path(get, path = "/v1/fleet/rollouts", tag = "fleet",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of rollouts", body = RolloutPage),
        BadRequest, Forbidden,
    ))]
async fn list(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<RolloutPage>> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = cursor::limit(q.limit)?;
    let before = q
        .cursor
        .as_deref()
        .map(cursor::decode)
        .transpose()?
        .map(|(at, id)| (at, RolloutId(id)));
    let page = state.store.rollouts(before, limit + 1).await?;
    let (page, next_cursor) = cursor::page(page, limit, |r| (r.created_at, r.id.0));
    let mut views = Vec::with_capacity(page.len());
    for r in page {
        views.push(rollouts::view(&state, r.id).await?);
    }
    Ok(Json(RolloutPage {
        rollouts: views,
        next_cursor,
    }))
}

/// Start a draft (admin).
///
/// Resolves its devices into a plan split into waves and opens the first.
/// Devices already running a target, running a newer version (unless
/// downgrades are allowed), of a model a target is not for, or busy in
/// another rollout's open update are left out of a filter's plan; for
/// explicit devices they make the start a 409, as do a state other than
/// draft and a target firmware that is no longer available.
#[utoipa::path(post, path = "/v1/fleet/rollouts/{id}/start", tag = "fleet",
    params(("id" = Uuid, Path, description = "The rollout id")),
    responses(
        (status = 200, description = "The rollout, running", body = RolloutView),
        Forbidden, NotFound, Conflict,
    ))]
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

/// Pause a running rollout (admin).
///
/// Nothing new is released; updates in flight finish. 409 unless it is
/// running.
#[utoipa::path(post, path = "/v1/fleet/rollouts/{id}/pause", tag = "fleet",
    params(("id" = Uuid, Path, description = "The rollout id")),
    responses(
        (status = 200, description = "The rollout, paused", body = RolloutView),
        Forbidden, NotFound, Conflict,
    ))]
async fn pause(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    run(&state, &id, Command::Pause).await
}

/// Resume a paused rollout (admin).
///
/// The failures so far are accepted: the error threshold counts only
/// later ones. 409 unless it is paused, or when a target firmware was
/// withdrawn.
#[utoipa::path(post, path = "/v1/fleet/rollouts/{id}/resume", tag = "fleet",
    params(("id" = Uuid, Path, description = "The rollout id")),
    responses(
        (status = 200, description = "The rollout, running", body = RolloutView),
        Forbidden, NotFound, Conflict,
    ))]
async fn resume(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    run(&state, &id, Command::Resume).await
}

/// Cancel a rollout (admin).
///
/// Queued updates are cancelled with it, and updates in flight at the
/// fleet backend. 409 once it is completed or cancelled.
#[utoipa::path(post, path = "/v1/fleet/rollouts/{id}/cancel", tag = "fleet",
    params(("id" = Uuid, Path, description = "The rollout id")),
    responses(
        (status = 200, description = "The rollout, cancelled", body = RolloutView),
        Forbidden, NotFound, Conflict,
    ))]
async fn cancel(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    run(&state, &id, Command::Cancel).await
}

/// Approve the next wave (admin).
///
/// For a running or paused rollout whose wave ended and that waits for an
/// admin's approval of the next; a paused one is resumed too. 409
/// otherwise.
#[utoipa::path(post, path = "/v1/fleet/rollouts/{id}/approve", tag = "fleet",
    params(("id" = Uuid, Path, description = "The rollout id")),
    responses(
        (status = 200, description = "The rollout, its next wave open", body = RolloutView),
        Forbidden, NotFound, Conflict,
    ))]
async fn approve(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<RolloutView>> {
    run(&state, &id, Command::Approve).await
}

/// A rollout's event history.
#[derive(Serialize, ToSchema)]
#[schema(as = RolloutHistory)]
struct History {
    rollout_id: RolloutId,
    /// Oldest first.
    events: Vec<RecordedEvent>,
}

/// A rollout's own events, oldest first (admin).
#[utoipa::path(get, path = "/v1/fleet/rollouts/{id}/events", tag = "fleet",
    params(("id" = Uuid, Path, description = "The rollout id")),
    responses(
        (status = 200, description = "The events", body = History),
        Forbidden, NotFound,
    ))]
async fn history(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<History>> {
    let id = rollout_id(&id)?;
    state
        .store
        .rollout(id)
        .await?
        .ok_or(ApiError::NoSuch("rollout"))?;
    let events = state.store.history(id).await?;
    Ok(Json(History {
        rollout_id: id,
        events,
    }))
}
