-- flotilla schema, version 4: STOPPED runs have an index again.
--
-- Without runs_status_idx, counting or listing STOPPED runs (the metrics'
-- runs-by-status gauge, history filtered on STOPPED) read the whole table.
-- This partial index serves them (an index-only scan for the count). Its
-- predicate column, `active`, changes only at STOPPED, an update that is
-- never HOT anyway (finished_at is indexed): it costs no HOT update.
CREATE INDEX runs_stopped_idx ON runs (run_id) WHERE NOT active;
