#!/usr/bin/env bash
# Smoke test of scripts/hosts, run by hand as root (not registered in CMake):
#   tests/integration/hosts_script_test.sh
# Starts 3 hosts in a private state dir and checks: each URI answers; the test
# driver of each host is independent; exec returns the command's status; a
# process spawned or exec'd inside dies when its host crashes; a killed QEMU is
# reported shut off (crashed) at once; a restarted host keeps its definitions and
# runs no VM; stop leaves no process of ours behind; clean removes the state dir;
# with --net, partition cuts a host's TCP connections and heal restores them.
# Takes about 10 s with a warm QEMU capabilities cache (set TW_HOSTS_CAPS_CACHE
# to a kept folder to reuse it across runs), about 15 s without.
set -euo pipefail
cd "$(dirname "$0")/../.."

HOSTS="$PWD/scripts/hosts"
DIR="$(mktemp -d /tmp/tw-hosts-test.XXXXXX)"
export TW_HOSTS_DIR="$DIR"
failures=0
holders=()

cleanup() {
  local p
  for p in "${holders[@]}"; do kill "$p" 2>/dev/null || true; done
  "$HOSTS" clean >/dev/null 2>&1 || true
  [[ -z "${NET_DIR:-}" ]] || "$HOSTS" --dir "$NET_DIR" clean >/dev/null 2>&1 || true
}
trap cleanup EXIT

pass() { echo "ok   - $*"; }
fail() {
  echo "FAIL - $*"
  failures=$((failures + 1))
}
check() {
  local what="$1"
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
answers() { virsh -q -c "$1" uri >/dev/null; }
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
alive() { [[ -e "/proc/$1" ]] && [[ "$(awk '/^State:/ {print $2}' "/proc/$1/status")" != Z ]]; }

# Every process in the PID namespace of the host's init (outside PIDs).
ns_members() {
  local init ns p
  init="$(<"$DIR/$1/pid")"
  ns="$(readlink "/proc/$init/ns/pid")"
  for p in /proc/[0-9]*; do
    [[ "$(readlink "$p/ns/pid" 2>/dev/null)" == "$ns" ]] && echo "${p#/proc/}"
  done
  return 0
}

# --- start
t0="$(now_ms)"
out="$("$HOSTS" start 3)"
echo "start 3 took $(($(now_ms) - t0)) ms"
check "start prints one line per host" test "$(wc -l <<<"$out")" -eq 3
check "start prints name and URI" grep -qx "h2 qemu+unix:///system?socket=$DIR/h2/run/libvirt/libvirt-sock" <<<"$out"
t0="$(now_ms)"
again="$("$HOSTS" start 3)"
echo "start 3 again (all running) took $(($(now_ms) - t0)) ms"
check "start is idempotent" test "$again" == "$out"

for h in h1 h2 h3; do
  uri="$("$HOSTS" uri "$h")"
  check "$h uri file matches" test "$(<"$DIR/$h/uri")" == "$uri"
  check "$h answers on its URI" answers "$uri"
  check "$h pid file names its namespace init" alive "$(<"$DIR/$h/pid")"
done
check "libvirtd reports each host's own host UUID" test "$(for h in h1 h2 h3; do
  virsh -q -c "$("$HOSTS" uri "$h")" capabilities | grep -m 1 -o '<uuid>.*</uuid>'
done | sort -u | wc -l)" -eq 3
check "h1's host UUID is the one in its config" \
  grep -q "<uuid>$(<"$DIR/h1/host-uuid")</uuid>" <(virsh -q -c "$("$HOSTS" uri h1)" capabilities)

# --- test driver: one independent test:///default per host (state lives while
# a connection is open, so hold one open on each).
for h in h1 h2; do
  virsh -c "$("$HOSTS" test-uri "$h")" event --all --loop >/dev/null 2>&1 &
  holders+=($!)
done
sleep 0.3
cat >"$DIR/test-domain.xml" <<'EOF'
<domain type='test'><name>only-on-h1</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os></domain>
EOF
virsh -q -c "$("$HOSTS" test-uri h1)" define "$DIR/test-domain.xml" >/dev/null
check "h1 test driver sees its domain" \
  grep -qx only-on-h1 <(virsh -q -c "$("$HOSTS" test-uri h1)" list --all --name)
check "h2 test driver does not see h1's domain" \
  bash -c "! virsh -q -c '$("$HOSTS" test-uri h2)' list --all --name | grep -qx only-on-h1"

# --- exec and spawn
set +e
"$HOSTS" exec h1 -- sh -c 'exit 7'
rc=$?
set -e
check "exec returns the command's exit status" test "$rc" -eq 7
# shellcheck disable=SC2016 # expanded inside the host
inner="$("$HOSTS" exec h1 -- sh -c 'echo $$ $TW_HOST; stat -L -c %i /run/libvirt/libvirt-sock')"
check "exec runs in the host's PID namespace" grep -q "^[0-9]\{1,3\} h1$" <(head -n 1 <<<"$inner")
check "exec sees the host's own /run" \
  test "$(tail -n 1 <<<"$inner")" == "$(stat -L -c %i "$DIR/h1/run/libvirt/libvirt-sock")"
sleeper="$("$HOSTS" spawn h2 "$DIR/sleep.log" -- sleep 1000)"
check "spawn prints the PID of the command" grep -q sleep "/proc/$sleeper/cmdline"
check "spawned command runs in h2's namespace" grep -qx "$sleeper" <(ns_members h2)
(
  rc=0
  "$HOSTS" exec h2 -- sleep 1000 || rc=$?
  echo "$rc" >"$DIR/exec.rc"
) 2>/dev/null &
exec_job=$!

# --- a QEMU guest on h3: kill -9 of QEMU is reported at once
uri3="$("$HOSTS" uri h3)"
cat >"$DIR/qemu-domain.xml" <<'EOF'
<domain type='qemu'><name>t</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os></domain>
EOF
virsh -q -c "$uri3" define "$DIR/qemu-domain.xml" >/dev/null
virsh -q -c "$uri3" start t >/dev/null
qemu="$(pgrep -f 'guest=t,' -n)"
check "QEMU runs inside h3" grep -qx "$qemu" <(ns_members h3)
t0="$(now_ms)"
kill -9 "$qemu"
state=""
until [[ "$state" == "shut off (crashed)" ]] || (($(now_ms) - t0 > 3000)); do
  state="$(virsh -q -c "$uri3" domstate t --reason)"
done
echo "killed QEMU reported '$state' after $(($(now_ms) - t0)) ms (including virsh calls)"
check "killed QEMU is shut off (crashed) within 1 s" test "$state" == "shut off (crashed)" -a \
  $(($(now_ms) - t0)) -lt 1000

# --- crash h2: everything inside dies
members="$(ns_members h2)"
t0="$(now_ms)"
"$HOSTS" crash h2
echo "crash h2 took $(($(now_ms) - t0)) ms"
check "spawned sleep died with h2" bash -c "! [[ -e /proc/$sleeper ]]"
wait "$exec_job"
check "exec'd sleep died with h2 (status 137)" test "$(<"$DIR/exec.rc")" -eq 137
left=0
for p in $members; do alive "$p" && left=$((left + 1)); done
check "no process of h2 is left" test "$left" -eq 0
check "status shows h2 dead, others running" test "$("$HOSTS" status | awk '{print $1, $2}' | tr '\n' ' ')" \
  == "h1 running h2 dead h3 running "
set +e
"$HOSTS" exec h2 -- true 2>/dev/null
rc=$?
set -e
check "exec into a dead host fails" test "$rc" -ne 0

# --- restart h2 (and h3 with a definition): definitions survive, no VM runs
virsh -q -c "$uri3" start t >/dev/null
"$HOSTS" crash h3
t0="$(now_ms)"
"$HOSTS" restart h2 >/dev/null
echo "restart h2 took $(($(now_ms) - t0)) ms"
"$HOSTS" restart h3 >/dev/null
check "restarted h2 answers" answers "$("$HOSTS" uri h2)"
check "restarted h3 keeps its persistent definition" \
  grep -qx t <(virsh -q -c "$uri3" list --all --name)
check "restarted h3 runs no VM" test -z "$(virsh -q -c "$uri3" list --name)"
check "restarted h3 has no QEMU left" bash -c "! pgrep -f 'guest=[t],' >/dev/null"

# --- stop: nothing of ours remains
all_members="$(for h in h1 h2 h3; do ns_members "$h"; done)"
inits="$(cat "$DIR"/h*/pid)"
t0="$(now_ms)"
"$HOSTS" stop
echo "stop took $(($(now_ms) - t0)) ms"
left=0
for p in $all_members $inits; do alive "$p" && left=$((left + 1)); done
check "stop leaves no process of the hosts" test "$left" -eq 0
check "status shows all dead" test "$("$HOSTS" status | awk '{print $2}' | sort -u)" == dead
check "stop keeps the state dir" test -f "$DIR/h1/libvirtd.log"
"$HOSTS" clean
check "clean removes the state dir" test ! -e "$DIR"

# --- network mode: partition and heal
NET_DIR="$(mktemp -d /tmp/tw-hosts-net-test.XXXXXX)"
net() { "$HOSTS" --dir "$NET_DIR" "$@"; }
net start 2 --net >/dev/null
u1="$(net net-uri h1)"
br="twbr$(<"$NET_DIR/net")"
check "net-uri answers from outside" answers "$u1"
check "net-uri of h1 answers from inside h2" net exec h2 -- sh -c "virsh -q -c '$u1' uri >/dev/null"
(
  virsh -q -k 1 -K 2 -c "$u1" event --all --loop >/dev/null 2>&1 || true
  now_ms >"$DIR.ka"
) &
holder=$!
sleep 0.5
t0="$(now_ms)"
net partition h1
wait "$holder" || true
echo "keepalive'd connection died $(($(<"$DIR.ka") - t0)) ms after the partition"
check "h2 cannot reach partitioned h1" \
  bash -c "! $HOSTS --dir $NET_DIR exec h2 -- timeout 2 virsh -q -c '$u1' uri >/dev/null 2>&1"
check "keepalive'd connection died within 4 s" test $(($(<"$DIR.ka") - t0)) -lt 4000
check "partitioned h1 still answers on its unix socket" answers "$(net uri h1)"
rm -f "$DIR.ka"
net heal h1
check "healed h1 answers from h2 again" net exec h2 -- sh -c "virsh -q -c '$u1' uri >/dev/null"
net clean
check "clean removes the bridge" bash -c "! ip link show $br >/dev/null 2>&1"
check "clean removes the hosts' veth links" bash -c "! ip link show ${br/twbr/tw}h1 >/dev/null 2>&1"

echo "took ${SECONDS} s"
if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
