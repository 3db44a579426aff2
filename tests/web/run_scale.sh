#!/usr/bin/env bash
# The dashboard at 1,000 hosts in a real browser (ctest label `web`, issue
# #16): bench/scale --serve starts one real controller (serving web/, reads
# public) and plays 1,000 agents over real HTTP (the real Agent class on
# FakeHypervisors, in its own process) with 2 VMs each; once every VM runs,
# dashboard_scale.test.mjs loads the page in Debian's chromium, checks the
# summary and the grouped hosts, finds one VM with the filter box, and writes
# BUILD_DIR/artifacts/dashboard-1000.png.
#
#   tests/web/run_scale.sh BUILD_DIR [HOSTS]     needs node, chromium and
#                                                 tests/web/node_modules (scripts/setup)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:?usage: run_scale.sh BUILD_DIR [HOSTS]}" && pwd)
HOSTS=${2:-1000}
ARTIFACTS=$BUILD/artifacts
CHROMIUM=${TW_CHROMIUM:-/usr/bin/chromium}
START=$(date +%s.%N)

for f in "$BUILD/bin/scale" "$BUILD/bin/tierwarden-controller"; do
  [ -x "$f" ] || { echo "run_scale.sh: $f is missing: build first"; echo "0 passed, 1 failed"; exit 1; }
done
command -v node >/dev/null || { echo "run_scale.sh: node is missing (scripts/setup installs it)"; exit 1; }
[ -x "$CHROMIUM" ] || { echo "run_scale.sh: $CHROMIUM is missing (scripts/setup installs it)"; exit 1; }
[ -d "$HERE/node_modules/playwright-core" ] || { echo "run_scale.sh: tests/web/node_modules is missing"; exit 1; }

TMP=$(mktemp -d /tmp/tw-web-scale.XXXXXX)
scale_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$scale_pid" ]; then
    kill "$scale_pid" 2>/dev/null || true
    wait "$scale_pid" 2>/dev/null || true
  fi
  if [ "$rc" != 0 ]; then
    mkdir -p "$ARTIFACTS/web-scale-logs"
    cp "$TMP"/*.log "$ARTIFACTS/web-scale-logs/" 2>/dev/null || true
    echo "run_scale.sh: logs kept in $ARTIFACTS/web-scale-logs/"
  fi
  rm -rf "$TMP"
  echo "dashboard_scale_browser: $(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$ARTIFACTS"

"$BUILD/bin/scale" --serve "$ROOT/web" --hosts "$HOSTS" --vms-per-host 2 --threads 4 \
  >"$TMP/scale.log" 2>&1 &
scale_pid=$!
url=""
for _ in $(seq 600); do  # 1,000 hosts converge in well under a minute on an idle machine
  url=$(sed -n 's/^serving \(http[^ ]*\).*/\1/p' "$TMP/scale.log")
  [ -n "$url" ] && break
  kill -0 "$scale_pid" 2>/dev/null || { echo "run_scale.sh: scale exited: $(tail -3 "$TMP/scale.log")"; exit 1; }
  sleep 0.5
done
[ -n "$url" ] || { echo "run_scale.sh: the cluster did not come up in 300 s: $(tail -3 "$TMP/scale.log")"; exit 1; }
echo "run_scale.sh: $(sed -n 's/^serving //p' "$TMP/scale.log")"

set +e
TW_URL=$url TW_HOSTS=$HOSTS TW_ARTIFACTS=$ARTIFACTS TW_CHROMIUM=$CHROMIUM \
  node --test --test-reporter=tap "$HERE/dashboard_scale.test.mjs" 2>&1 | tee "$TMP/node-test.log"
node_rc=${PIPESTATUS[0]}
set -e
exit "$node_rc"
