-- flotilla schema, version 7: the runs in flight (PENDING or RUNNING) are
-- kept in a table of their own.
--
-- The status worker lists PENDING and RUNNING runs on every poll. It found
-- them through runs_active_idx, the index of unfinished runs, which also
-- holds every QUEUED run: behind a backlog of 100,000 queued runs each poll
-- read the whole backlog (pg_bench: 6.3 s of server time while draining
-- 100,000 runs). An index that tells PENDING from QUEUED would put `status`
-- (or a column generated from it) in an index, and QUEUED -> PENDING would
-- no longer be a HOT update (migration 0003; tried, slower). This narrow
-- table holds the id of each run in flight instead: the statements that
-- write `runs` (insert_run, update_run and the batched update_runs of the
-- PostgreSQL store) add a run when it becomes PENDING or RUNNING and remove
-- it when it leaves, in the same statement, so it holds exactly the runs in
-- flight at every commit. Lists asking only for in-flight statuses take
-- their run ids from it.
CREATE TABLE runs_in_flight (
    run_id text COLLATE "C" PRIMARY KEY
)
-- One insert and one delete per run: vacuum after 1,000 changed rows, not
-- after 20% of a table this small.
WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000
);
INSERT INTO runs_in_flight (run_id)
SELECT run_id FROM runs WHERE active AND status IN ('PENDING', 'RUNNING');
