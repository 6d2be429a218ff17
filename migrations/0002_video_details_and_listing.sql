-- Owner-editable description, and keyset pagination of a user's videos
-- (newest first, ties broken by id).
ALTER TABLE videos ADD COLUMN description text;
DROP INDEX videos_owner_idx;
CREATE INDEX videos_owner_listing_idx ON videos (owner_id, created_at DESC, id DESC);
