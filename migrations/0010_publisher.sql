-- vistter-agent schema v10: what sends each destination's stream to its ingest: the agent's own
-- RTMP(S) client ('native', the default) or an FFmpeg process ('ffmpeg').
ALTER TABLE destinations ADD COLUMN publisher TEXT NOT NULL DEFAULT 'native';
