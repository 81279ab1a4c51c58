-- flotilla schema, version 1.
--
-- Every table keeps the full object as JSONB (`doc`) so the model can grow
-- without migrations, plus the columns that lists filter and sort on. Text
-- columns that sort use COLLATE "C" (byte-wise, as the core's ordering rules
-- require).

CREATE TABLE definitions (
    definition_id text COLLATE "C" PRIMARY KEY,
    alias         text COLLATE "C" NOT NULL UNIQUE,
    group_name    text COLLATE "C" NOT NULL DEFAULT '',
    image         text COLLATE "C" NOT NULL,
    memory        bigint,
    env           jsonb NOT NULL DEFAULT '[]',
    tags          text[] COLLATE "C" NOT NULL DEFAULT '{}',
    doc           jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX definitions_group_idx ON definitions (group_name, definition_id);
CREATE INDEX definitions_image_idx ON definitions (image, definition_id);
CREATE INDEX definitions_memory_idx ON definitions (memory, definition_id);
CREATE INDEX definitions_env_idx ON definitions USING gin (env jsonb_path_ops);
CREATE INDEX definitions_tags_idx ON definitions USING gin (tags);

CREATE TABLE runs (
    run_id          text COLLATE "C" PRIMARY KEY,
    definition_id   text COLLATE "C" NOT NULL,
    alias           text COLLATE "C" NOT NULL,
    cluster         text COLLATE "C" NOT NULL,
    engine          text COLLATE "C" NOT NULL,
    status          text COLLATE "C" NOT NULL,
    owner           text COLLATE "C" NOT NULL DEFAULT '',
    queued_at       timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    env             jsonb NOT NULL DEFAULT '[]',
    idempotence_key text COLLATE "C" UNIQUE,
    version         bigint NOT NULL DEFAULT 0,
    doc             jsonb NOT NULL
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
CREATE INDEX runs_env_idx ON runs USING gin (env jsonb_path_ops);
-- runs_status_idx also serves the status worker's scan of active runs
-- (status IN ('PENDING','RUNNING') ORDER BY run_id) and the retry and
-- reconcile scans: few runs are unfinished, so those ranges are short.

CREATE TABLE run_events (
    id          bigserial PRIMARY KEY,
    run_id      text COLLATE "C" NOT NULL,
    at          timestamptz NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    attempt     integer NOT NULL,
    reason      text
);
CREATE INDEX run_events_run_idx ON run_events (run_id, id);

CREATE TABLE clusters (
    name       text COLLATE "C" PRIMARY KEY,
    doc        jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE leases (
    name       text COLLATE "C" PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The queue: one row per pending message, deleted on ack. Claims use
-- FOR UPDATE SKIP LOCKED in short autocommit statements, so no transaction
-- stays open. `deliveries` doubles as the receipt's delivery token: a stale
-- receipt (an older delivery) matches no row.
CREATE TABLE queue_messages (
    id          bigserial PRIMARY KEY,
    queue       text COLLATE "C" NOT NULL,
    run_id      text COLLATE "C" NOT NULL,
    attempt     integer NOT NULL,
    visible_at  timestamptz NOT NULL DEFAULT now(),
    deliveries  integer NOT NULL DEFAULT 0,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (queue, run_id, attempt)
)
-- A table with a high insert/delete churn: vacuum it after 1% of rows (or
-- 1000) changed instead of the default 20%, so dead tuples never pile up in
-- front of the claim index; leave room on pages for updates of claimed rows.
WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);
CREATE INDEX queue_messages_claim_idx ON queue_messages (queue, visible_at, id);

-- Wakes receivers (LISTEN flotilla_queue) on every enqueue, once per
-- statement and queue, delivered at commit.
CREATE FUNCTION flotilla_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flotilla_queue', q.queue)
    FROM (SELECT DISTINCT queue FROM new_rows) AS q;
    RETURN NULL;
END;
$$;
CREATE TRIGGER queue_messages_notify
    AFTER INSERT ON queue_messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_queue_notify();
