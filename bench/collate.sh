#!/usr/bin/env bash
# The COLLATE "C" question (docs/warehouse.md): a 300,000-row keyed insert and the guarded MERGE of
# the same keys under three key collations, 3 rounds rotated, on the local PostgreSQL (database test).
#   bash bench/collate.sh      # prints "round N collation: insert_ms merge_ms"
set -euo pipefail
P="psql -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d test -qAt"
$P -c "SET client_min_messages = warning; DROP TABLE IF EXISTS coll_s; CREATE UNLOGGED TABLE coll_s AS SELECT 'evt-' || md5(i::text) AS event_id, 'u' || (i % 997) AS user_id, i::bigint AS off FROM generate_series(1, 300000) i; ANALYZE coll_s;"
for round in 1 2 3; do
 for coll in '"C"' '"C.utf8"' '"en-US-x-icu"'; do
  out=$($P <<SQL
\timing on
SET client_min_messages = warning; DROP TABLE IF EXISTS coll_t;
CREATE TABLE coll_t (event_id text COLLATE $coll PRIMARY KEY, user_id text, off bigint) WITH (fillfactor=50);
INSERT INTO coll_t SELECT * FROM coll_s;
MERGE INTO coll_t t USING coll_s s ON t.event_id = s.event_id WHEN MATCHED AND s.off >= t.off THEN UPDATE SET user_id = s.user_id, off = s.off WHEN NOT MATCHED THEN INSERT VALUES (s.event_id, s.user_id, s.off);
DROP TABLE coll_t;
SQL
)
  echo "round $round $coll: $(echo "$out" | grep Time | sed -n '4p;5p' | awk '{print $2}' | tr '\n' ' ')"
 done
done
$P -c "DROP TABLE coll_s"
