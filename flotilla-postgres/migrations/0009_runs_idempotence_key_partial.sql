-- flotilla schema, version 9: only runs with an idempotence key are in its
-- unique index.
--
-- The UNIQUE constraint of 0001 indexed every run, NULL keys included, and
-- every update that is not HOT (STOPPED, always) wrote a new entry for
-- them: most runs have no key. Measured on 5,000 such updates of `runs`,
-- the index was 7% of the statement. NULLs never conflicted, so the
-- uniqueness is the same; `WHERE idempotence_key = $1` uses the partial
-- index. Building it locks `runs` against writes for the time it takes.
CREATE UNIQUE INDEX runs_idempotence_key_idx ON runs (idempotence_key)
    WHERE idempotence_key IS NOT NULL;
ALTER TABLE runs DROP CONSTRAINT runs_idempotence_key_key;
