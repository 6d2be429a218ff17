//! `POST /v1/events`: player events from every viewer, token optional.

use axum::{Json, body::Bytes, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::super::Routes;
use crate::{
    auth::MaybeCaller,
    engagement::events::{Checked, Dropped, IncomingEvent, check, parse},
    error::ApiResult,
    openapi::{BadRequest, TooManyRequests, Unavailable},
    state::AppState,
    throttle::Throttled,
};

pub fn router() -> Routes {
    Routes::new().routes(routes!(accept))
}

/// How many events of the batch were taken, and which were left out.
#[derive(Serialize, ToSchema)]
#[schema(as = EventsAccepted)]
struct Accepted {
    /// Published: every event but the dropped ones.
    #[schema(minimum = 0, maximum = 100)]
    accepted: usize,
    /// Events whose `client_time` is more than 5 minutes ahead of the
    /// server's clock or 30 days behind it: not kept (resending them
    /// will not help).
    dropped: Vec<Dropped>,
}

// What `crate::engagement::events::parse` takes, for the document only:
// the parser reads the body itself.
/// A batch of player events: `{"events": [...]}`, 1 to 100 of them; other
/// top-level fields are ignored.
#[derive(ToSchema)]
#[schema(as = PlayerEvents)]
#[allow(dead_code)]
struct Batch {
    #[schema(min_items = 1, max_items = 100)]
    events: Vec<IncomingEvent>,
}

/// Send player events.
///
/// A batch of 1 to 100 events from a player, with or without a token (a
/// user's or admin's id goes with the events; a service's does not). The
/// body is read as JSON whatever its Content-Type. 202 once the broker
/// confirmed the batch; 400 naming the first malformed event (an unknown
/// type, a missing field) and 404 for a video this viewer may not watch,
/// and then nothing of the batch is published. An event whose
/// `client_time` is more than 5 minutes ahead or 30 days behind the
/// server's clock is dropped and named in the answer; the rest go on.
#[utoipa::path(post, path = "/v1/events", tag = "engagement",
    security((), ("bearer" = [])),
    request_body(content = Batch, content_type = "application/json"),
    responses(
        (status = 202, description = "The broker has the whole batch", body = Accepted),
        BadRequest,
        (status = 404, description = "An event names a video this viewer may not watch (the detail says which); nothing of the batch is published",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::TooLarge,
        TooManyRequests,
        Unavailable,
    ))]
async fn accept(
    State(state): State<AppState>,
    _: Throttled,
    MaybeCaller(viewer): MaybeCaller,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let Checked { events, dropped } =
        check(&state.audiences, &state.store, viewer, parse(&body)?).await?;
    let accepted = events.len();
    if !events.is_empty() {
        state.playback.publish(events).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted, dropped })))
}
