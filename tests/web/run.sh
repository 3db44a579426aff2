#!/usr/bin/env bash
# The dashboard in a real browser (ctest label `web`): starts a real cluster —
# three libvirt hosts (scripts/hosts, each serving libvirt's test driver), a
# controller serving web/, one agent per host — applies policies/demo.yaml with
# the hosts' test URIs (so the controller's own libvirt line can kill a VM),
# then runs dashboard.test.mjs (node's test runner driving Debian's chromium
# through playwright-core). Everything it started is stopped on any exit.
#
#   tests/web/run.sh BUILD_DIR        needs root (libvirt hosts), node, chromium,
#                                     and tests/web/node_modules (scripts/setup)
# Artifacts: BUILD_DIR/artifacts/dashboard.png, dashboard-phone.png, and on
# failure the daemons' logs in BUILD_DIR/artifacts/web-logs/.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
BIN=$BUILD/bin
ARTIFACTS=$BUILD/artifacts
CHROMIUM=${TW_CHROMIUM:-/usr/bin/chromium}
START=$(date +%s.%N)

passed=0
failed=0
summary() {  # the closing line every run prints
  echo "dashboard_browser: $(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s"
  echo "$passed passed, $failed failed"
}
fail_setup() {
  echo "run.sh: $*" >&2
  failed=1
  exit 1
}

if [ "$(id -u)" != 0 ]; then
  echo "run.sh: needs root to start libvirt hosts (scripts/hosts): skipped"
  exit 77
fi
for f in "$BIN/tierwarden-controller" "$BIN/tierwarden-agent" "$BIN/twctl"; do
  [ -x "$f" ] || { echo "run.sh: $f is missing: build first"; echo "0 passed, 1 failed"; exit 1; }
done
command -v node >/dev/null || { echo "run.sh: node is missing (scripts/setup installs it)"; echo "0 passed, 1 failed"; exit 1; }
[ -x "$CHROMIUM" ] || { echo "run.sh: $CHROMIUM is missing (scripts/setup installs it)"; echo "0 passed, 1 failed"; exit 1; }
[ -d "$HERE/node_modules/playwright-core" ] ||
  { echo "run.sh: tests/web/node_modules is missing (scripts/setup runs npm ci)"; echo "0 passed, 1 failed"; exit 1; }

TMP=$(mktemp -d /tmp/tw-web.XXXXXX)
export TW_HOSTS_DIR=$TMP/hosts
export TW_HOSTS_CAPS_CACHE=$BUILD/hosts-caps-cache  # kept: later runs start hosts in ~0.5 s
controller_pid=""
hosts_started=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$controller_pid" ]; then  # stop the restart loop, then the controller it runs
    touch "$TMP/stop"
    for _ in $(seq 50); do
      kill "$(cat "$TMP/controller.pid" 2>/dev/null)" 2>/dev/null || true
      kill -0 "$controller_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$controller_pid" 2>/dev/null || true
    wait "$controller_pid" 2>/dev/null || true
  fi
  if [ "$hosts_started" = 1 ]; then  # ends every host and the agents inside them
    "$ROOT/scripts/hosts" stop >/dev/null 2>&1 || true
  fi
  rm -rf "$ARTIFACTS/web-logs"
  if [ "$failed" != 0 ] || [ "$rc" != 0 ]; then
    mkdir -p "$ARTIFACTS/web-logs"
    cp "$TMP"/*.log "$ARTIFACTS/web-logs/" 2>/dev/null || true
    echo "run.sh: daemon logs kept in $ARTIFACTS/web-logs/"
  fi
  "$ROOT/scripts/hosts" clean >/dev/null 2>&1 || true
  rm -rf "$TMP"
  [ "$rc" != 0 ] && [ "$failed" = 0 ] && [ "$passed" = 0 ] && failed=1
  summary
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$ARTIFACTS" "$TMP/state"

# --- controller on a free port, restarted when it exits (the test restarts it
# to see the page's event stream reconnect); its current PID in controller.pid ---
port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
  console.log(s.address().port); s.close(); });')
agent_port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
  console.log(s.address().port); s.close(); });')
url=https://127.0.0.1:$port
# HTTPS as a real install serves it (docs/auth.md, "TLS"): the cluster's CA
# and the controller's certificate (init), each agent's token and client
# certificate (issue-host); curl and twctl trust the CA, the browser is told
# to accept the controller's certificate (ignoreHTTPSErrors).
# Each agent's own token; the controller serves reads without a token
# (--public-read, as the demo does): the page is read-only until a token is given.
mkdir -p "$TMP/state"
"$BIN/tierwarden-controller" init --state-dir "$TMP/state" --san 127.0.0.1 >/dev/null ||
  fail_setup "tierwarden-controller init failed"
# node (the test's own API reads: fetch) trusts it through NODE_EXTRA_CA_CERTS.
export CURL_CA_BUNDLE=$TMP/state/tls/ca.pem TW_CA=$TMP/state/tls/ca.pem NODE_EXTRA_CA_CERTS=$TMP/state/tls/ca.pem
for h in h1 h2 h3; do
  "$BIN/tierwarden-controller" issue-host "$h" --state-dir "$TMP/state" >/dev/null ||
    fail_setup "issue-host $h failed"
done
(
  for _ in $(seq 20); do
    [ -e "$TMP/stop" ] && break
    "$BIN/tierwarden-controller" --state-dir "$TMP/state" --listen "127.0.0.1:$port" \
      --agent-listen "127.0.0.1:$agent_port" --web-dir "$ROOT/web" --public-read --tick-ms 50 >>"$TMP/controller.log" 2>&1 &
    echo $! >"$TMP/controller.pid"
    wait $! || true
    sleep 0.2
  done
) &
controller_pid=$!
up=0
for _ in $(seq 100); do
  curl -fsS -o /dev/null "$url/api/v1/cluster" 2>/dev/null && { up=1; break; }
  sleep 0.1
done
[ "$up" = 1 ] || fail_setup "controller did not start: $(tail -3 "$TMP/controller.log")"
export TW_CONTROLLER=$url TW_TOKEN_FILE=$TMP/state/token

# --- three hosts, one agent inside each (it dies with its host) ---
hosts_started=1
"$ROOT/scripts/hosts" start 3 >"$TMP/hosts-start.log" 2>&1 ||
  fail_setup "scripts/hosts start 3 failed: $(tail -3 "$TMP/hosts-start.log")"
cp "$ROOT/policies/demo.yaml" "$TMP/demo.yaml"
for h in h1 h2 h3; do
  uri=$("$ROOT/scripts/hosts" test-uri "$h")
  "$ROOT/scripts/hosts" spawn "$h" "$TMP/agent-$h.log" -- "$BIN/tierwarden-agent" --host "$h" \
    --libvirt-uri "$uri" --controller "https://127.0.0.1:$agent_port" --bundle "$TMP/state/hosts/$h" >/dev/null
  # The controller's own line to the host: its shared test driver (kill, fencing).
  awk -v host="$h" -v uri="$uri" '
    $0 ~ "name: " host "$" { inhost = 1 }
    inhost && /uri:/ { sub(/uri: .*/, "uri: \"" uri "\""); inhost = 0 }
    { print }' "$TMP/demo.yaml" >"$TMP/demo.yaml.new" && mv "$TMP/demo.yaml.new" "$TMP/demo.yaml"
done
"$BIN/twctl" apply -f "$TMP/demo.yaml" >"$TMP/apply.log" 2>&1 ||
  fail_setup "twctl apply failed: $(cat "$TMP/apply.log")"

# --- every VM running and every host online before the browser looks ---
ready=0
for _ in $(seq 300); do
  if curl -fsS "$url/api/v1/vms" | jq -e '(.vms | length) > 0 and all(.vms[]; .state == "running")' \
    >/dev/null 2>&1 &&
    curl -fsS "$url/api/v1/hosts" | jq -e 'all(.hosts[]; .state == "online")' >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.1
done
[ "$ready" = 1 ] || fail_setup "VMs not running after 30 s: $(curl -fsS "$url/api/v1/vms")"
echo "run.sh: cluster up at $url after $(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s"

# --- the browser test ---
set +e
TW_URL=$url TW_TOKEN_FILE=$TW_TOKEN_FILE TW_POLICY=$TMP/demo.yaml TW_ARTIFACTS=$ARTIFACTS \
  TW_CHROMIUM=$CHROMIUM TW_CONTROLLER_PID_FILE=$TMP/controller.pid node --test --test-reporter=tap "$HERE/dashboard.test.mjs" 2>&1 |
  tee "$TMP/node-test.log"
node_rc=${PIPESTATUS[0]}
set -e
passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$TMP/node-test.log" | tail -1)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$TMP/node-test.log" | tail -1)
passed=${passed:-0}
failed=${failed:-0}
if [ "$node_rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
if [ "$failed" = 0 ] && [ "$passed" -gt 0 ]; then exit 0; fi
exit 1
