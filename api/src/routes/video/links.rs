//! `POST /v1/links`: a service fetching many users' profile video links at
//! once (one video's link is `GET /v1/videos/{id}/link`).

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::SecondsFormat;
use reelay_shared::VideoId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::{
    auth::{Caller, Role},
    error::{ApiError, ApiResult, JsonBody},
    openapi::{BadRequest, Forbidden, TooLarge},
    routes::Routes,
    state::AppState,
    video::{link_ttl, linkable, moderation_allows},
};

pub fn router() -> Routes {
    Routes::new().routes(routes!(batch))
}

/// Users one batch may ask about.
pub const MAX_BATCH: usize = 500;

/// Users whose profile video links are wanted.
#[derive(Deserialize, ToSchema)]
pub struct BatchRequest {
    #[schema(max_items = 500)]
    user_ids: Vec<Uuid>,
    /// The links' life in seconds (`REELAY_LINK_TTL_SECS` when absent,
    /// capped at `REELAY_LINK_MAX_TTL_SECS`).
    #[schema(minimum = 1)]
    ttl: Option<i64>,
}

/// One user's profile video link; all null when there is none to give.
#[derive(Clone, Serialize, ToSchema)]
pub struct UserLink {
    pub user_id: Uuid,
    /// Null when the user has no current profile video to link to.
    #[schema(value_type = Option<String>)]
    pub video_id: Option<VideoId>,
    pub url: Option<String>,
    /// The same instant for every link of a batch.
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub expires_at: Option<String>,
}

/// The links, in the order the users were asked for (written by
/// `LinksWriter`; the type is the schema, and the writer's test).
#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    pub links: Vec<UserLink>,
}

/// Profile video links of many users at once (services, admins).
///
/// Each user's current profile video link, in the order asked (profiles
/// from this replica's memory, exact, or one query); `null`s for a user without one (or whose video a service may not
/// link to yet).
#[utoipa::path(post, path = "/v1/links", tag = "profile", request_body = BatchRequest,
    responses((status = 200, description = "The links", body = BatchResponse), BadRequest,
        Forbidden, TooLarge))]
async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody<BatchRequest>, ApiError>,
) -> ApiResult<Response> {
    if caller.role == Role::User {
        return Err(ApiError::Forbidden("batch links are for services"));
    }
    let JsonBody(request) = body.map_err(|e| e.expecting("{\"user_ids\": [uuid, ...]}"))?;
    if request.user_ids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH} user_ids per request"
        )));
    }
    let ttl = link_ttl(&state, request.ttl)?;
    // From this replica's cache while nothing changed (exact, see
    // `reelay_shared::fresh`), the rest in one query.
    let store = &state.store;
    let rows = state
        .profiles
        .get_many(&request.user_ids, Uuid::nil(), |missing| async move {
            let rows = store.profile_videos(&missing).await?;
            Ok::<_, sqlx::Error>(rows.into_iter().map(|r| (r.user_id, r)).collect())
        })
        .await?;
    // Every link signed at the same second, for the same life.
    let ttl = ttl.min(reelay_shared::presign::MAX_EXPIRES);
    let mut signer = state.storage.presigner(ttl);
    let expires_at = (signer.signed_at() + ttl).to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut body = LinksWriter::new(request.user_ids.len(), &expires_at);
    for (&user_id, row) in request.user_ids.iter().zip(rows) {
        match row.map(|r| (r.video_id, r.status, r.verification)) {
            Some((Some(video), Some(status), Some(verification)))
                if linkable(status) && moderation_allows(&state, caller.role, verification) =>
            {
                let key = state.storage.original_key(video);
                body.link(user_id, video, |out| signer.push_json(&key, out));
            }
            _ => body.none(user_id),
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.finish(),
    )
        .into_response())
}

/// A `BatchResponse` written straight into one buffer of about its size
/// (500 links are ~250 KB): no string per URL, no scan of each URL for
/// characters to escape (the signer writes it JSON-ready), the expiry
/// formatted once. A unit test holds it to serde_json's output.
struct LinksWriter<'a> {
    out: String,
    expires_at: &'a str,
    first: bool,
}

impl<'a> LinksWriter<'a> {
    fn new(links: usize, expires_at: &'a str) -> Self {
        let mut out = String::with_capacity(64 + links * 512);
        out.push_str("{\"links\":[");
        Self {
            out,
            expires_at,
            first: true,
        }
    }

    fn user(&mut self, user: Uuid) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str("{\"user_id\":\"");
        self.uuid(user);
    }

    fn uuid(&mut self, id: Uuid) {
        self.out
            .push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    }

    /// A user's link; `url` appends the URL, escaped for a JSON string.
    fn link(&mut self, user: Uuid, video: VideoId, url: impl FnOnce(&mut String)) {
        self.user(user);
        self.out.push_str("\",\"video_id\":\"");
        self.uuid(video.0);
        self.out.push_str("\",\"url\":\"");
        url(&mut self.out);
        self.out.push_str("\",\"expires_at\":\"");
        self.out.push_str(self.expires_at);
        self.out.push_str("\"}");
    }

    /// A user without a link.
    fn none(&mut self, user: Uuid) {
        self.user(user);
        self.out
            .push_str("\",\"video_id\":null,\"url\":null,\"expires_at\":null}");
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push_str("]}");
        self.out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written body is what serde_json makes of `BatchResponse`.
    #[test]
    fn the_written_links_are_serde_jsons() {
        let expires = "2026-12-07T16:00:00Z".to_owned();
        let links = [
            UserLink {
                user_id: Uuid::new_v4(),
                video_id: Some(VideoId::new()),
                url: Some("http://h:1/b/k?X-Amz-Signature=\"a\\b\u{1}".into()),
                expires_at: Some(expires.clone()),
            },
            UserLink {
                user_id: Uuid::new_v4(),
                video_id: None,
                url: None,
                expires_at: None,
            },
        ];
        for links in [&links[..], &links[..1], &links[1..], &[]] {
            let mut writer = LinksWriter::new(links.len(), &expires);
            for link in links {
                match (link.video_id, &link.url) {
                    (Some(video), Some(url)) => writer.link(link.user_id, video, |out| {
                        let quoted = serde_json::to_string(url).unwrap();
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    }),
                    _ => writer.none(link.user_id),
                }
            }
            let expected = serde_json::to_vec(&BatchResponse {
                links: links.to_vec(),
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(writer.finish()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
