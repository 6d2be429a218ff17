//! `POST /v1/events`: player events from every viewer, token optional.

use axum::{Json, Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use serde::Serialize;

use crate::{
    auth::MaybeCaller,
    engagement::events::{check, parse},
    error::ApiResult,
    state::AppState,
    throttle::Throttled,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", post(accept))
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
}

/// `{"events": [...]}` (JSON, whatever the Content-Type says): 202 once the
/// broker confirmed the batch; 400 naming the first bad event (nothing of
/// the batch published); 503 while the broker is down.
async fn accept(
    State(state): State<AppState>,
    _: Throttled,
    MaybeCaller(viewer): MaybeCaller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let events = check(&state.audiences, &state.store, viewer, parse(&body)?).await?;
    let accepted = events.len();
    state.playback.publish(events).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted })))
}
