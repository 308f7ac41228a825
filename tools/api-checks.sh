#!/usr/bin/env bash
# Checks a real llmcm server with third-party tools: schemathesis against its OpenAPI document,
# and promtool against its /metrics exposition. A scratch data directory with seeded data, an
# admin token, loopback only. Exits non-zero on any finding (a 5xx, a response that violates the
# OpenAPI document, an undocumented status code, a malformed metric...). The server is stopped
# on exit.
#
#   tools/api-checks.sh [path/to/llmcm]        (default: target/debug/llmcm)
#   LLMCM_SCHEMATHESIS_EXAMPLES=N               examples per operation (default 30)
set -euo pipefail

bin=${1:-target/debug/llmcm}
examples=${LLMCM_SCHEMATHESIS_EXAMPLES:-30}
scratch=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

"$bin" token new --name schemathesis --role admin > "$scratch/llmcm.toml"
token=$(sed -n 2p "$scratch/llmcm.toml" | sed 's/^# //')
"$bin" serve --config "$scratch/llmcm.toml" --data-dir "$scratch/data" --listen 127.0.0.1:0 \
    > "$scratch/out" 2> "$scratch/err" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "^ready" "$scratch/out" 2>/dev/null && break
    sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$scratch/out")
[ -n "$base" ] || { cat "$scratch/err"; echo "the server did not start" >&2; exit 1; }

auth="Authorization: Bearer $token"
seed() { curl -sf -X "$1" -H "$auth" "$base$2" ${3:+--data-binary "$3"} > /dev/null; }
seed PUT "/v1/kv/_schemas/prod/chatbot" '{"type":"object","properties":{"temperature":{"type":"number","maximum":2}}}'
seed PUT "/v1/kv/prod/chatbot/model" '{"model":"m1","temperature":0.2}'
seed PUT "/v1/kv/prod/chatbot/model" '{"model":"m2","temperature":0.7}'
seed PUT "/v1/kv/prod/router/rules" '[{"match":"*","to":"m2"}]'
seed POST "/v1/txn" '{"ops":[{"op":"put","key":"dev/flag","value":true},{"op":"delete","key":"prod/router/rules"}],"reason":"seed"}'

# positive_data_acceptance is left out: a request can match the schema and still be refused for
# what it means — a point in the future, `revision` and `at` together, a put without a value, a
# revision above the head — which an OpenAPI schema cannot express. Every other check runs.
# /v1/watch is left out: its streams never end, and schemathesis reads a response to its end
# (5 minutes of timeouts per run); tests/http/watch_sse.rs checks its events instead.
# /v1/admin/read-only is left out: switching the store read-only makes every later write a
# (documented) 503, which schemathesis counts as a server error; tests/http/server_lifecycle.rs
# covers it.
echo "schemathesis against $base ($examples examples per operation)"
schemathesis run "$base/openapi.json" -H "$auth" --max-examples "$examples" --seed 1 \
    --workers 1 --exclude-checks positive_data_acceptance --exclude-path /v1/watch --exclude-path /v1/admin/read-only

echo "promtool check metrics against $base/metrics"
curl -sf "$base/metrics" | promtool check metrics

echo "promtool: alert rules (deploy/prometheus), checked and unit-tested"
promtool check rules deploy/prometheus/llmcm-rules.yml
(cd deploy/prometheus && promtool test rules llmcm-rules.test.yml)
