#!/bin/sh
# shout.sh: a node's behaviour written as a shell filter, for `distflow node --exec`.
#
#   distflow node --alias shouter --exec examples/shell/shout.sh
#   distflow send --from me shouter '{"text":"hello"}'   # 'me' gets {"text":"HELLO",...}
#
# Shows: the node hands the script one NDJSON line per received message on stdin
# ({"from","alias","to","timestamp","payload"}); every line the script writes on
# stdout ({"to":TARGET,"payload":JSON}) is sent. Here each message is answered to
# its sender with the text upper-cased. jq --unbuffered writes each answer as soon
# as its message arrives; the node's environment names who we are.
exec jq --unbuffered -c --arg me "${DISTFLOW_ALIAS:-shouter}" '
  {to: .from,
   payload: {text: ((.payload.text // "") | ascii_upcase), by: $me, seq: .payload.seq}}'
