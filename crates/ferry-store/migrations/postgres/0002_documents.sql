-- Ferry's schema, version 2 (PostgreSQL): versioned documents of other kinds (canary configs, …).
-- Same logical schema as migrations/sqlite/0002_documents.sql.

CREATE TABLE documents (
    kind       TEXT    NOT NULL,           -- e.g. CanaryConfig
    name       TEXT    NOT NULL,
    version    BIGINT  NOT NULL,           -- from 1, one more on every change
    body       TEXT    NOT NULL,           -- the document as written
    updated_by TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (kind, name, version)
);
