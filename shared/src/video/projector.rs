//! How each video event changes the projections (`videos`, `flows`,
//! `upload_sessions`), one function per family of events. Each uses only
//! the event and its `recorded_at`, so replaying the log reproduces the rows
//! exactly.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, types::Json};

use super::{domain::VideoId, events::VideoEvent};
use crate::store::Event;

/// Applies one event of video `id`, recorded as `version` at `at`.
pub async fn apply(
    conn: &mut PgConnection,
    id: VideoId,
    version: i32,
    event: &VideoEvent,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    use VideoEvent as E;
    if let E::Created { .. } = event {
        return created(conn, id, version, event, at).await;
    }
    sqlx::query("UPDATE videos SET version = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(version)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    match event {
        E::Created { .. } => unreachable!("handled above"),
        E::BytesReceived { .. }
        | E::MultipartStarted { .. }
        | E::SegmentStaged { .. }
        | E::PartStored { .. }
        | E::Uploaded { .. }
        | E::ReceivedRewound { .. } => upload(conn, id, event, at).await,
        E::Failed { .. } | E::Deleted | E::ObjectsRemoved | E::UploadAborted => {
            lifecycle(conn, id, event, at).await
        }
        E::ReviewRequested | E::Moderated { .. } => moderation(conn, id, event).await,
        E::DetailsUpdated { .. } | E::OnboardingPlaced { .. } => details(conn, id, event).await,
        E::EncodingStarted { .. } | E::EncodingProgressed { .. } | E::Encoded { .. } => {
            encoding(conn, id, event, at).await
        }
    }
}

/// `Created`: the video, its original's flow and its upload session.
async fn created(
    conn: &mut PgConnection,
    id: VideoId,
    version: i32,
    event: &VideoEvent,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let VideoEvent::Created {
        owner_id,
        flow_id,
        size_bytes,
        part_size_bytes,
        object_key,
        title,
        filename,
        filetype,
        upload_metadata,
        expires_at,
        onboarding_position,
        firmware_id,
    } = event
    else {
        unreachable!("only Created comes here")
    };
    sqlx::query(
        "INSERT INTO videos (id, owner_id, status, title, filename, filetype, size_bytes, version, created_at, updated_at, \
         onboarding_position, firmware_id) VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, $7, $8, $8, $9, $10)",
    )
    .bind(id)
    .bind(owner_id)
    .bind(title)
    .bind(filename)
    .bind(filetype)
    .bind(*size_bytes as i64)
    .bind(version)
    .bind(at)
    .bind(onboarding_position)
    .bind(firmware_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO flows (id, video_id, kind, object_key, size_bytes, status, created_at, updated_at) \
         VALUES ($1, $2, 'original', $3, $4, 'uploading', $5, $5)",
    )
    .bind(flow_id)
    .bind(id)
    .bind(object_key)
    .bind(*size_bytes as i64)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO upload_sessions (video_id, flow_id, upload_metadata, part_size_bytes, last_activity_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(flow_id)
    .bind(upload_metadata)
    .bind(*part_size_bytes as i64)
    .bind(at)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Bytes confirmed by the broker, staged, stored in parts, whole.
async fn upload(
    conn: &mut PgConnection,
    id: VideoId,
    event: &VideoEvent,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    match event {
        VideoEvent::BytesReceived {
            received_bytes,
            expires_at,
        } => {
            sqlx::query(
                "UPDATE videos SET received_bytes = $2, \
                 status = CASE WHEN status = 'PENDING' THEN 'LOADING'::video_status ELSE status END \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(*received_bytes as i64)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE upload_sessions SET last_activity_at = $2, expires_at = $3 WHERE video_id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
        }
        VideoEvent::ReceivedRewound { received_bytes } => {
            sqlx::query("UPDATE videos SET received_bytes = $2 WHERE id = $1")
                .bind(id)
                .bind(*received_bytes as i64)
                .execute(&mut *conn)
                .await?;
        }
        VideoEvent::MultipartStarted { multipart_id } => {
            sqlx::query("UPDATE upload_sessions SET multipart_id = $2 WHERE video_id = $1")
                .bind(id)
                .bind(multipart_id)
                .execute(&mut *conn)
                .await?;
        }
        VideoEvent::SegmentStaged {
            segment,
            hash_state,
        } => {
            let end = (segment.offset + segment.len) as i64;
            stored(conn, id, end).await?;
            sqlx::query(
                "UPDATE upload_sessions SET staged = staged || jsonb_build_array($2::jsonb), \
                 durable_bytes = $3, hash_state = $4 WHERE video_id = $1",
            )
            .bind(id)
            .bind(Json(segment))
            .bind(end)
            .bind(hash_state)
            .execute(&mut *conn)
            .await?;
        }
        VideoEvent::PartStored {
            part,
            stored_bytes,
            hash_state,
        } => {
            stored(conn, id, *stored_bytes as i64).await?;
            sqlx::query(
                "UPDATE upload_sessions SET parts = parts || jsonb_build_array($2::jsonb), staged = '[]', \
                 durable_bytes = $3, hash_state = $4 WHERE video_id = $1",
            )
            .bind(id)
            .bind(Json(part))
            .bind(*stored_bytes as i64)
            .bind(hash_state)
            .execute(&mut *conn)
            .await?;
        }
        VideoEvent::Uploaded { sha256 } => {
            sqlx::query(
                "UPDATE videos SET status = 'UPLOADED', sha256 = $2, stored_bytes = size_bytes WHERE id = $1",
            )
            .bind(id)
            .bind(sha256)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE flows SET status = 'stored', stored_bytes = size_bytes, updated_at = $2 \
                 WHERE video_id = $1 AND kind = 'original'",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            close_session(conn, id).await?;
        }
        other => unreachable!("{} is not an upload event", other.kind()),
    }
    Ok(())
}

/// Bytes became durable in S3: a PENDING video is LOADING from then on,
/// even if the api has not yet recorded the end of a long PATCH.
async fn stored(conn: &mut PgConnection, id: VideoId, bytes: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE videos SET stored_bytes = $2, \
         status = CASE WHEN status = 'PENDING' THEN 'LOADING'::video_status ELSE status END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(bytes)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE flows SET stored_bytes = $2 WHERE video_id = $1 AND kind = 'original'")
        .bind(id)
        .bind(bytes)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn close_session(conn: &mut PgConnection, id: VideoId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM upload_sessions WHERE video_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Failed, deleted, and what the worker and reaper clean up after.
async fn lifecycle(
    conn: &mut PgConnection,
    id: VideoId,
    event: &VideoEvent,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    match event {
        VideoEvent::Failed { reason } => {
            sqlx::query("UPDATE videos SET status = 'FAILED', failure_reason = $2 WHERE id = $1")
                .bind(id)
                .bind(reason)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "UPDATE flows SET status = 'failed', updated_at = $2 WHERE video_id = $1 AND status = 'uploading'",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        // The log keeps the history; the projections keep nothing personal.
        VideoEvent::Deleted => {
            sqlx::query("UPDATE upload_sessions SET upload_metadata = NULL WHERE video_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "UPDATE videos SET status = 'DELETED', title = NULL, description = NULL, \
                 filename = NULL, filetype = NULL WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        VideoEvent::ObjectsRemoved => {
            sqlx::query("UPDATE flows SET status = 'removed', updated_at = $2 WHERE video_id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            close_session(conn, id).await?;
        }
        VideoEvent::UploadAborted => close_session(conn, id).await?,
        other => unreachable!("{} is not a lifecycle event", other.kind()),
    }
    Ok(())
}

async fn moderation(
    conn: &mut PgConnection,
    id: VideoId,
    event: &VideoEvent,
) -> Result<(), sqlx::Error> {
    let query = match event {
        VideoEvent::ReviewRequested => {
            sqlx::query("UPDATE videos SET verification = 'pending_review' WHERE id = $1").bind(id)
        }
        VideoEvent::Moderated {
            verification,
            reason,
            ..
        } => sqlx::query(
            "UPDATE videos SET verification = $2, verification_reason = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(verification)
        .bind(reason),
        other => unreachable!("{} is not a moderation event", other.kind()),
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

/// What the owner or an admin says about the video.
async fn details(
    conn: &mut PgConnection,
    id: VideoId,
    event: &VideoEvent,
) -> Result<(), sqlx::Error> {
    let query = match event {
        VideoEvent::DetailsUpdated { title, description } => {
            sqlx::query("UPDATE videos SET title = $2, description = $3 WHERE id = $1")
                .bind(id)
                .bind(title)
                .bind(description)
        }
        VideoEvent::OnboardingPlaced { position } => {
            sqlx::query("UPDATE videos SET onboarding_position = $2 WHERE id = $1")
                .bind(id)
                .bind(position)
        }
        other => unreachable!("{} is not a details event", other.kind()),
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

/// ENCODING with its progress, then READY with the renditions as flows.
async fn encoding(
    conn: &mut PgConnection,
    id: VideoId,
    event: &VideoEvent,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    match event {
        VideoEvent::EncodingStarted { .. } => {
            sqlx::query(
                "UPDATE videos SET status = 'ENCODING', encoding_percentage = 0 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        VideoEvent::EncodingProgressed { percent } => {
            sqlx::query("UPDATE videos SET encoding_percentage = $2 WHERE id = $1")
                .bind(id)
                .bind(i16::from(*percent))
                .execute(&mut *conn)
                .await?;
        }
        VideoEvent::Encoded {
            renditions,
            playback,
        } => {
            for rendition in renditions {
                let details = serde_json::json!({
                    "name": rendition.name,
                    "width": rendition.width,
                    "height": rendition.height,
                    "bandwidth": rendition.bandwidth,
                });
                sqlx::query(
                    "INSERT INTO flows (id, video_id, kind, object_key, size_bytes, stored_bytes, status, \
                     details, created_at, updated_at) VALUES ($1, $2, 'rendition', $3, $4, $4, 'stored', $5, $6, $6)",
                )
                .bind(rendition.flow_id)
                .bind(id)
                .bind(format!("{}{}", playback.prefix, rendition.playlist))
                .bind(rendition.size_bytes as i64)
                .bind(details)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            sqlx::query(
                "UPDATE videos SET status = 'READY', encoding_percentage = 100, playback = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(Json(playback))
            .execute(&mut *conn)
            .await?;
        }
        other => unreachable!("{} is not an encoding event", other.kind()),
    }
    Ok(())
}
