//! `POST /v1/events`: player events from every viewer, token optional.

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde::Serialize;

use crate::{
    auth::MaybeCaller,
    engagement::events::{Batch, check},
    error::{ApiResult, JsonBody},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", post(accept))
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
}

/// 202 once the broker confirmed the batch; 400 naming the first bad event
/// (nothing of the batch published); 503 while the broker is down.
async fn accept(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    JsonBody(batch): JsonBody<Batch>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let events = check(&state.audiences, &state.store, viewer, batch).await?;
    let accepted = events.len();
    state.playback.publish(events).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted })))
}
