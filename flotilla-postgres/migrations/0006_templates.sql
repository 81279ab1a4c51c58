-- flotilla schema, version 6: templates (flotilla-os v7), immutable
-- versions kept whole as JSONB (`doc`). UNIQUE (template_name, version)
-- makes two writers racing for a name's next version conflict instead of
-- both storing it; its index also serves lookups by name and the latest
-- version of a name.
CREATE TABLE templates (
    template_id   text COLLATE "C" PRIMARY KEY,
    template_name text COLLATE "C" NOT NULL,
    version       integer NOT NULL,
    doc           jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    UNIQUE (template_name, version)
);
CREATE INDEX templates_version_idx ON templates (version, template_name);
