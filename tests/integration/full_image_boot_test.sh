#!/usr/bin/env bash
# Boot test of the full tier images (images/build --full), run by hand (not registered in
# CMake, never part of the normal test run):
#   tests/integration/full_image_boot_test.sh [--cache DIR] [--no-build] [--bench N]
# Builds the images (a no-op when up to date; a cold build takes minutes and downloads
# ~110 MB from the Debian mirror; cache: --cache, $TW_IMAGES_CACHE or
# /var/cache/tierwarden/images), then boots them straight with QEMU as the agent would (TCG,
# the JSON metadata's kernel, initrd, cmdline and memory, a copy-on-write overlay of the
# image's disk as vda, slirp networking with a host port forward) and checks:
#   - db (MariaDB) prints its ready line and greets a client on its forwarded port; with a
#     mariadb/mysql client on this machine, the web tier's account reads the row;
#   - web-1 (Apache + PHP) finds the db through a stand-in for the controller's endpoints
#     API (python3 http.server), web-2 through the static tw.backends= fallback; both answer
#     /health and show the db's row on /, naming their VM, tier and host;
#   - the balancer (haproxy) takes the web endpoints from the API, answers /health itself,
#     forwards / round-robin to both webs, and follows the API when an endpoint goes
#     unhealthy (haproxy reloaded);
#   - with the db stopped, the web page says so with a 503.
# Prints start -> ready line per image (wall time, the guest's own uptime, QEMU's CPU time),
# memory (QEMU resident size on the host, used inside the guest) and the build time.
# --bench N: instead, boots each image N times one after another (alone) and prints
# start -> ready line min/median/max.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="${TW_IMAGES_CACHE:-/var/cache/tierwarden/images}"
bench=0
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) cache="$2"; shift 2 ;;
    --bench) bench="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: $0 [--cache DIR] [--no-build] [--bench N]" >&2; exit 2 ;;
  esac
done
for tool in qemu-system-x86_64 qemu-img python3 curl; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
done

work="$(mktemp -d /tmp/tw-full-image-test.XXXXXX)"
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

# --- build
if [[ $build == 1 ]]; then
  t0=$(now_ms)
  images/build --full --cache "$cache" --quiet
  build_ms=$(($(now_ms) - t0))
  echo "images/build --full took $build_ms ms"
fi

# meta IMAGE FIELD: a field of the image's JSON metadata as the build published it in the
# cache dir (lists joined by commas); read once (python3 starts slowly here).
declare -A metadata=()
while IFS=$'\t' read -r image field value; do
  metadata["$image.$field"]="$value"
done < <(python3 -c 'import json, sys
for path in sys.argv[1:]:
    m = json.load(open(path))
    for k, v in m.items():
        print(m["name"], k, ",".join(map(str, v)) if isinstance(v, list) else v, sep="\t")
' "$cache"/full-*.json)
meta() { echo "${metadata[$1.$2]:-}"; }
for image in full-db full-web full-balancer; do
  [[ -n "$(meta "$image" kernel)" ]] || { echo "FAIL - no metadata of $image in $cache"; exit 1; }
done

# boot NAME IMAGE HOST_PORT GUEST_PORT "EXTRA CMDLINE": starts a VM as the agent would
# (kernel, initrd, cmdline + memory from the metadata, an overlay of the image's disk),
# console in NAME.log.
declare -A started_ms=() vm_pid=()
boot() {
  local name="$1" image="$2" hport="$3" gport="$4" extra="$5"
  qemu-img create -q -f qcow2 -b "$cache/$(meta "$image" disk)" -F qcow2 "$work/$name.qcow2"
  : >"$work/$name.log"
  started_ms[$name]=$(now_ms)
  qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m "$(meta "$image" memory_mib)" \
    -kernel "$cache/$(meta "$image" kernel)" -initrd "$cache/$(meta "$image" initrd)" \
    -append "$(meta "$image" cmdline) tw.vm=$name tw.tier=t-$name tw.host=$(hostname) $extra" \
    -display none -serial "file:$work/$name.log" -monitor none -no-reboot \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$hport-:$gport" \
    -device virtio-net-pci,netdev=n0,romfile= \
    -drive "file=$work/$name.qcow2,if=virtio,format=qcow2" </dev/null >"$work/$name.qemu.log" 2>&1 &
  vm_pids+=($!)
  vm_pid[$name]=$!
}
# QEMU's CPU time (ms) and resident size (MB) of a VM.
cpu_ms() {
  local st
  read -ra st <"/proc/${vm_pid[$1]}/stat"
  echo $(((st[13] + st[14]) * 1000 / $(getconf CLK_TCK)))
}
rss_mb() { awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/${vm_pid[$1]}/status"; }
# wait_ready NAME IMAGE: waits (180 s) for the image's ready line, whole (it ends with
# "up=<seconds>"); records and prints the time it took.
declare -A ready_ms=() ready_up=() ready_cpu=()
wait_ready() {
  local name="$1" line
  line="$(meta "$2" ready_line)"
  for _ in $(seq 1 9000); do
    if grep -aq "$line.* up=[0-9]*\.[0-9][0-9]" "$work/$name.log" 2>/dev/null; then
      ready_ms[$name]=$(($(now_ms) - started_ms[$name]))
      ready_cpu[$name]=$(cpu_ms "$name")
      ready_up[$name]=$(grep -a "$line" "$work/$name.log" | grep -o 'up=[0-9.]*' | head -n1 | cut -d= -f2)
      echo "$name: ready after ${ready_ms[$name]} ms:" \
        "$(grep -a "$line" "$work/$name.log" | head -n1 | tr -d '\r')"
      return 0
    fi
    grep -aq "$(meta "$2" failed_line)" "$work/$name.log" 2>/dev/null && break
    sleep 0.02
  done
  echo "$name: no ready line; console:" && tail -n 15 "$work/$name.log"
  return 1
}
stop_vm() {
  kill "${vm_pid[$1]}" 2>/dev/null || true
  wait "${vm_pid[$1]}" 2>/dev/null || true
}
# The guest's memory in use (KiB, from the tw.debug=1 lines), last report.
guest_used_mb() {
  grep -a 'memory KiB:' "$work/$1.log" | tail -n1 | awk '{ print int($7 / 1024) }'
}
http() { curl -s -m 15 "$@"; }
code() { curl -s -o /dev/null -w '%{http_code}' -m 15 "$@"; }

stats() {  # LABEL UNIT VALUES...: min/median/max
  local label="$1" unit="$2"
  shift 2
  printf '%s\n' "$@" | sort -n | awk -v label="$label" -v unit="$unit" '{a[NR]=$1} END {
    printf "%s over %d boots: min %s%s, median %s%s, max %s%s\n", label, NR, a[1], unit,
      (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2), unit, a[NR], unit }'
}
if [[ $bench -gt 0 ]]; then
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
  port=$(free_port)
  for image in full-db full-web full-balancer; do
    walls=() ups=() cpus=()
    for i in $(seq 1 "$bench"); do
      boot b "$image" "$port" "$(meta "$image" ports | cut -d, -f1)" ""
      wait_ready b "$image" >/dev/null || fail "$image: bench boot $i"
      walls+=("${ready_ms[b]}")
      ups+=("${ready_up[b]}")
      cpus+=("${ready_cpu[b]}")
      stop_vm b
      rm -f "$work/b.qcow2"
    done
    stats "$image: start -> ready line (wall)" " ms" "${walls[@]}"
    stats "$image: guest uptime at the ready line" " s" "${ups[@]}"
    stats "$image: QEMU CPU time to the ready line" " ms" "${cpus[@]}"
  done
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit $((failures > 0))
fi

# images/full-<name>.yaml mirrors images/full-<name>.json field by field.
check "images/full-*.yaml and images/full-*.json agree" python3 -c 'import json, sys
for name in ("full-web", "full-db", "full-balancer"):
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

# --- the stand-in for the controller's endpoints API
api_port=$(free_port)
db_port=$(free_port)
web1_port=$(free_port)
web2_port=$(free_port)
lb_port=$(free_port)
mkdir -p "$work/api/api/v1/tiers/t-db" "$work/api/api/v1/tiers/t-web"
printf '{"endpoints":[{"vm":"db-1","host":"127.0.0.1","port":%d,"healthy":true}]}\n' \
  "$db_port" >"$work/api/api/v1/tiers/t-db/endpoints"
printf '{"endpoints":[{"vm":"web-1","host":"127.0.0.1","port":%d,"healthy":true},{"vm":"web-2","host":"127.0.0.1","port":%d,"healthy":true}]}\n' \
  "$web1_port" "$web2_port" >"$work/api/api/v1/tiers/t-web/endpoints"
python3 -m http.server "$api_port" --bind 127.0.0.1 --directory "$work/api" \
  >"$work/api.log" 2>&1 &
api_pid=$!

# --- db
boot db-1 full-db "$db_port" 3306 "tw.debug=1"
check "db prints its ready line" wait_ready db-1 full-db
# The server's greeting (protocol 10, then its version) on the forwarded port.
greeting() {
  exec 3<>"/dev/tcp/127.0.0.1/$db_port"
  timeout 10 head -c 80 <&3 | tr -c '[:print:]' ' '
  exec 3<&-
}
greet="$(greeting || true)"
check "db: greets a client on its forwarded port (${greet:5:24})" grep -q MariaDB <<<"$greet"
client=$(command -v mariadb || command -v mysql || true)
if [[ -n "$client" ]]; then
  check "db: the web tier's account reads the row ($client)" test \
    "$("$client" -h 127.0.0.1 -P "$db_port" -u tw -ptw-web -N -B \
      -e 'SELECT message FROM tw.items WHERE id = 1' tw 2>&1)" = "hello from the tierwarden db tier"
else
  echo "note - no mariadb/mysql client here: the query is checked through the web page"
fi

# --- two webs: one finds the db through the API, the other through tw.backends=
boot web-1 full-web "$web1_port" 80 "tw.debug=1 tw.api=127.0.0.1:$api_port tw.backend=t-db"
boot web-2 full-web "$web2_port" 80 "tw.debug=1 tw.backends=127.0.0.1:$db_port"
check "web-1 prints its ready line (db from the API)" wait_ready web-1 full-web
check "web-2 prints its ready line (db from tw.backends)" wait_ready web-2 full-web
for w in web-1 web-2; do
  port=$web1_port
  [[ $w == web-2 ]] && port=$web2_port
  check "$w: /health answers 200 ok" test "$(code "http://127.0.0.1:$port/health") $(http "http://127.0.0.1:$port/health")" = "200 ok"
  page="$(http "http://127.0.0.1:$port/")"
  check "$w: / names its VM, tier and host" \
    grep -q "VM <b>$w</b> of tier <b>t-$w</b> on host <b>$(hostname)</b>" <<<"$page"
  check "$w: / shows the db's row, from db-1" \
    grep -q "Row <b>1: hello from the tierwarden db tier</b> from database server <b>db-1</b>" <<<"$page"
done

# --- balancer over both webs
boot lb-1 full-balancer "$lb_port" 80 "tw.debug=1 tw.api=127.0.0.1:$api_port tw.backend=t-web"
check "balancer prints its ready line with two backends" wait_ready lb-1 full-balancer
check "balancer: ready line counts the API's endpoints" grep -aq "backends=2" "$work/lb-1.log"
check "balancer: /health answered by haproxy" \
  test "$(http "http://127.0.0.1:$lb_port/health")" = "ok backends=2"
seen=""
for _ in 1 2 3 4; do
  seen+="$(http "http://127.0.0.1:$lb_port/" | grep -o 'VM <b>web-[12]</b>' | grep -o 'web-[12]') "
done
check "balancer: / forwarded round-robin to both webs ($seen)" \
  test "$(grep -o web-1 <<<"$seen" | wc -l) $(grep -o web-2 <<<"$seen" | wc -l)" = "2 2"

# The API marks web-1 unhealthy: within a poll (2 s) and a reload, only web-2 gets requests.
printf '{"endpoints":[{"vm":"web-1","host":"127.0.0.1","port":%d,"healthy":false},{"vm":"web-2","host":"127.0.0.1","port":%d,"healthy":true}]}\n' \
  "$web1_port" "$web2_port" >"$work/api/api/v1/tiers/t-web/endpoints"
t0=$(now_ms)
for _ in $(seq 1 150); do
  [[ "$(http "http://127.0.0.1:$lb_port/health")" == "ok backends=1" ]] && break
  sleep 0.1
done
reload_ms=$(($(now_ms) - t0))
seen=""
for _ in 1 2 3 4; do
  seen+="$(http "http://127.0.0.1:$lb_port/" | grep -o 'VM <b>web-[12]</b>' | grep -o 'web-[12]') "
done
check "balancer: follows the API, web-1 unhealthy -> only web-2 ($seen; ${reload_ms} ms)" \
  test "$seen" = "web-2 web-2 web-2 web-2 "

# --- db stopped: the page says so (503), the balancer passes that on
mem_db=$(rss_mb db-1)
used_db=$(guest_used_mb db-1)
stop_vm db-1
check "web-2: 503 with the db stopped" test "$(code "http://127.0.0.1:$web2_port/")" = 503
check "web-2: / says no database answered" \
  grep -q "No database answered" <<<"$(http "http://127.0.0.1:$web2_port/")"

# --- summary
echo "--- timings (load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs)"
[[ -n "${build_ms:-}" ]] && echo "images/build --full: $build_ms ms"
for name in db-1 web-1 web-2 lb-1; do
  [[ -n "${ready_ms[$name]:-}" ]] || continue
  image=full-web
  case "$name" in db-1) image=full-db ;; lb-1) image=full-balancer ;; esac
  if [[ $name == db-1 ]]; then rss=$mem_db used=$used_db; else rss=$(rss_mb "$name"); used=$(guest_used_mb "$name"); fi
  echo "$name ($image, $(meta "$image" memory_mib) MiB): start -> ready ${ready_ms[$name]} ms" \
    "(guest up=${ready_up[$name]} s, QEMU CPU ${ready_cpu[$name]} ms); QEMU RSS ${rss} MB," \
    "guest used ${used:-?} MB"
done

if [[ $failures -gt 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
