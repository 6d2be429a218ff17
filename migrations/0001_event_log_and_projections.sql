-- The append-only event log and the projections built from it.
-- Projections are written in the same transaction as the events that change
-- them, and can be rebuilt from the log (reelay-worker rebuild-projections).

CREATE TYPE video_status AS ENUM (
    'PENDING', 'LOADING', 'UPLOADED', 'ENCODING', 'READY', 'FAILED', 'DELETED'
);

CREATE TABLE events (
    seq          bigserial   PRIMARY KEY,           -- global order
    aggregate_id uuid        NOT NULL,
    version      integer     NOT NULL CHECK (version > 0),
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL,
    CONSTRAINT events_aggregate_version_key UNIQUE (aggregate_id, version)
);

-- An event is never changed or removed.
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

CREATE TABLE videos (
    id             uuid         PRIMARY KEY,
    owner_id       uuid         NOT NULL,
    status         video_status NOT NULL,
    title          text,
    filename       text,
    filetype       text,
    size_bytes     bigint       NOT NULL CHECK (size_bytes >= 0),
    received_bytes bigint       NOT NULL DEFAULT 0,
    stored_bytes   bigint       NOT NULL DEFAULT 0,
    sha256         text,
    failure_reason text,
    version        integer      NOT NULL,
    created_at     timestamptz  NOT NULL,
    updated_at     timestamptz  NOT NULL
);
CREATE INDEX videos_owner_idx ON videos (owner_id, created_at DESC);

CREATE TABLE flows (
    id           uuid        PRIMARY KEY,
    video_id     uuid        NOT NULL REFERENCES videos (id),
    kind         text        NOT NULL,            -- 'original', later renditions
    object_key   text        NOT NULL,
    size_bytes   bigint      NOT NULL,
    stored_bytes bigint      NOT NULL DEFAULT 0,
    status       text        NOT NULL,            -- uploading, stored, failed, removed
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX flows_video_idx ON flows (video_id);

-- One row while a flow is being uploaded; removed when the upload ends.
CREATE TABLE upload_sessions (
    video_id         uuid        PRIMARY KEY REFERENCES videos (id),
    flow_id          uuid        NOT NULL REFERENCES flows (id),
    upload_metadata  text,
    part_size_bytes  bigint      NOT NULL,
    multipart_id     text,
    parts            jsonb       NOT NULL DEFAULT '[]',  -- [{number, etag}]
    staged           jsonb       NOT NULL DEFAULT '[]',  -- [{offset, len, key}]
    durable_bytes    bigint      NOT NULL DEFAULT 0,     -- in parts or staged
    hash_state       text        NOT NULL DEFAULT '',
    fflow_replica    text,
    last_activity_at timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL
);
CREATE INDEX upload_sessions_expiry_idx ON upload_sessions (expires_at);
