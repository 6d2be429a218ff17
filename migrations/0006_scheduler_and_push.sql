-- The scheduler: a lease that makes one replica the leader, a record of
-- what its passes did, and push notifications (devices and an outbox).

-- One row per leased role ('scheduler'). A replica holds it while
-- expires_at is in the future and renews it well before; term grows by one
-- each time the lease changes hands.
CREATE TABLE leases (
    name        text        PRIMARY KEY,
    holder      text        NOT NULL,
    term        bigint      NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- What each scheduler pass did, newest kept (the scheduler trims it): for
-- operators ("when did the reaper last run?") and to show that passes of
-- two holders never overlap.
CREATE TABLE scheduler_passes (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL,              -- 'reap' or 'push'
    holder      text        NOT NULL,
    term        bigint      NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    counts      jsonb       NOT NULL DEFAULT '{}'
);

-- A user's devices for push. A token belongs to one device, so registering
-- it again (after a log-in as someone else) moves it to the new user.
CREATE TYPE push_platform AS ENUM ('fcm', 'apns', 'webhook');
CREATE TABLE devices (
    id         uuid          PRIMARY KEY,
    user_id    uuid          NOT NULL,
    platform   push_platform NOT NULL,
    token      text          NOT NULL,
    created_at timestamptz   NOT NULL,
    CONSTRAINT devices_platform_token_key UNIQUE (platform, token)
);
CREATE INDEX devices_user_idx ON devices (user_id);

-- The outbox: one row per device for each event a user is told about,
-- written in the transaction that appends the event. id is the idempotency
-- key every delivery attempt carries. Not a projection: a rebuild leaves it.
CREATE TYPE notification_status AS ENUM ('pending', 'sent', 'failed');
CREATE TABLE notifications (
    id              uuid                PRIMARY KEY,
    device_id       uuid                NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    video_id        uuid                NOT NULL,
    event_seq       bigint              NOT NULL,
    state           video_status        NOT NULL,
    status          notification_status NOT NULL DEFAULT 'pending',
    attempts        integer             NOT NULL DEFAULT 0,
    next_attempt_at timestamptz         NOT NULL,
    last_error      text,
    created_at      timestamptz         NOT NULL,
    sent_at         timestamptz,
    CONSTRAINT notifications_event_device_key UNIQUE (event_seq, device_id)
);
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'pending';
