-- An archive run (`parallax storage archive …`, or a retention run with `archiveDestination`) keeps how far it
-- got in its run record: the JSON of its archive state (target, destination, phase, manifest key, objects whose
-- rows are deleted, rows archived per table), so that the next archive run to the same destination can finish
-- it. NULL for a plain cleanup.
ALTER TABLE retention_runs ADD COLUMN archive TEXT CHECK (archive IS NULL OR (json_valid(archive) AND json_type(archive) = 'object'));
