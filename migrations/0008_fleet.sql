-- The fleet product: firmware per hardware component, the devices of the
-- fleet and what they run, and staged rollouts. Hardware types, models and
-- signing keys are reference data (plain rows); everything else is a
-- projection of the event log.

CREATE TABLE hardware_types (
    name        text        PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,64}$'),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO hardware_types (name, description) VALUES
    ('vega_mcu',          'the scooter''s main controller'),
    ('vega_gsm',          'the scooter''s GSM modem'),
    ('audio_lock',        'the lock sound'),
    ('audio_locate',      'the locate sound'),
    ('audio_unlock',      'the unlock sound'),
    ('audio_battery_low', 'the low-battery sound'),
    ('iot',               'the IoT module of scooters and cabinets with their own');

-- A device model and the components it has.
CREATE TABLE device_models (
    name        text        PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,64}$'),
    components  text[]      NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO device_models (name, components, description) VALUES
    ('v1', ARRAY['vega_mcu','vega_gsm','audio_lock','audio_locate','audio_unlock','audio_battery_low'],
     'scooter, first generation'),
    ('v2', ARRAY['vega_mcu','vega_gsm','audio_lock','audio_locate','audio_unlock','audio_battery_low'],
     'scooter, second generation'),
    ('iot', ARRAY['iot','audio_lock','audio_locate','audio_unlock','audio_battery_low'],
     'scooter with its own IoT module'),
    ('cabinet', ARRAY['iot'], 'charging cabinet');

-- Public keys firmware was signed with (a worker records its key before
-- it signs with it); the newest is the current one.
CREATE TABLE fleet_signing_keys (
    key_id        text        PRIMARY KEY,
    public_key    text        NOT NULL,    -- base64 of the 32 raw Ed25519 bytes
    first_used_at timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE firmware_status AS ENUM ('pending', 'available', 'withdrawn');

CREATE TABLE firmware (
    id              uuid            PRIMARY KEY,
    hardware_type   text            NOT NULL REFERENCES hardware_types,
    version         text            NOT NULL,
    version_num     bigint          NOT NULL,
    comment         text,
    models          text[]          NOT NULL,
    status          firmware_status NOT NULL,
    upload_id       uuid,                       -- the tus upload of its file
    object_key      text,
    size_bytes      bigint,
    sha256          text,
    manifest        text,                       -- base64 of the signed bytes
    signature       text,                       -- base64 Ed25519 signature
    key_id          text,
    withdrawn_reason text,
    created_by      uuid            NOT NULL,
    version_no      integer         NOT NULL,   -- the aggregate's version
    created_at      timestamptz     NOT NULL,
    updated_at      timestamptz     NOT NULL,
    CONSTRAINT firmware_version_num_key UNIQUE (hardware_type, version_num),
    CONSTRAINT firmware_version_key UNIQUE (hardware_type, version)
);

-- A firmware upload is an upload like a video's (same tus endpoint, same
-- chunk pipeline); this says whose file it is. Such uploads are not
-- listed among the owner's videos and are not encoded.
ALTER TABLE videos ADD COLUMN firmware_id uuid;

CREATE TABLE fleet_devices (
    id            uuid        PRIMARY KEY,      -- derived from external_id
    external_id   text        NOT NULL UNIQUE,
    model         text        NOT NULL,
    version       integer     NOT NULL,
    registered_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX fleet_devices_model ON fleet_devices (model);

-- What each component of a device runs, as last reported.
CREATE TABLE device_firmware (
    device_id   uuid        NOT NULL REFERENCES fleet_devices,
    component   text        NOT NULL,
    version     text        NOT NULL,
    firmware_id uuid,                           -- null for a version we don't know
    version_num bigint,
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, component)
);
CREATE INDEX device_firmware_versions ON device_firmware (component, version);

CREATE TYPE rollout_state AS ENUM ('draft', 'running', 'paused', 'completed', 'cancelled');

CREATE TABLE rollouts (
    id             uuid          PRIMARY KEY,
    name           text,
    state          rollout_state NOT NULL,
    spec           jsonb         NOT NULL,
    current_wave   integer       NOT NULL DEFAULT 0,
    -- The wave waiting for an admin's approval before the next starts.
    awaiting_approval boolean    NOT NULL DEFAULT false,
    paused_reason  text,
    -- Per wave, the final failures a resume accepted (see Resumed).
    error_baseline jsonb         NOT NULL DEFAULT '[]',
    created_by     uuid          NOT NULL,
    version        integer       NOT NULL,
    created_at     timestamptz   NOT NULL,
    started_at     timestamptz,
    finished_at    timestamptz,
    updated_at     timestamptz   NOT NULL
);

CREATE TABLE rollout_waves (
    rollout_id   uuid        NOT NULL REFERENCES rollouts,
    wave         integer     NOT NULL,
    size         integer     NOT NULL DEFAULT 0,
    started_at   timestamptz,
    PRIMARY KEY (rollout_id, wave)
);

CREATE TYPE device_update_state AS ENUM (
    'queued', 'requested', 'acknowledged', 'succeeded', 'failed', 'timed_out', 'cancelled'
);

-- A rollout's plan: each device component it updates, in its wave, and
-- where that stands (the state of its current attempt; queued before the
-- first, and again while a retry waits). Counts per state per wave come
-- from here.
CREATE TABLE rollout_devices (
    rollout_id  uuid                NOT NULL REFERENCES rollouts,
    wave        integer             NOT NULL,
    device_id   uuid                NOT NULL REFERENCES fleet_devices,
    external_id text                NOT NULL,
    component   text                NOT NULL,
    firmware_id uuid                NOT NULL REFERENCES firmware,
    state       device_update_state NOT NULL DEFAULT 'queued',
    attempts    integer             NOT NULL DEFAULT 0,
    update_id   uuid,                           -- the current attempt
    not_before  timestamptz         NOT NULL,   -- a retry waits until then
    finished_at timestamptz,
    PRIMARY KEY (rollout_id, device_id, component)
);
-- A device is in at most one open update per component, across rollouts.
CREATE UNIQUE INDEX rollout_devices_one_open ON rollout_devices (device_id, component)
    WHERE state IN ('queued', 'requested', 'acknowledged');
CREATE INDEX rollout_devices_release ON rollout_devices (rollout_id, state, wave, not_before);

-- Each attempt: what was asked of the fleet backend and how it ended.
CREATE TABLE device_updates (
    id              uuid                PRIMARY KEY,
    rollout_id      uuid                NOT NULL REFERENCES rollouts,
    wave            integer             NOT NULL,
    device_id       uuid                NOT NULL REFERENCES fleet_devices,
    external_id     text                NOT NULL,
    component       text                NOT NULL,
    firmware_id     uuid                NOT NULL REFERENCES firmware,
    attempt         integer             NOT NULL,
    state           device_update_state NOT NULL,
    requested_at    timestamptz         NOT NULL,
    acknowledged_at timestamptz,
    finished_at     timestamptz,
    reason          text,
    version         integer             NOT NULL,
    updated_at      timestamptz         NOT NULL
);
CREATE INDEX device_updates_by_device ON device_updates (device_id, requested_at);
CREATE INDEX device_updates_in_flight ON device_updates (rollout_id, state, requested_at)
    WHERE state IN ('requested', 'acknowledged');

-- The fleet's version distribution at a past instant comes from the log.
CREATE INDEX events_version_reports ON events (recorded_at)
    WHERE kind = 'version_reported';
