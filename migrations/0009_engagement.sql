-- The engagement product: reactions, bookmarks and comments (events in the
-- log, with projections), what the analytics store says of views (a cache
-- the ETL writes), and where signed-in viewers stopped.

CREATE TYPE reaction AS ENUM ('like', 'dislike');

-- Per video: the owner's settings and exact counts, kept by the events of
-- the settings, user-video and comment aggregates.
CREATE TABLE engagement (
    video_id          uuid        PRIMARY KEY,
    likes             integer     NOT NULL DEFAULT 0,
    dislikes          integer     NOT NULL DEFAULT 0,
    comments          integer     NOT NULL DEFAULT 0,
    reactions_enabled boolean     NOT NULL DEFAULT true,
    comments_enabled  boolean     NOT NULL DEFAULT true,
    -- The settings aggregate's id (derived from the video's) and version.
    settings_id       uuid        UNIQUE,
    settings_version  integer     NOT NULL DEFAULT 0
);

-- One user's reaction and bookmark of one video.
CREATE TABLE user_videos (
    id            uuid        PRIMARY KEY,      -- derived from (user, video)
    user_id       uuid        NOT NULL,
    video_id      uuid        NOT NULL,
    reaction      reaction,
    reacted_at    timestamptz,
    bookmarked_at timestamptz,
    version       integer     NOT NULL,
    CONSTRAINT user_videos_key UNIQUE (user_id, video_id)
);
CREATE INDEX user_videos_bookmarks ON user_videos (user_id, bookmarked_at DESC, video_id)
    WHERE bookmarked_at IS NOT NULL;

CREATE TABLE comments (
    id         uuid        PRIMARY KEY,
    video_id   uuid        NOT NULL,
    author_id  uuid        NOT NULL,
    text       text        NOT NULL,
    created_at timestamptz NOT NULL,
    deleted_at timestamptz,
    deleted_by uuid,
    version    integer     NOT NULL
);
CREATE INDEX comments_of_video ON comments (video_id, created_at DESC, id) WHERE deleted_at IS NULL;

-- The outbox of UGC events for the analytics stream, written in each
-- event's transaction and emptied by the scheduler's relay.
CREATE TABLE ugc_outbox (
    seq        bigint      PRIMARY KEY,         -- the event's
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Views per video as the playback ETL counts them (each session once, as
-- it becomes a view; not a projection of this log).
CREATE TABLE video_views (
    video_id   uuid        PRIMARY KEY,
    views      bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The playback sessions counted as views: each counts once, whatever
-- reads its events again (a batch after a crash, a second reader) or
-- however its summary changes. Rows go after 35 days (the api refuses
-- events whose clock is 30 days behind: a player's session is over).
CREATE TABLE counted_views (
    video_id   uuid        NOT NULL,
    session_id uuid        NOT NULL,
    counted_at timestamptz NOT NULL,
    PRIMARY KEY (video_id, session_id)
);
CREATE INDEX counted_views_by_age ON counted_views (counted_at);

-- Where each signed-in viewer stopped each video: newest position wins,
-- 0 once they reached the end.
CREATE TABLE watch_positions (
    user_id     uuid        NOT NULL,
    video_id    uuid        NOT NULL,
    position_ms bigint      NOT NULL,
    client_time timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, video_id)
);
CREATE INDEX watch_positions_recent ON watch_positions (user_id, updated_at DESC, video_id);
