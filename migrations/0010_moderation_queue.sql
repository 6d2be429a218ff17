-- The admins' moderation queue (GET /v1/moderation): whole videos awaiting
-- a decision, oldest first, without scanning every decided video.
CREATE INDEX videos_moderation_queue ON videos (created_at, id)
    WHERE firmware_id IS NULL
      AND status IN ('UPLOADED', 'ENCODING', 'READY')
      AND verification IN ('unverified', 'pending_review');
