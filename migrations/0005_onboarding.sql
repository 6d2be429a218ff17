-- Onboarding content: admins' videos in an ordered public collection.
ALTER TABLE videos ADD COLUMN onboarding_position integer;
CREATE INDEX videos_onboarding_idx ON videos (onboarding_position, created_at) WHERE onboarding_position IS NOT NULL;
