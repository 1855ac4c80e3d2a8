-- The path with what names one resource among many replaced by {id} (/users/{id}), so one
-- endpoint is one value (processors/l7/path-template.ts). Rows written before this column
-- existed read their raw path.
ALTER TABLE {db}.http_requests ADD COLUMN IF NOT EXISTS path_template String DEFAULT path CODEC(ZSTD(3)) AFTER path;
