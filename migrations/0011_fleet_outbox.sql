-- Fleet jobs written in the transaction that makes them due (an update
-- requested, an update to withdraw) and published after it commits: a
-- writer that dies in between leaves its rows, and the next relay (the
-- rollout driver's pass) publishes them. Rows live for a moment.
CREATE TABLE fleet_outbox (
    seq bigserial PRIMARY KEY,
    kind text NOT NULL,
    id uuid NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
