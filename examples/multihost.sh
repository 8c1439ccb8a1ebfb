#!/usr/bin/env bash
# multihost.sh: distflow across two hosts, with a cookie, on this machine.
#
# The two "hosts" are network namespaces (`ip netns`, root needed), joined by a
# veth pair, at 10.203.0.1 (alpha's) and 10.203.0.2 (beta's): those addresses
# exist only inside them, nothing is added to this machine's own network.
#
#   1. a throwaway cookie (mode 600) that both hosts share,
#   2. on each host a PMD (`--bind 127.0.0.1 --bind <its address>`) and a node
#      (`--listen <its address>`), all with `--cookie-file`,
#   3. alpha sends to `beta@10.203.0.2`; beta replies to the `from` it received
#      (`alpha-...@10.203.0.1`); `distflow send` from host A reaches beta too,
#   4. a send with another cookie is refused ("cookie mismatch"),
#   5. the shell key-value store (examples/shell/kv.sh) on host b answers
#      `distflow call kv@10.203.0.2` from host a.
# Everything (processes, namespaces, files) is removed on every exit, by a trap.
# Exit code 77: namespaces cannot be made here (not root, no `ip`, a container).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${DISTFLOW:-$here/../build/release/distflow}
port=${DISTFLOW_PMD_PORT:-4369}  # each host's PMD; inside a namespace it is free
export DISTFLOW_PMD_PORT=$port
[ -x "$bin" ] || { echo "multihost: no binary at $bin (build first: cmake --workflow --preset release)" >&2; exit 1; }
ip=$(command -v ip || true)
skip() { echo "multihost: skipped: $*" >&2; exit 77; }
[ -n "$ip" ] || skip "no 'ip' command (install iproute2)"
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (try: sudo $0)"

# distflow-<pid>-<n>, as the test helper names them: a run that dies without its
# trap (SIGKILL) has its namespaces removed by the next test run.
ns_a=distflow-$$-0 ns_b=distflow-$$-1
addr_a=10.203.0.1 addr_b=10.203.0.2
work=$(mktemp -d)
pids=()
made=()
cleanup() {
  local status=$?
  exec 3>&- 4>&- 2>/dev/null || true
  local i ns pid  # nodes first, the PMDs last, so no node sees its PMD vanish
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  for ns in "${made[@]}"; do
    for pid in $("$ip" netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    "$ip" netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ip" netns add "$ns_a" 2>"$work/err" || skip "ip netns add: $(head -n1 "$work/err")"
made+=("$ns_a")
"$ip" netns add "$ns_b"
made+=("$ns_b")
"$ip" link add eth0 netns "$ns_a" type veth peer name eth0 netns "$ns_b"
for side in "$ns_a $addr_a" "$ns_b $addr_b"; do
  set -- $side
  "$ip" -n "$1" link set lo up
  "$ip" -n "$1" addr add "$2/24" dev eth0
  "$ip" -n "$1" link set eth0 up
done
on_a() { "$ip" netns exec "$ns_a" "$@"; }
on_b() { "$ip" netns exec "$ns_b" "$@"; }

# Waits up to 10 s for the command "$@" to succeed (polling, no fixed sleep).
wait_for() {
  local deadline=$((SECONDS + 10))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "multihost: timed out waiting for: $*" >&2; exit 1; }
    sleep 0.02
  done
}

# Before any traffic: both namespaces exist, each address is on its eth0, and
# neither address exists outside them.
for side in "$ns_a $addr_a" "$ns_b $addr_b"; do
  set -- $side
  "$ip" netns list | grep -q "^$1\b" || { echo "multihost: namespace $1 missing" >&2; exit 1; }
  "$ip" -n "$1" -4 -o addr show dev eth0 | grep -q "inet $2/24" ||
    { echo "multihost: $2 is not on eth0 in $1" >&2; exit 1; }
  if "$ip" -4 -o addr show | grep -q "inet $2/"; then
    echo "multihost: $2 exists outside the namespaces: refusing to use it" >&2
    exit 1
  fi
done
link_up() { "$ip" -n "$1" link show eth0 | grep -q 'state UP'; }
wait_for link_up "$ns_a"
wait_for link_up "$ns_b"
echo "== two hosts: $ns_a at $addr_a, $ns_b at $addr_b"

umask 077
head -c 32 /dev/urandom | base64 >"$work/cookie"
chmod 600 "$work/cookie"
echo "== a shared cookie: $(stat -c '%a' "$work/cookie") $work/cookie"

start_pmd() {  # $1: on_a|on_b  $2: address  $3: name
  "$1" "$bin" pmd --log-level warn --bind 127.0.0.1 --bind "$2" --cookie-file "$work/cookie" \
    >"$work/pmd-$3.out" &
  pids+=($!)
  wait_for grep -q : "$work/pmd-$3.out"
  echo "== host $3: distflow pmd --bind 127.0.0.1 --bind $2 --cookie-file cookie  (port $port)"
}
start_pmd on_a "$addr_a" a
start_pmd on_b "$addr_b" b

mkfifo "$work/alpha.in" "$work/beta.in"
on_a "$bin" node --log-level warn --alias alpha --listen "$addr_a" --cookie-file "$work/cookie" \
  --no-auto-pmd <"$work/alpha.in" >"$work/alpha.out" &
pids+=($!)
exec 3>"$work/alpha.in"
on_b "$bin" node --log-level warn --alias beta --listen "$addr_b" --cookie-file "$work/cookie" \
  --no-auto-pmd <"$work/beta.in" >"$work/beta.out" &
pids+=($!)
exec 4>"$work/beta.in"
wait_for on_b "$bin" pmd resolve "alpha@$addr_a" --cookie-file "$work/cookie"
wait_for on_a "$bin" pmd resolve "beta@$addr_b" --cookie-file "$work/cookie"
echo "== host a: distflow node --alias alpha --listen $addr_a --cookie-file cookie"
echo "== host b: distflow node --alias beta --listen $addr_b --cookie-file cookie"

lines() { [ "$(wc -l <"$1")" -ge "$2" ]; }

echo "== alpha's stdin: {\"to\":\"beta@$addr_b\",\"payload\":{\"hello\":\"from alpha\"}}"
echo "{\"to\":\"beta@$addr_b\",\"payload\":{\"hello\":\"from alpha\"}}" >&3
wait_for lines "$work/beta.out" 1
echo "== beta printed:"
head -n1 "$work/beta.out"

# The reply goes to the `from` beta saw: alpha's id at alpha's host.
from=$(head -n1 "$work/beta.out" | sed -n 's/^{"from":"\([^"]*\)".*/\1/p')
echo "== beta's stdin: {\"to\":\"$from\",\"payload\":{\"reply\":\"from beta\"}}"
echo "{\"to\":\"$from\",\"payload\":{\"reply\":\"from beta\"}}" >&4
wait_for lines "$work/alpha.out" 1
echo "== alpha printed:"
head -n1 "$work/alpha.out"

echo "== host a: distflow send --cookie-file cookie beta@$addr_b '{\"n\":1}'"
on_a "$bin" send --cookie-file "$work/cookie" "beta@$addr_b" '{"n":1}'
wait_for lines "$work/beta.out" 2
echo "== beta printed:"
sed -n 2p "$work/beta.out"

echo "== host a, another cookie: distflow send --cookie-file wrong beta@$addr_b '{\"n\":2}'"
head -c 32 /dev/urandom | base64 >"$work/wrong"
if on_a "$bin" send --cookie-file "$work/wrong" "beta@$addr_b" '{"n":2}' 2>"$work/refused"; then
  echo "multihost: a send with the wrong cookie went through" >&2
  exit 1
fi
echo "== refused: $(grep -o 'cookie mismatch' "$work/refused" | head -n1)"

# Request/reply across the hosts: the shell key-value store on host b, asked
# from host a. The caller listens on its host's address: kv dials back.
on_b "$bin" node --log-level warn --alias kv --listen "$addr_b" --cookie-file "$work/cookie" \
  --no-auto-pmd --exec "$here/shell/kv.sh" </dev/null >/dev/null &
pids+=($!)
wait_for on_a "$bin" pmd resolve "kv@$addr_b" --cookie-file "$work/cookie"
echo "== host b: distflow node --alias kv --exec examples/shell/kv.sh --listen $addr_b --cookie-file cookie"
ask() {
  echo "== host a: distflow call --listen $addr_a --cookie-file cookie kv@$addr_b '$1'" >&2
  on_a "$bin" call --log-level warn --listen "$addr_a" --cookie-file "$work/cookie" "kv@$addr_b" "$1"
}
ask '{"type":"set","key":"greeting","value":"hi"}'
got=$(ask '{"type":"get","key":"greeting"}')
echo "$got"
[ "$got" = '{"value":"hi"}' ] || { echo "multihost: kv answered '$got'" >&2; exit 1; }
echo "== done: cleaning up (processes, namespaces, files)"
