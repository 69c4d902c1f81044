#!/usr/bin/env bash
# if-backend.sh LOOM NAME CMD...: run CMD when backend NAME is available on
# this machine; otherwise exit 77, which meson counts as skipped (never a pass).
loom=$1 name=$2
shift 2
reason=$(LOOM_BACKEND= "$loom" backends --json | python3 -c '
import json, sys
name = sys.argv[1]
for b in json.load(sys.stdin)["backends"]:
    if b["name"] == name:
        print("" if b.get("available") else b.get("reason", "unavailable"))
        sys.exit(0)
print("not built or not found")' "$name")
if [ -n "$reason" ]; then
  echo "SKIP: backend '$name' is not available here: $reason"
  exit 77
fi
exec "$@"
