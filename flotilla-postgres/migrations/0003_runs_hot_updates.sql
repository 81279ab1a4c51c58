-- flotilla schema, version 3: run transitions can be HOT updates.
--
-- PostgreSQL updates a row in place (HOT: no new entry in any index) only
-- when no indexed column changes, predicate columns of partial indexes
-- included. runs_status_idx put `status` in an index, so every transition
-- wrote a new entry into all eleven indexes of `runs` (the GIN on env
-- included). Active runs are found instead through `active`, a column
-- generated from the status that changes once, at STOPPED, and a partial
-- index on it: QUEUED -> PENDING and the other moves between unfinished
-- statuses that touch no other indexed column (queued_at, started_at,
-- finished_at, ...) are now HOT. Lists asking only for unfinished statuses
-- add `AND active` (implied by their status filter) to use the index.
--
-- Adding a stored generated column rewrites the table once, under an
-- exclusive lock: on a large `runs` table, run this migration in a quiet
-- moment.
ALTER TABLE runs ADD COLUMN active boolean GENERATED ALWAYS AS (status <> 'STOPPED') STORED;
DROP INDEX runs_status_idx;
CREATE INDEX runs_active_idx ON runs (run_id) WHERE active;

-- Room on each page for the new version of a row (HOT needs the same
-- page), and vacuum/analyze after 2% of the rows changed instead of 20%,
-- so the active index's statistics and dead versions keep up with the
-- churn of new runs.
ALTER TABLE runs SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
