-- The TCP trouble on an exchange's own connection while it was in flight, from the same
-- shard's retransmit and drop records (processors/l7/harm.ts): retransmits and drops between
-- the first request byte and the last response byte (for a request without a response, up
-- to when it timed out), and how long before the exchange's end the first of them came.
-- Rows written before these columns existed read 0.
ALTER TABLE {db}.http_requests ADD COLUMN IF NOT EXISTS retransmits UInt16 DEFAULT 0 COMMENT 'TCP retransmits on the connection while the exchange was in flight',
    ADD COLUMN IF NOT EXISTS drops UInt16 DEFAULT 0 COMMENT 'packets of the connection the kernel dropped while the exchange was in flight',
    ADD COLUMN IF NOT EXISTS harm_ns UInt64 DEFAULT 0 COMMENT 'from the first of them to the last response byte, 0 without a response or without them';
