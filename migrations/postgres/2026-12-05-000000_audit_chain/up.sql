-- The tamper-evident audit chain (README "Verifying the audit log"): every entry keeps its position in the
-- chain (`chain_seq`, 1, 2, 3, … in the order the storage accepted it), the hash of the entry before it
-- (`chain_prev`) and its own hash (`chain_hash`, SHA-256 over `chain_prev` and the entry's canonical form). The
-- hashes are computed by the plugin, not here: the canonical form (sorted JSON keys, normalised numbers, IP text)
-- cannot be reproduced in SQL the same way on every backend. Entries that exist when this runs are chained once,
-- in (timestamp, id) order, by the plugin's next open that may write (`legacy_pending`).
ALTER TABLE audit_logs
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN chain_prev BYTEA CHECK (chain_prev IS NULL OR octet_length(chain_prev) = 32),
    ADD COLUMN chain_hash BYTEA CHECK (chain_hash IS NULL OR octet_length(chain_hash) = 32);
CREATE UNIQUE INDEX idx_audit_chain_seq ON audit_logs(chain_seq);
-- The head record, one row: the newest entry's position (appends lock this row, so that several processes or
-- hosts still make one chain), and the checkpoint retention and archive leave when they remove the oldest
-- entries (the last removed position and hash, and how many were removed).
CREATE TABLE audit_chain (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    head_seq BIGINT NOT NULL CHECK (head_seq >= 0),
    head_hash BYTEA NOT NULL CHECK (octet_length(head_hash) = 32),
    checkpoint_seq BIGINT,
    checkpoint_hash BYTEA CHECK (checkpoint_hash IS NULL OR octet_length(checkpoint_hash) = 32),
    checkpoint_removed BIGINT NOT NULL DEFAULT 0,
    checkpoint_at TIMESTAMP WITH TIME ZONE,
    legacy_pending BOOLEAN NOT NULL
);
INSERT INTO audit_chain (id, head_seq, head_hash, legacy_pending)
VALUES (1, 0, decode(repeat('00', 32), 'hex'), EXISTS (SELECT 1 FROM audit_logs));
