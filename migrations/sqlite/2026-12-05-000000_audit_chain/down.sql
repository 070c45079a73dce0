DROP TABLE audit_chain;
DROP INDEX idx_audit_chain_seq;
ALTER TABLE audit_logs DROP COLUMN chain_hash;
ALTER TABLE audit_logs DROP COLUMN chain_prev;
ALTER TABLE audit_logs DROP COLUMN chain_seq;
