-- Templates (flotilla-os v7): immutable versions, each kept whole as JSON
-- text (`doc`). UNIQUE (template_name, version) makes two writers racing
-- for a name's next version conflict instead of both storing it; the index
-- also serves lookups by name and the latest version of a name.
CREATE TABLE templates (
    template_id   text PRIMARY KEY,
    template_name text NOT NULL,
    version       integer NOT NULL,
    doc           text NOT NULL,
    created_at    integer NOT NULL,
    UNIQUE (template_name, version)
);
CREATE INDEX templates_version_idx ON templates (version, template_name);
