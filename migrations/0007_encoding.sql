-- Encoding: how far the encoder got, where the playable streams are, and
-- each rendition's size as a flow of its own.
ALTER TABLE videos
    ADD COLUMN encoding_percentage smallint NOT NULL DEFAULT 0,
    ADD COLUMN playback jsonb;
ALTER TABLE flows ADD COLUMN details jsonb;
