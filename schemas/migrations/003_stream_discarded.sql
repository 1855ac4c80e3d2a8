-- Envelopes a loss covers: for cause 'stream_discarded' (the raw stream dropped them by its
-- age or size limits before a processor read them) the number of envelopes, with their
-- records in `records`; 0 for losses counted in records only.
ALTER TABLE {db}.capture_losses ADD COLUMN IF NOT EXISTS envelopes UInt64 DEFAULT 0 AFTER records;
