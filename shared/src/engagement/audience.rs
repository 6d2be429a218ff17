//! Who may watch a video, and so engage with it: its owner and admins any
//! upload that is whole (UPLOADED, ENCODING, READY); anyone else, also an
//! anonymous viewer, one that moderation did not reject. Firmware files
//! are uploads too, but no videos to watch.

use uuid::Uuid;

use crate::{
    store::Store,
    video::{UserId, Verification, Video, VideoId, VideoStatus},
};

/// What decides who may watch a video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Audience {
    pub id: VideoId,
    pub owner_id: UserId,
    pub status: VideoStatus,
    pub verification: Verification,
    pub firmware: bool,
}

impl Audience {
    pub fn of(video: &Video) -> Self {
        Self {
            id: video.id,
            owner_id: video.owner_id,
            status: video.status,
            verification: video.verification,
            firmware: video.firmware_id.is_some(),
        }
    }

    /// Whether `viewer` (None: anonymous; `admin` for an admin's token) may
    /// watch it.
    pub fn admits(&self, viewer: Option<UserId>, admin: bool) -> bool {
        let whole = matches!(
            self.status,
            VideoStatus::Uploaded | VideoStatus::Encoding | VideoStatus::Ready
        );
        let privileged = admin || viewer == Some(self.owner_id);
        whole && !self.firmware && (privileged || self.verification != Verification::Rejected)
    }
}

impl Store {
    /// The audiences of those of `videos` that exist.
    pub async fn audiences(&self, videos: &[Uuid]) -> Result<Vec<Audience>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, owner_id, status, verification, firmware_id IS NOT NULL AS firmware \
             FROM videos WHERE id = ANY($1)",
        )
        .bind(videos)
        .fetch_all(self.pool())
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audience(status: VideoStatus, verification: Verification, firmware: bool) -> Audience {
        Audience {
            id: VideoId::new(),
            owner_id: UserId(Uuid::new_v4()),
            status,
            verification,
            firmware,
        }
    }

    #[test]
    fn whole_unrejected_videos_are_for_everyone_rejected_ones_for_owner_and_admins() {
        use {Verification as M, VideoStatus as S};
        let stranger = Some(UserId(Uuid::new_v4()));
        let ready = audience(S::Ready, M::Unverified, false);
        assert!(ready.admits(None, false) && ready.admits(stranger, false));
        assert!(audience(S::Uploaded, M::Verified, false).admits(None, false));
        let rejected = audience(S::Ready, M::Rejected, false);
        assert!(!rejected.admits(stranger, false) && !rejected.admits(None, false));
        assert!(rejected.admits(Some(rejected.owner_id), false) && rejected.admits(None, true));
        let loading = audience(S::Loading, M::Unverified, false);
        assert!(!loading.admits(Some(loading.owner_id), true));
        assert!(!audience(S::Ready, M::Verified, true).admits(None, true));
    }
}
