-- Chunk shards shared out among the live workers (shared/src/shards.rs).
-- `grp` is the deployment's queue prefix, so deployments (and tests) that
-- share a database never meet.

-- How many chunk shards the deployment was started with: an upload's
-- chunks always go to shard (id mod shards), so the number is fixed once
-- the first api or worker ran; a process started with another refuses.
CREATE TABLE shard_counts (
    grp         text        PRIMARY KEY,
    shards      integer     NOT NULL CHECK (shards > 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Each live worker renews its row; the live ones split the shards evenly
-- (ordered by holder, the first `shards mod n` take one more).
CREATE TABLE shard_members (
    grp        text        NOT NULL,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (grp, holder)
);

-- Who consumes each shard. Only the holder subscribes to the shard's queue
-- (single-active-consumer stays the broker's safety net); anyone may take a
-- row that expired; term grows each time a worker takes an expired row
-- (a row let go is deleted, and the next taker starts at 1).
CREATE TABLE shard_leases (
    grp        text        NOT NULL,
    shard      integer     NOT NULL,
    holder     text        NOT NULL,
    term       bigint      NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (grp, shard)
);
