-- The api's replicas cache what a status poll reads (a video, its counts,
-- its views, each viewer's reaction and bookmark) and keep it exact
-- (shared/src/fresh.rs): every change to those rows notifies the video's
-- id in the writing transaction, whoever writes it. A TRUNCATE notifies
-- '*' (all of it). Batch links' profiles likewise, on 'profile_changed'.

-- On videos (the id is the row's own).
CREATE FUNCTION notify_video_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('video_changed', OLD.id::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('video_changed', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

-- On the tables keyed by their video_id.
CREATE FUNCTION notify_video_of_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('video_changed', OLD.video_id::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('video_changed', NEW.video_id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_all_videos_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('video_changed', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER videos_changed AFTER INSERT OR UPDATE OR DELETE ON videos
    FOR EACH ROW EXECUTE FUNCTION notify_video_changed();
CREATE TRIGGER engagement_changed AFTER INSERT OR UPDATE OR DELETE ON engagement
    FOR EACH ROW EXECUTE FUNCTION notify_video_of_row_changed();
CREATE TRIGGER video_views_changed AFTER INSERT OR UPDATE OR DELETE ON video_views
    FOR EACH ROW EXECUTE FUNCTION notify_video_of_row_changed();
CREATE TRIGGER user_videos_changed AFTER INSERT OR UPDATE OR DELETE ON user_videos
    FOR EACH ROW EXECUTE FUNCTION notify_video_of_row_changed();

CREATE TRIGGER videos_truncated AFTER TRUNCATE ON videos
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_videos_changed();
CREATE TRIGGER engagement_truncated AFTER TRUNCATE ON engagement
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_videos_changed();
CREATE TRIGGER video_views_truncated AFTER TRUNCATE ON video_views
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_videos_changed();
CREATE TRIGGER user_videos_truncated AFTER TRUNCATE ON user_videos
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_videos_changed();

-- Batch links read each user's profile row and its video's status and
-- verification: a change to either notifies the user's id on
-- 'profile_changed'.
-- A profile that comes to point at a video locks that video's row (FOR
-- SHARE conflicts with any UPDATE of it): a concurrent change of the
-- video's status then either commits first (and this profile's own
-- notification follows it) or waits for this commit (and its trigger sees
-- the profile and notifies the user). Without it, a video rejected while
-- it became someone's profile video could stay linked in a cache.
CREATE FUNCTION notify_profile_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('profile_changed', OLD.user_id::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.video_id IS NOT NULL THEN
            PERFORM 1 FROM videos WHERE id = NEW.video_id FOR SHARE;
        END IF;
        PERFORM pg_notify('profile_changed', NEW.user_id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_profile_video_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('profile_changed', p.user_id::text) FROM profiles p WHERE p.video_id = OLD.id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('profile_changed', p.user_id::text) FROM profiles p WHERE p.video_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_all_profiles_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('profile_changed', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER profiles_changed AFTER INSERT OR UPDATE OR DELETE ON profiles
    FOR EACH ROW EXECUTE FUNCTION notify_profile_changed();
CREATE TRIGGER profile_videos_changed AFTER INSERT OR UPDATE OR DELETE ON videos
    FOR EACH ROW EXECUTE FUNCTION notify_profile_video_changed();
CREATE TRIGGER profiles_truncated AFTER TRUNCATE ON profiles
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_profiles_changed();
CREATE TRIGGER profile_videos_truncated AFTER TRUNCATE ON videos
    FOR EACH STATEMENT EXECUTE FUNCTION notify_all_profiles_changed();
