-- EpisodicMemory: what happened, one row an episode, with full-text search.
--
-- `seq` is the stable rowid the FTS index points at (an explicit INTEGER PRIMARY KEY
-- survives VACUUM; an implicit rowid may not). `id` is the public identifier.
CREATE TABLE episodes (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    session     TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN (
                    'chat_turn', 'question', 'answer', 'gap', 'gap_closed',
                    'training_run', 'growth', 'tool_call', 'feedback')),
    content     TEXT    NOT NULL,
    metadata    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    importance  REAL    NOT NULL DEFAULT 0.5 CHECK (importance BETWEEN 0.0 AND 1.0),
    created_at  TEXT    NOT NULL,   -- RFC 3339, UTC
    updated_at  TEXT    NOT NULL
);

CREATE INDEX episodes_by_session ON episodes (session, created_at);
CREATE INDEX episodes_by_kind    ON episodes (kind, created_at);
CREATE INDEX episodes_by_time    ON episodes (created_at);

-- External-content FTS5 index over `content`; the triggers keep it in step.
-- `remove_diacritics 2` lets "cancion" find "canción" (the corpus is Spanish and English).
CREATE VIRTUAL TABLE episodes_fts USING fts5(
    content,
    content = 'episodes',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER episodes_ai AFTER INSERT ON episodes BEGIN
    INSERT INTO episodes_fts (rowid, content) VALUES (new.seq, new.content);
END;
CREATE TRIGGER episodes_ad AFTER DELETE ON episodes BEGIN
    INSERT INTO episodes_fts (episodes_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
CREATE TRIGGER episodes_au AFTER UPDATE OF content ON episodes BEGIN
    INSERT INTO episodes_fts (episodes_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    INSERT INTO episodes_fts (rowid, content) VALUES (new.seq, new.content);
END;
