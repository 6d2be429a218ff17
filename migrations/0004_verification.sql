-- Moderation: unverified -> pending_review -> verified | rejected.
CREATE TYPE verification_state AS ENUM ('unverified', 'pending_review', 'verified', 'rejected');
ALTER TABLE videos
    ADD COLUMN verification verification_state NOT NULL DEFAULT 'unverified',
    ADD COLUMN verification_reason text;
