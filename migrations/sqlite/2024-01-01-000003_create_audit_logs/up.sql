-- Who did what to which resource, from where.
CREATE TABLE audit_logs (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    timestamp BIGINT NOT NULL,
    action TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    actor TEXT CHECK (actor IS NULL OR length(actor) <= 255),
    resource_type TEXT CHECK (resource_type IS NULL OR length(resource_type) <= 100),
    resource_id TEXT CHECK (resource_id IS NULL OR length(resource_id) <= 255),
    details TEXT CHECK (details IS NULL OR json_valid(details)),
    ip_address TEXT,
    user_agent TEXT
);
CREATE INDEX idx_audit_timestamp ON audit_logs(timestamp);
CREATE INDEX idx_audit_action ON audit_logs(action);
CREATE INDEX idx_audit_actor ON audit_logs(actor);
CREATE INDEX idx_audit_actor_timestamp ON audit_logs(actor, timestamp);
