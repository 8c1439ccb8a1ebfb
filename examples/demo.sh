#!/usr/bin/env bash
# demo.sh: distflow end to end from the shell, on a private PMD (never the user's 4369).
#
#   1. a PMD on a free port (`distflow pmd --port 0` prints its address first),
#   2. `distflow node --exec examples/shell/shout.sh`: a shell filter as a node,
#   3. `distflow node --alias inbox`: prints what it receives as NDJSON,
#   4. a pipeline `seq | jq | distflow send --from inbox shouter -` drives it,
#   5. the replies arrive at 'inbox'; `distflow pmd list` and `watch` show the peers.
# Every process started here is stopped by its PID on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${DISTFLOW:-$here/../build/release/distflow}
count=${1:-5}
[ -x "$bin" ] || { echo "demo: no binary at $bin (build first: cmake --workflow --preset release)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  local i  # nodes first, the PMD last, so nobody sees its PMD vanish
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Waits up to 10 s for the command "$@" to succeed (polling, no fixed sleep).
wait_for() {
  local deadline=$((SECONDS + 10))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "demo: timed out waiting for: $*" >&2; exit 1; }
    sleep 0.02
  done
}

"$bin" pmd --port 0 --log-level warn >"$work/pmd.out" &
pids+=($!)
wait_for grep -q : "$work/pmd.out"
port=$(head -n1 "$work/pmd.out" | cut -d: -f2)
export DISTFLOW_PMD_PORT=$port
echo "== distflow pmd listening on 127.0.0.1:$port"

"$bin" node --alias shouter --log-level warn --exec "$here/shell/shout.sh" &
pids+=($!)
mkfifo "$work/inbox.in"
"$bin" node --alias inbox --log-level warn <"$work/inbox.in" >"$work/inbox.out" &
pids+=($!)
exec 3>"$work/inbox.in"  # keeps the inbox's stdin open until the end
wait_for "$bin" pmd resolve shouter
wait_for "$bin" pmd resolve inbox
echo "== distflow pmd list"
"$bin" pmd list

echo "== seq 1 $count | jq -c '{text: \"hello \\(.)\", seq: .}' | distflow send --from inbox shouter -"
seq 1 "$count" | jq -c '{text: "hello \(.)", seq: .}' | "$bin" send --from inbox shouter -

replies() { [ "$(wc -l <"$work/inbox.out")" -ge "$count" ]; }
wait_for replies
echo "== inbox received (one NDJSON line per message):"
cat "$work/inbox.out"
echo "== payloads only: jq -c .payload"
jq -c .payload "$work/inbox.out"
