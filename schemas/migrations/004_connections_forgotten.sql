-- Connections a loss covers: for cause 'conn_table_full' (a processor's lanes tracked as many
-- connections as --max-connections allows and forgot the least recently used, with whatever
-- they had in progress) the number of connections; 0 for other causes.
ALTER TABLE {db}.capture_losses ADD COLUMN IF NOT EXISTS connections UInt64 DEFAULT 0 AFTER envelopes;
