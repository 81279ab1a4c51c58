-- flotilla schema, version 5: `runs` is vacuumed at PostgreSQL's default
-- thresholds again.
--
-- Migration 0003 set autovacuum and analyze of `runs` at 2% of the rows
-- (and 5% of inserts). Measured in pg_bench (release, 20,000 runs, fsync
-- on), that made the drain about 25% slower (autovacuum of the table and
-- its eleven indexes, GIN included, running beside the transitions on a
-- small machine) for no gain the bench could see. fillfactor = 80 stays:
-- it leaves room on each page for the HOT update of a new run.
ALTER TABLE runs RESET (
    autovacuum_vacuum_scale_factor,
    autovacuum_analyze_scale_factor,
    autovacuum_vacuum_insert_scale_factor
);
