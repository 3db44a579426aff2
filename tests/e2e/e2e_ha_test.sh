#!/usr/bin/env bash
# End to end (ctest label e2e): the controller replicas on real VMs (issue 14).
# Starts `scripts/demo --ha` (3 controllers on a 3-member etcd cluster, each in
# a lab host of its own; 3 libvirt hosts with real QEMU guests, the demo
# policy), waits until every tier is healthy and the balancer's address
# answers, then crashes h1 and kills the leading controller in the same second.
# Then:
#   - every tier is healthy again, no VM on h1, and another replica leads;
#   - no VM runs on two hosts (virsh on h2 and h3);
#   - the balancer's address answers;
#   - the demo stops cleanly ("demo --ha: stopped", no host left running).
# ≈ 1.5 min. Usage: tests/e2e/e2e_ha_test.sh [BUILD_DIR]. Needs root and etcd;
# exit 77 (skip) without.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "e2e_ha: needs root; skipped"; exit 77; }
command -v etcd >/dev/null || { echo "e2e_ha: no etcd (Debian: etcd-server); skipped"; exit 77; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build}/bin
DIR=${E2E_DIR:-/tmp/tierwarden-e2e-ha}
PORT=${E2E_PORT:-7876}
IMAGES=${TW_IMAGES_CACHE:-/var/cache/tierwarden/images}
export TW_HOSTS_CAPS_CACHE=${TW_HOSTS_CAPS_CACHE:-/tmp/tierwarden-e2e-caps}
[ -f "$IMAGES/tiny-web.json" ] || { echo "e2e_ha: no tier images in $IMAGES (run images/build)"; exit 1; }
export TW_HOSTS_DIR=$DIR/hosts TW_CONTROLLERS_DIR=$DIR/controllers

log() { echo "[$(date +%T.%3N)] $*"; }
fail() { log "FAIL: $*"; tail -n 30 "$DIR/demo.out" || true; exit 1; }
# wait_for SECONDS WHAT CMD...: polls CMD every 0.5 s until it succeeds.
wait_for() {
  local limit=$1 what=$2 end
  shift 2
  end=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < end)) || fail "timed out after ${limit}s: $what"
    sleep 0.5
  done
}

DPID=""
finish() {
  [ -z "$DPID" ] || kill -KILL -- "-$DPID" 2>/dev/null || true
  "$ROOT/scripts/hosts" stop >/dev/null 2>&1 || true
}
trap finish EXIT

rm -rf "$DIR"
mkdir -p "$DIR"
log "starting scripts/demo --ha (TW_DEMO_DIR=$DIR, port $PORT)"
TW_DEMO_DIR=$DIR TW_DEMO_PORT=$PORT TW_DEMO_SETUP=0 TW_DEMO_BIN=$BIN TW_DEMO_HEALTHY_WAIT=180 \
  setsid "$ROOT/scripts/demo" --ha >"$DIR/demo.out" 2>&1 </dev/null &
DPID=$!
wait_for 300 "the demo ready" grep -q "Ctrl-C stops everything" "$DIR/demo.out"
grep -q "every tier healthy: yes" "$DIR/demo.out" || fail "the tiers did not become healthy"
BALANCER=$(sed -n 's/^  Balancer: *\(http:[^ ]*\).*/\1/p' "$DIR/demo.out")
[ -n "$BALANCER" ] || fail "no balancer address in the demo's output"
export TW_CONTROLLER TW_TOKEN_FILE=$DIR/state/token
TW_CONTROLLER=$(sed -n 's/.*export TW_CONTROLLER=\([^ ]*\) .*/\1/p' "$DIR/demo.out")
twctl() { "$BIN/twctl" "$@"; }
wait_for 60 "the balancer answers" curl -fsS -m 2 -o /dev/null "$BALANCER"

old=$(twctl get controllers -o json | jq -r '.leader // empty')
[ -n "$old" ] || fail "no leader"
log "crashing h1 and killing the leader $old"
t=$(date +%s.%N)
"$ROOT/scripts/hosts" crash h1 >/dev/null
"$ROOT/scripts/controllers" kill "${old#c}" >/dev/null
t_killed=$(date +%s.%N)
awk -v a="$t" -v b="$t_killed" 'BEGIN { exit !(b - a < 1) }' || fail "the crash and the kill took over a second"

recovered() {
  twctl get tiers -o json | jq -e '(.tiers | length) > 0 and all(.tiers[]; .is_healthy)' &&
    ! twctl get vms -o json | jq -e '.vms[] | select(.host == "h1")'
}
wait_for 180 "every tier healthy, nothing on h1" recovered
took=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "every tier healthy again, no VM on h1, $took s after the crash and the kill"
new=$(twctl get controllers -o json | jq -r '.leader // empty')
[ -n "$new" ] && [ "$new" != "$old" ] || fail "no other replica leads (leader: '$new')"
twctl get controllers
twctl get vms

# No VM on two hosts: what libvirt runs on the two that are left.
dups=$(for h in h2 h3; do virsh -c "$("$ROOT/scripts/hosts" uri "$h")" list --name --state-running; done |
  grep . | sort | uniq -d)
[ -z "$dups" ] || fail "running on two hosts: $dups"
wait_for 60 "the balancer answers after the crash" curl -fsS -m 2 -o /dev/null "$BALANCER"
log "the balancer answers at $BALANCER"

log "stopping the demo"
kill -TERM -- "-$DPID"
rc=0
wait "$DPID" || rc=$?
DPID=""
grep -q "demo --ha: stopped" "$DIR/demo.out" || fail "the demo did not say it stopped (exit $rc)"
left=$("$ROOT/scripts/hosts" status 2>/dev/null | awk '$2 == "running" { printf " %s", $1 }')
[ -z "$left" ] || fail "hosts left running:$left"
log "PASS"
