-- vistter-agent schema v3: an event's scope (the stream it happened in: `program:show`, `relay:r1`), apart
-- from its subject (what it is about: a camera id, a destination id). NULL: the subject is the scope.

ALTER TABLE events ADD COLUMN scope TEXT;
CREATE INDEX events_scope ON events(scope);
