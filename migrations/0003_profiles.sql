-- A second aggregate type in the same log: a user's profile (their current
-- profile video). Existing events are all about videos.
ALTER TABLE events ADD COLUMN aggregate_type text NOT NULL DEFAULT 'video';

-- One row per user who ever set a profile video; video_id is NULL once the
-- current one was deleted. A video is the profile video of at most one user.
CREATE TABLE profiles (
    user_id    uuid        PRIMARY KEY,
    video_id   uuid        UNIQUE REFERENCES videos (id),
    version    integer     NOT NULL,
    updated_at timestamptz NOT NULL
);
