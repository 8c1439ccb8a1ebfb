#!/bin/sh
# The key-value store of the noex tutorial as a `distflow node --exec` script:
# one jq process holds the store and answers the requests.
#
#   distflow node --alias kv --exec examples/shell/kv.sh &
#   distflow send kv '{"type":"set","key":"a","value":1}'     # a cast: no answer
#   distflow call kv '{"type":"get","key":"a"}'               # {"value":1}
#   distflow call kv '{"type":"keys"}'                        # {"keys":["a"]}
#
# Each received message arrives on stdin as one NDJSON line; a request (sent by
# `distflow call` or NodeRuntime::call()) carries a "ref". A line written to stdout
# as {"replyTo": ref, "payload": ...} answers it.
exec jq -nc --unbuffered '
  foreach inputs as $m ({};
    ($m.payload) as $p
    | if $p.type == "set" then .[$p.key | tostring] = $p.value
      elif $p.type == "delete" then del(.[$p.key | tostring])
      else . end;
    ($m.payload) as $p
    | if $m.ref == null then empty
      elif $p.type == "get" then {replyTo: $m.ref, payload: {value: .[$p.key | tostring]}}
      elif $p.type == "has" then {replyTo: $m.ref, payload: {has: has($p.key | tostring)}}
      elif $p.type == "keys" then {replyTo: $m.ref, payload: {keys: keys}}
      elif $p.type == "size" then {replyTo: $m.ref, payload: {size: length}}
      elif $p.type == "set" or $p.type == "delete" then {replyTo: $m.ref, payload: {ok: true}}
      else {replyTo: $m.ref, payload: {error: "unknown request type \($p.type | tojson)"}}
      end)'
