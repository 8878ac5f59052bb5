-- Ferry's schema, version 1 (SQLite). Same logical schema as migrations/postgres/0001_initial.sql.
-- JSON is stored as TEXT written by serde_json, so key order and numbers come back as written.
-- Times are epoch milliseconds.

CREATE TABLE applications (
    name       TEXT    NOT NULL PRIMARY KEY,
    body       TEXT    NOT NULL, -- the application document; name and times are also columns
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE pipelines (
    id          TEXT    NOT NULL PRIMARY KEY,
    application TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,          -- latest row in pipeline_versions
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (application, name)
);

CREATE TABLE pipeline_versions (
    pipeline_id TEXT    NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    spec        TEXT    NOT NULL,          -- the pipeline document, with "id"
    updated_by  TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (pipeline_id, version)
);

CREATE TABLE executions (
    id                 TEXT    NOT NULL PRIMARY KEY,
    application        TEXT    NOT NULL,
    pipeline_config_id TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    build_time         INTEGER NOT NULL,
    start_time         INTEGER,
    end_time           INTEGER,
    trigger_type       TEXT    NOT NULL,   -- copies of trigger.type and .user; columns are for queries
    trigger_user       TEXT    NOT NULL,
    spec               TEXT    NOT NULL,   -- {trigger, stageDefs}: written once, at creation
    body               TEXT    NOT NULL, -- the document without stages, stageDefs, trigger
    updated_at         INTEGER NOT NULL
);
CREATE INDEX executions_application_build_time ON executions (application, build_time);
CREATE INDEX executions_pipeline_build_time ON executions (pipeline_config_id, build_time);
CREATE INDEX executions_status ON executions (status);

CREATE TABLE stages (
    execution_id TEXT    NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,         -- position in Execution::stages
    id           TEXT    NOT NULL,
    ref_id       TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    body         TEXT    NOT NULL,         -- the whole stage (id, ref_id, status are copies)
    PRIMARY KEY (execution_id, idx)
);

CREATE TABLE queue (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,  -- never reused
    execution_id TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE probe (
    id INTEGER NOT NULL PRIMARY KEY,
    n  INTEGER NOT NULL
);
