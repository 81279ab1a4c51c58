-- flotilla schema for SQLite, version 1.
--
-- The same tables and indexes as the PostgreSQL schema. Every object is
-- kept whole as JSON text (`doc`) so the model can grow without
-- migrations, plus the columns lists filter and sort on. Text compares
-- byte-wise (SQLite's BINARY collation, as the core's ordering rules
-- require). Times are INTEGER nanoseconds since the Unix epoch; a missing
-- run time is stored as 9223372036854775807 (i64::MAX), so it sorts after
-- every time ascending and before every time descending (PostgreSQL's
-- default NULLS LAST / NULLS FIRST) and every sort is an index range scan.
-- `*_lower` columns hold Rust's Unicode lowercase of the text for the
-- case-insensitive "contains" filters (SQLite's lower() is ASCII only).

CREATE TABLE definitions (
    definition_id text PRIMARY KEY,
    alias         text NOT NULL UNIQUE,
    alias_lower   text NOT NULL,
    group_name    text NOT NULL DEFAULT '',
    group_lower   text NOT NULL DEFAULT '',
    image         text NOT NULL,
    image_lower   text NOT NULL,
    memory        integer,
    doc           text NOT NULL,
    created_at    integer NOT NULL,
    updated_at    integer NOT NULL
);
CREATE INDEX definitions_group_idx ON definitions (group_name, definition_id);
CREATE INDEX definitions_image_idx ON definitions (image, definition_id);
CREATE INDEX definitions_memory_idx ON definitions (memory, definition_id);

-- A definition's env as rows, for the env filter (PostgreSQL: a GIN index).
CREATE TABLE definition_env (
    definition_id text NOT NULL,
    name          text NOT NULL,
    value         text NOT NULL
);
CREATE INDEX definition_env_pair_idx ON definition_env (name, value, definition_id);
CREATE INDEX definition_env_def_idx ON definition_env (definition_id);

CREATE TABLE definition_tags (
    definition_id text NOT NULL,
    tag           text NOT NULL,
    tag_lower     text NOT NULL
);
CREATE INDEX definition_tags_tag_idx ON definition_tags (tag);
CREATE INDEX definition_tags_def_idx ON definition_tags (definition_id);

CREATE TABLE runs (
    run_id          text PRIMARY KEY,
    definition_id   text NOT NULL,
    alias           text NOT NULL,
    cluster         text NOT NULL,
    engine          text NOT NULL,
    status          text NOT NULL,
    owner           text NOT NULL DEFAULT '',
    queued_at       integer NOT NULL,
    started_at      integer NOT NULL,
    finished_at     integer NOT NULL,
    env             text NOT NULL DEFAULT '[]',
    idempotence_key text UNIQUE,
    version         integer NOT NULL DEFAULT 0,
    doc             text NOT NULL
);
-- One index per list filter and sort the API offers, each ending in run_id
-- (the tie-breaker) so keyset pages are index range scans.
CREATE INDEX runs_status_idx ON runs (status, run_id);
CREATE INDEX runs_cluster_idx ON runs (cluster, run_id);
CREATE INDEX runs_definition_idx ON runs (definition_id, run_id);
CREATE INDEX runs_owner_idx ON runs (owner, run_id);
CREATE INDEX runs_alias_idx ON runs (alias, run_id);
CREATE INDEX runs_queued_at_idx ON runs (queued_at, run_id);
CREATE INDEX runs_started_at_idx ON runs (started_at, run_id);
CREATE INDEX runs_finished_at_idx ON runs (finished_at, run_id);

-- A run's env as rows: the env filter is an index lookup on (name, value)
-- (PostgreSQL: a GIN index on the env document).
CREATE TABLE run_env (
    run_id text NOT NULL,
    name   text NOT NULL,
    value  text NOT NULL
);
CREATE INDEX run_env_pair_idx ON run_env (name, value, run_id);
CREATE INDEX run_env_run_idx ON run_env (run_id);

CREATE TABLE run_events (
    id          integer PRIMARY KEY,
    run_id      text NOT NULL,
    at          integer NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    attempt     integer NOT NULL,
    reason      text
);
CREATE INDEX run_events_run_idx ON run_events (run_id, id);

CREATE TABLE clusters (
    name       text PRIMARY KEY,
    doc        text NOT NULL,
    updated_at integer NOT NULL
);

CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at integer NOT NULL
);

-- The queue: one row per pending message, deleted on ack. AUTOINCREMENT
-- keeps ids from being reused after a delete, so a receipt
-- "<id>:<deliveries>" names one delivery of one message forever: a stale
-- receipt matches no row.
CREATE TABLE queue_messages (
    id          integer PRIMARY KEY AUTOINCREMENT,
    queue       text NOT NULL,
    run_id      text NOT NULL,
    attempt     integer NOT NULL,
    visible_at  integer NOT NULL,
    deliveries  integer NOT NULL DEFAULT 0,
    enqueued_at integer NOT NULL,
    UNIQUE (queue, run_id, attempt)
);
CREATE INDEX queue_messages_claim_idx ON queue_messages (queue, visible_at, id);
