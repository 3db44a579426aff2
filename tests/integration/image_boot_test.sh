#!/usr/bin/env bash
# Boot test of the tiny tier images (images/build), run by hand (not registered in CMake):
#   tests/integration/image_boot_test.sh [--cache DIR] [--bench N]
# Builds the images (a no-op when up to date; cache: --cache, $TW_IMAGES_CACHE or
# /var/cache/tierwarden/images), then boots them straight with QEMU (TCG, the JSON
# metadata's kernel, initrd, cmdline and memory, slirp networking with a host port
# forward) and checks: each VM prints its ready line; web answers /health with "ok"
# and names its VM, tier and host on /; db answers on 3306, mounts the shipped data
# disk (formats a blank one) at first boot and still holds a key it was given after
# a reboot on the same disk;
# the balancer fetches its endpoints from a fake controller API (python3 http.server)
# and forwards to the web VM, answering /health itself.
# --bench N: instead, boots the web image N times one after another and prints
# start -> ready line min/median/max.
# Takes about 25 s on 2 cores under load average 6-7 (an image build, when needed, ~27 s more).
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${TW_IMAGES_CACHE:-/var/cache/tierwarden/images}"
bench=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) cache="$2"; shift 2 ;;
    --bench) bench="$2"; shift 2 ;;
    *) echo "usage: $0 [--cache DIR] [--bench N]" >&2; exit 2 ;;
  esac
done
for tool in qemu-system-x86_64 qemu-img python3 curl; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
done

work="$(mktemp -d /tmp/tw-image-test.XXXXXX)"
failures=0
vm_pids=()
api_pid=
cleanup() {
  local p
  for p in "${vm_pids[@]}" $api_pid; do kill "$p" 2>/dev/null || true; done
  for p in "${vm_pids[@]}" $api_pid; do wait "$p" 2>/dev/null || true; done
  if [[ $failures == 0 ]]; then rm -rf "$work"; else echo "logs kept in $work"; fi
}
trap cleanup EXIT

# shellcheck source=tests/integration/boot_check_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/boot_check_lib.sh"
# meta IMAGE FIELD: a field of the image's JSON metadata (lists joined by commas), as
# the build copied it into the cache dir; read once (python3 starts slowly here).
declare -A metadata=()
load_metadata() {
  local image field value
  while IFS=$'\t' read -r image field value; do
    metadata["$image.$field"]="$value"
  done < <(python3 -c 'import json, sys
for path in sys.argv[1:]:
    m = json.load(open(path))
    for k, v in m.items():
        print(m["name"], k, ",".join(map(str, v)) if isinstance(v, list) else v, sep="\t")
' "$cache"/tiny-*.json)
}
meta() { echo "${metadata[$1.$2]}"; }

# --- build
t0=$(now_ms)
images/build --cache "$cache" --quiet
echo "images/build took $(($(now_ms) - t0)) ms"
load_metadata
# images/<name>.yaml mirrors images/<name>.json field by field (key: value lines).
check "images/*.yaml and images/*.json agree" python3 -c 'import json, sys
for name in ("tiny-web", "tiny-db", "tiny-balancer"):
    j = json.load(open("images/%s.json" % name))
    y = {}
    for line in open("images/%s.yaml" % name):
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition(":")
            y[k.strip()] = v.strip()
    jj = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in j.items()}
    if y != jj:
        sys.exit("%s: yaml %s != json %s" % (name, y, jj))
'
for image in tiny-web tiny-db tiny-balancer; do
  [[ -n "$(meta "$image" kernel)" ]] || { echo "FAIL - no metadata of $image in $cache"; exit 1; }
done

declare -A started_ms=()
# boot NAME IMAGE HOST_PORT GUEST_PORT "EXTRA CMDLINE" [QEMU ARGS...]: starts a VM as the
# agent would (kernel, initrd, cmdline + memory from the metadata), console in NAME.log.
boot() {
  local name="$1" image="$2" hport="$3" gport="$4" extra="$5"
  shift 5
  started_ms[$name]=$(now_ms)
  qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m "$(meta "$image" memory_mib)" \
    -kernel "$cache/$(meta "$image" kernel)" -initrd "$cache/$(meta "$image" initrd)" \
    -append "$(meta "$image" cmdline) tw.vm=$name tw.tier=t-$name tw.host=$(hostname) $extra" \
    -display none -serial "file:$work/$name.log" -monitor none -no-reboot \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$hport-:$gport" \
    -device virtio-net-pci,netdev=n0,romfile= "$@" </dev/null >"$work/$name.qemu.log" 2>&1 &
  vm_pids+=($!)
  eval "pid_${name//-/_}=$!"
}
# wait_ready NAME IMAGE: waits (60 s) for the image's ready line, whole (it ends with
# "up=<seconds, 2 decimals>"); prints the time it took.
wait_ready() {
  local name="$1" line
  line="$(meta "$2" ready_line)"
  for _ in $(seq 1 3000); do
    if grep -aq "$line.* up=[0-9]*\.[0-9][0-9]" "$work/$1.log" 2>/dev/null; then
      echo "$name: ready after $(($(now_ms) - started_ms[$name])) ms:" \
        "$(grep -a "$line" "$work/$1.log" | tr -d '\r')"
      return 0
    fi
    grep -aq "TIERWARDEN FAILED" "$work/$1.log" 2>/dev/null && break
    sleep 0.02
  done
  echo "$name: no ready line; console:" && tail -n 5 "$work/$1.log"
  return 1
}
stop_vm() {
  local var="pid_${1//-/_}"
  kill "${!var}" 2>/dev/null || true
  wait "${!var}" 2>/dev/null || true
}
# db_ask PORT COMMANDS...: sends the lines to the tiny db, prints its answers.
db_ask() {
  local port="$1"
  shift
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s\r\n' "$@" QUIT >&3
  timeout 10 cat <&3 | tr -d '\r'
  exec 3<&-
}

# stats LABEL UNIT VALUES...: min/median/max.
stats() {
  local label="$1" unit="$2"
  shift 2
  printf '%s\n' "$@" | sort -n | awk -v label="$label" -v unit="$unit" '{a[NR]=$1} END {
    printf "%s over %d boots: min %s%s, median %s%s, max %s%s\n", label, NR, a[1], unit,
      (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2), unit, a[NR], unit }'
}
if [[ $bench -gt 0 ]]; then
  walls=()
  ups=()
  cpus=()
  port=$(free_port)
  hz=$(getconf CLK_TCK)
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
  for i in $(seq 1 "$bench"); do
    boot web-b tiny-web "$port" 80 ""
    wait_ready web-b tiny-web >/dev/null || fail "bench boot $i"
    walls+=($(($(now_ms) - started_ms[web-b])))
    # QEMU's CPU time up to the ready line (fields 14, 15 of /proc/PID/stat).
    read -ra st <"/proc/$pid_web_b/stat"
    cpus+=($(((st[13] + st[14]) * 1000 / hz)))
    ups+=("$(grep -ao 'up=[0-9.]*' "$work/web-b.log" | cut -d= -f2)")
    stop_vm web-b
    rm -f "$work/web-b.log"
  done
  stats "web: start -> ready line (wall)" " ms" "${walls[@]}"
  stats "web: guest uptime at the ready line" " s" "${ups[@]}"
  stats "web: QEMU CPU time to the ready line" " ms" "${cpus[@]}"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit $((failures > 0))
fi

# --- web and db (with a fresh overlay of the shipped data disk), booted together
web_port=$(free_port)
db_port=$(free_port)
disk="$work/db.qcow2"
qemu-img create -q -f qcow2 -b "$cache/$(meta tiny-db disk)" -F qcow2 "$disk"
boot web-1 tiny-web "$web_port" 80 ""
boot db-1 tiny-db "$db_port" 3306 "" -drive "file=$disk,if=virtio,format=qcow2"
check "web prints its ready line" wait_ready web-1 tiny-web
check "web: /health answers ok" \
  test "$(curl -s -m 10 "http://127.0.0.1:$web_port/health")" = ok
page="$(curl -s -m 10 "http://127.0.0.1:$web_port/")"
check "web: / names its VM, tier and host" \
  grep -q "VM <b>web-1</b> of tier <b>t-web-1</b> on host <b>$(hostname)</b>" <<<"$page"
check "web: unknown path is a 404" \
  test "$(curl -s -o /dev/null -w '%{http_code}' -m 10 "http://127.0.0.1:$web_port/nope")" = 404

check "db prints its ready line" wait_ready db-1 tiny-db
check "db: mounted the shipped (formatted) disk at first boot" \
  grep -aq "storage=disk boots=1" "$work/db-1.log"
answers="$(db_ask "$db_port" "PUT greeting hello tiers" "GET greeting")"
check "db: greets, stores and returns a key" \
  test "$answers" = $'TIERWARDEN-DB vm=db-1 storage=disk\nOK\nOK hello tiers\nBYE'
answers="$(db_ask "$db_port" "INCR visits" "INCR visits" "PUT word x" "INCR word")"
check "db: INCR counts from 0, a non-number counts as 0" \
  test "$answers" = $'TIERWARDEN-DB vm=db-1 storage=disk\nOK 1\nOK 2\nOK\nOK 1\nBYE'

# --- balancer: endpoints from a fake controller API, forwarding to web-1
api_port=$(free_port)
lb_port=$(free_port)
mkdir -p "$work/api/api/v1/tiers/t-web/"
printf '{"endpoints":[{"host":"127.0.0.1","port":%d}]}\n' "$web_port" \
  >"$work/api/api/v1/tiers/t-web/endpoints"
python3 -m http.server "$api_port" --bind 127.0.0.1 --directory "$work/api" \
  >"$work/api.log" 2>&1 &
api_pid=$!
boot lb-1 tiny-balancer "$lb_port" 80 "tw.api=127.0.0.1:$api_port tw.backend=t-web"
# (and meanwhile db-2 on a blank disk: the guest formats it)
db2_port=$(free_port)
qemu-img create -q -f qcow2 "$work/blank.qcow2" 64M
boot db-2 tiny-db "$db2_port" 3306 "" -drive "file=$work/blank.qcow2,if=virtio,format=qcow2"
check "balancer prints its ready line with one backend" wait_ready lb-1 tiny-balancer
check "balancer: ready line counts the API's endpoints" grep -aq "backends=1" "$work/lb-1.log"
check "balancer: /health answered by the balancer" \
  test "$(curl -s -m 10 "http://127.0.0.1:$lb_port/health")" = "ok backends=1"
check "balancer: / forwarded to web-1" \
  grep -q "VM <b>web-1</b>" <<<"$(curl -s -m 10 "http://127.0.0.1:$lb_port/")"
check "db-2 prints its ready line" wait_ready db-2 tiny-db
check "db-2: formatted the blank disk at first boot" \
  grep -aq "storage=disk-new boots=1" "$work/db-2.log"
stop_vm db-2

# --- db again on the same disk: the key survived the reboot
stop_vm db-1
: >"$work/db-1.log"
boot db-1 tiny-db "$db_port" 3306 "" -drive "file=$disk,if=virtio,format=qcow2"
check "db prints its ready line after a reboot" wait_ready db-1 tiny-db
check "db: mounted its disk again" grep -aq "storage=disk boots=2" "$work/db-1.log"
check "db: the key survived the reboot" \
  grep -qx "OK hello tiers" <<<"$(db_ask "$db_port" "GET greeting")"
check "db: the counter goes on after the reboot" \
  grep -qx "OK 3" <<<"$(db_ask "$db_port" "INCR visits")"

# --- a stopped web VM: the balancer answers 503, not a hang
stop_vm web-1
code="$(curl -s -o /dev/null -w '%{http_code}' -m 10 "http://127.0.0.1:$lb_port/")"
check "balancer: 503 when its only backend refuses" test "$code" = 503

if [[ $failures -gt 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
