# shellcheck shell=bash
# A real cluster for the e2e tests and bench/recovery: N scripts/hosts hosts
# (one libvirtd per PID + mount namespace, real QEMU guests under TCG), a
# controller on the machine, one agent inside each host, the tiny tier images.
# Source it, set E2E_DIR (state), then: e2e_start_cluster N; e2e_apply FILE; ...
# Needs root. Every function fails the caller with a message (e2e_fail).

E2E_ROOT=${E2E_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
E2E_BIN=${E2E_BIN:-$E2E_ROOT/build/bin}
E2E_IMAGES=${TW_IMAGES_CACHE:-/var/cache/tierwarden/images}
E2E_PORT=${E2E_PORT:-7870}
E2E_CTL_PID=""
# E2E_NET=1: each host also gets a network namespace (scripts/hosts start --net),
# so that `hosts partition H` cuts H off from the controller and from the other
# hosts: the controller's agents' listener is then on the bridge's address, each
# agent's service port forwards on its host's address, and the policy's libvirt
# URIs go over TCP (net-uri), which a partition cuts too. Set before
# e2e_start_cluster.
E2E_NET=${E2E_NET:-0}
E2E_AGENT_LISTEN=""  # the controller's --agent-listen when not its default (port + 1)
# With E2E_NET=1 the balancer tier gets a floating address on the hosts' bridge
# (docs/policy.md, "Floating address"): 10.213.<net>.100/24, set by
# e2e_start_cluster; E2E_ADDRESS=0: none.
E2E_BALANCER_ADDR=""
E2E_HOGS=()

e2e_log() { echo "[$(date +%T.%3N)] $*"; }
e2e_fail() {
  echo "[$(date +%T.%3N)] FAIL: $*" >&2
  e2e_dump
  exit 1
}
e2e_now() { date +%s.%N; }
# Seconds between two e2e_now stamps, 2 decimals.
e2e_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

twctl() { "$E2E_BIN/twctl" "$@"; }
api() { curl -fsS -m 5 "$TW_CONTROLLER/api/v1/$1"; }
hosts() { TW_HOSTS_DIR="$E2E_DIR/hosts" "$E2E_ROOT/scripts/hosts" "$@"; }

e2e_dump() {
  [ -n "${TW_CONTROLLER:-}" ] || return 0
  echo "--- vms" >&2
  twctl get vms >&2 2>&1 || true
  echo "--- hosts" >&2
  twctl get hosts >&2 2>&1 || true
  echo "--- last events" >&2
  twctl get events -o json 2>/dev/null | jq -r '.events[-25:][] | "\(.t_ms) \(.level) \(.kind) \(.subject) \(.message)"' >&2 || true
}

# E2E_FENCE_AGENTS: a fence agents file for the controller (--fence-agents), if set.
# --public-read: the checks below read state with plain curl (changes go
# through twctl with the operator's token). --insecure-http: plain HTTP, as
# the images' guests and these checks expect (TLS has its own tests:
# tests/integration/tls_test.cc).
e2e_start_controller() {
  mkdir -p "$E2E_DIR/state" "$E2E_DIR/logs"
  # In a session of its own, as a service runs in a cgroup of its own: with
  # the kernel's autogroup scheduling (sched_autogroup_enabled, on in this
  # lab and in CI) each session gets one share of the CPU, and a controller
  # in the test's session shared it with the CPU hogs the test starts (part
  # a): heartbeats that reached its socket on time were answered 0.53-0.56 s
  # later (tcpdump on the bridge, stop 28), and the hosts went suspect.
  # setsid execs (no fork: a background job of this shell leads no group),
  # so $! is the controller.
  setsid "$E2E_BIN/tierwarden-controller" --state-dir "$E2E_DIR/state" --listen "127.0.0.1:$E2E_PORT" \
    --web-dir "$E2E_ROOT/web" --public-read --insecure-http ${E2E_FENCE_AGENTS:+--fence-agents "$E2E_FENCE_AGENTS"} \
    ${E2E_AGENT_LISTEN:+--agent-listen "$E2E_AGENT_LISTEN"} >>"$E2E_DIR/logs/controller.log" 2>&1 &
  E2E_CTL_PID=$!
  export TW_CONTROLLER=http://127.0.0.1:$E2E_PORT TW_TOKEN_FILE=$E2E_DIR/state/token
  # --agent-listen default: port + 1
  export TW_AGENT_URL=http://${E2E_AGENT_LISTEN:-127.0.0.1:$((E2E_PORT + 1))}
  local i
  for i in $(seq 200); do
    [ -s "$TW_TOKEN_FILE" ] && curl -fsS -m 1 "$TW_CONTROLLER/api/v1/cluster" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  e2e_fail "controller did not start; see $E2E_DIR/logs/controller.log"
}

e2e_stop_controller() {
  [ -n "$E2E_CTL_PID" ] || return 0
  kill "$E2E_CTL_PID" 2>/dev/null || true
  wait "$E2E_CTL_PID" 2>/dev/null || true
  E2E_CTL_PID=""
}

# Index i of host hN: agent ports (20000 + 1000 i).
e2e_start_agent() {
  local h=$1 i=${1#h} svc=()
  if [ "$E2E_NET" = 1 ]; then
    # Its VMs' port forwards, and the checks of its peers (an agent that has them),
    # on its host's address: 127.0.0.1 there is the host's own loopback.
    svc=(--service-address "$(hosts net-addr "$h")")
    if "$E2E_BIN/tierwarden-agent" --help 2>/dev/null | grep -q -- --peer-listen; then
      svc+=(--peer-listen "$(hosts net-addr "$h"):0")
    fi
  elif "$E2E_BIN/tierwarden-agent" --help 2>/dev/null | grep -q -- --no-floating-addresses; then
    # The hosts share this machine's network: no host may take an address.
    svc=(--no-floating-addresses)
  fi
  # Its own agent token (a running controller rereads host-tokens); kept
  # across agent restarts.
  [ -s "$E2E_DIR/state/hosts/$h/token" ] ||
    "$E2E_BIN/tierwarden-controller" issue-host "$h" --state-dir "$E2E_DIR/state" >/dev/null ||
    e2e_fail "issue-host $h"
  # The lab host's watchdog (docs/fencing.md, "Host watchdog"): its watcher
  # crashes the lab host when the agent stops petting it for
  # E2E_WATCHDOG_TIMEOUT s (E2E_WATCHDOG=0: none). The agent keeps its state
  # beside its token, across restarts.
  if [ "${E2E_WATCHDOG:-1}" = 1 ] && "$E2E_BIN/tierwarden-agent" --help 2>/dev/null | grep -q -- --watchdog; then
    svc+=(--watchdog "lab:$(hosts watchdog "$h")" --watchdog-timeout "${E2E_WATCHDOG_TIMEOUT:-2}"
      --state-dir "$E2E_DIR/state/hosts/$h")
  fi
  # At nice -5, as the installed unit runs it (packaging/systemd, Nice=-5):
  # its heartbeats must not queue behind booting TCG guests (CI stop 19: one
  # heartbeat of h2 came 0.8 s late while three guests booted there).
  hosts spawn "$h" "$E2E_DIR/logs/agent-$h.log" -- nice -n -5 "$E2E_BIN/tierwarden-agent" --host "$h" \
    --libvirt-uri qemu:///system --controller "$TW_AGENT_URL" --token-file "$E2E_DIR/state/hosts/$h/token" \
    --images "$E2E_IMAGES" --port-base $((20000 + 1000 * i)) "${svc[@]}" >/dev/null
}

# kill -9 of host $1's agent (the host and its VMs stay).
e2e_kill_agent() {
  local pids
  # The agent itself, not the `setsid nsenter ... -- tierwarden-agent` that spawned it.
  pids=$(pgrep -f -- "^$E2E_BIN/tierwarden-agent --host $1( |\$)")
  [ -n "$pids" ] || return 1
  # shellcheck disable=SC2086
  kill -9 $pids
}

# e2e_start_cluster N: hosts h1..hN with agents, controller; writes the demo
# policy (its cluster settings and tiers) with the hosts' URIs (h1..h(N-1)
# active, hN spare) to $E2E_DIR/policy.yaml.
e2e_start_cluster() {
  local n=$1 h
  [ "$(id -u)" = 0 ] || { echo "e2e: needs root"; exit 77; }
  [ -f "$E2E_IMAGES/tiny-web.json" ] || e2e_fail "no tier images in $E2E_IMAGES (run images/build)"
  mkdir -p "$E2E_DIR"
  hosts stop >/dev/null 2>&1 || true
  if [ "$E2E_NET" = 1 ]; then
    hosts start "$n" --net >/dev/null || e2e_fail "scripts/hosts start $n --net"
    E2E_AGENT_LISTEN=$(hosts net-gw):$((E2E_PORT + 1))
  else
    hosts start "$n" >/dev/null || e2e_fail "scripts/hosts start $n"
  fi
  e2e_start_controller
  for h in $(seq 1 "$n"); do e2e_start_agent "h$h"; done
  {
    sed -n '/^cluster:/,/^hosts:/p' "$E2E_ROOT/policies/demo.yaml" | sed '$d'  # the demo's settings
    echo "hosts:"
    for h in $(seq 1 "$n"); do
      echo "  - { name: h$h, uri: \"$(if [ "$E2E_NET" = 1 ]; then hosts net-uri "h$h"; else hosts uri "h$h"; fi)\", role: $([ "$h" = "$n" ] && echo spare || echo active), capacity: { cpus: 4 } }"
    done
    if [ "$E2E_NET" = 1 ] && [ "${E2E_ADDRESS:-1}" = 1 ]; then
      E2E_BALANCER_ADDR=$(hosts net-gw | sed 's/\.[0-9]*$/.100/')
      sed -n '/^tiers:/,$p' "$E2E_ROOT/policies/demo.yaml" |
        awk -v a="$E2E_BALANCER_ADDR/24" '{ print } /^  - name: balancer$/ { print "    address: " a }'
    else
      sed -n '/^tiers:/,$p' "$E2E_ROOT/policies/demo.yaml"
    fi
  } >"$E2E_DIR/policy.yaml"
}

e2e_cleanup() {
  e2e_stop_hogs
  e2e_stop_controller
  hosts stop >/dev/null 2>&1 || true
}

# All tiers healthy (every VM running and healthy).
e2e_all_healthy() {
  api tiers 2>/dev/null | jq -e '(.tiers | length) > 0 and all(.tiers[]; .is_healthy)' >/dev/null 2>&1
}

# e2e_wait SECONDS DESCRIPTION COMMAND...: polls COMMAND every $E2E_POLL s (0.1).
e2e_wait() {
  local limit=$1 what=$2
  shift 2
  local end
  end=$(awk -v n="$(e2e_now)" -v l="$limit" 'BEGIN { printf "%.3f", n + l }')
  while :; do
    "$@" && return 0
    if awk -v n="$(e2e_now)" -v e="$end" 'BEGIN { exit !(n > e) }'; then
      e2e_fail "timed out after ${limit}s waiting for: $what"
    fi
    sleep "${E2E_POLL:-0.1}"
  done
}

vm_json() { api "vms/$1" 2>/dev/null; }
vm_field() { vm_json "$1" | jq -r ".vm.$2 // .$2 // empty"; }
vm_host() { api vms | jq -r --arg v "$1" '.vms[] | select(.name == $v) | .host'; }
vm_running_healthy() {
  api vms | jq -e --arg v "$1" '.vms[] | select(.name == $v) | .state == "running" and .health == "healthy"' >/dev/null 2>&1
}
vm_epoch() { api vms | jq -r --arg v "$1" '.vms[] | select(.name == $v) | .epoch'; }
host_state() { api hosts | jq -r --arg h "$1" '.hosts[] | select(.name == $h) | .state'; }

# PID (outside view) of the QEMU running VM $1, if any.
qemu_pid() { pgrep -f -- "-name guest=$1," | head -1; }

# Every running copy of every VM over all live hosts: "vm host" lines. Only
# running ones: a live migration's destination holds the VM paused until the
# source has stopped it.
# (running_copies -r: the hosts asked in reverse name order.)
running_copies() {
  local h
  for h in $(hosts status | awk '$2 == "running" { print $1 }' | sort ${1:+"$1"}); do
    virsh -c "$(hosts uri "$h")" list --name --state-running 2>/dev/null | sed "/^$/d; s/\$/ $h/"
  done
}

# "HOST PORT" where clients reach VM $2 of tier $1 (its first service port).
vm_endpoint() {
  api "tiers/$1/endpoints" | jq -r --arg v "$2" '[.endpoints[] | select(.vm == $v)][0] | select(.) | "\(.host) \(.port)"'
}
# db_ask HOST PORT COMMAND...: the tiny db's answers (images/init/db-conn), one per
# line, after its greeting; QUIT is sent last.
db_ask() {
  local host=$1 port=$2
  shift 2
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 10 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1; shift
    printf "%s\r\n" "$@" QUIT >&3; cat <&3' "$host" "$port" "$@" 2>/dev/null | tr -d '\r'
}
# db_vm VM COMMAND...: db_ask at VM's endpoint (tier mysql); only the answers.
db_vm() {
  local ep
  ep=$(vm_endpoint mysql "$1") && [ -n "$ep" ] || return 1
  shift
  # shellcheck disable=SC2086  # "HOST PORT"
  db_ask $ep "$@" | sed '1d; $d'
}

# The balancer's URL (its first endpoint).
balancer_url() {
  api tiers/balancer/endpoints | jq -r '.endpoints[0] | select(.) | "http://\(.host):\(.port)/"'
}

# A background prober of the balancer: one line per request ("ok NAME" / "fail")
# into $E2E_DIR/balancer.log until e2e_stop_balancer_probe.
e2e_start_balancer_probe() {
  local url=$1
  : >"$E2E_DIR/balancer.log"
  (
    while :; do
      # The balancer VM itself may move (host crash): then ask for its endpoint again.
      if page=$(curl -fsS -m 2 "$url" 2>/dev/null) ||
        { url=$(balancer_url 2>/dev/null) && page=$(curl -fsS -m 2 "$url" 2>/dev/null); }; then
        echo "$(date +%s.%N) ok $(echo "$page" | sed -n 's/.*<title>\(.*\)<\/title>.*/\1/p' | head -1)"
      else
        echo "$(date +%s.%N) fail"
      fi
      sleep 0.2
    done
  ) >>"$E2E_DIR/balancer.log" 2>/dev/null &
  E2E_PROBE_PID=$!
}
e2e_stop_balancer_probe() {
  [ -n "${E2E_PROBE_PID:-}" ] || return 0
  kill "$E2E_PROBE_PID" 2>/dev/null || true
  wait "$E2E_PROBE_PID" 2>/dev/null || true
  E2E_PROBE_PID=""
}

# A background watcher that records any VM running on two hosts at once
# into $E2E_DIR/duplicates.log.
#
# The hosts are asked one after another, so one pass can see a live
# migration's source before its switch-over and the destination after it: a
# VM that never ran twice (libvirt pauses the source before the destination
# resumes). That happened in part e at load 10. So each round asks the hosts
# in name order, then in reverse order, and a VM counts as two copies only when
# both passes see it on the same hosts: the pass that asked the destination
# first can only see both when the source still ran after the destination did.
# A real second copy lasts seconds (the agents remove stale ones), far longer
# than a round.
# Lines "VM: H1 H2..." (hosts in name order) of VMs on more than one host, from
# "VM HOST" lines.
copies_of() { sort -k1,1 -k2,2 | awk '{ n[$1]++; h[$1] = h[$1] " " $2 } END { for (v in n) if (n[v] > 1) print v ":" h[v] }' | sort; }
e2e_start_copy_watch() {
  : >"$E2E_DIR/duplicates.log"
  (
    while :; do
      fwd=$(running_copies | copies_of)
      rev=$(running_copies -r | copies_of)
      [ -z "$fwd" ] || comm -12 <(echo "$fwd") <(echo "$rev") | sed "s/^/$(date +%T.%3N) /"
      sleep 0.3
    done
  ) >>"$E2E_DIR/duplicates.log" 2>/dev/null &
  E2E_WATCH_PID=$!
}
e2e_stop_copy_watch() {
  [ -n "${E2E_WATCH_PID:-}" ] || return 0
  kill "$E2E_WATCH_PID" 2>/dev/null || true
  wait "$E2E_WATCH_PID" 2>/dev/null || true
  E2E_WATCH_PID=""
}

# e2e_start_hogs N: N CPU hogs (busy loops) until e2e_stop_hogs (e2e_cleanup
# calls it); each also ends within ≈ 0.1 s of this shell's death (kill -9).
# Each in a session of its own: under autogroup scheduling each session gets
# one share of the CPU, so three hogs in one session weigh as one busy
# process; three sessions weigh as three busy services, the load meant.
e2e_start_hogs() {
  local n
  for n in $(seq "$1"); do
    # shellcheck disable=SC2016
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do for ((n = 0; n < 50000; n++)); do :; done; done' \
      e2e-hog $$ </dev/null &
    E2E_HOGS+=($!)
  done
}
e2e_stop_hogs() {
  ((${#E2E_HOGS[@]})) || return 0
  kill "${E2E_HOGS[@]}" 2>/dev/null || true
  wait "${E2E_HOGS[@]}" 2>/dev/null || true
  E2E_HOGS=()
}

# ---- controller events (GET /api/v1/events?since=ID: oldest first, by pages) ----
# The id of the newest event (paging on from event $1, default 0).
last_event_id() {
  local id=${1:-0} next
  while next=$(api "events?since=$id&limit=5000" | jq '.last_id') && [ "$next" != "$id" ]; do id=$next; done
  echo "$id"
}
# Every event after event $1, one JSON object a line (one request and one jq
# while they fit in a page).
events_since() {
  local id=$1 lines
  while :; do
    mapfile -t lines < <(api "events?since=$id&limit=5000" | jq -c '.events[]')
    wait $! || return 1
    ((${#lines[@]} > 0)) || return 0
    printf '%s\n' "${lines[@]}"
    ((${#lines[@]} == 5000)) || return 0
    id=$(jq '.id' <<<"${lines[-1]}")
  done
}
# event_ms SINCE KIND SUBJECT: t_ms of the first event KIND of SUBJECT after event
# SINCE; fails while there is none.
event_ms() {
  local ms
  ms=$(events_since "$1" | jq -rn --arg k "$2" --arg s "$3" \
    'first(inputs | select(.kind == $k and .subject == $s) | .t_ms) // empty')
  [ -n "$ms" ] && echo "$ms"
}

# ---- collateral damage of a failure ---------------------------------------------
# e2e_collateral SINCE HOST [VMS]: what befell the cluster beyond host HOST (the
# one that failed) and its VMs VMS since event SINCE, from the controller's events
# (agents forward theirs, also late ones): one line per event, "t_ms kind subject
# message", of
#   host.suspect | host.offline | host.fencing | host.fenced | host.self_fenced of
#     another host;
#   vm.destroyed of a VM not in VMS (a destroy of a running VM by any agent).
# No line: no collateral damage. An agent's self-fence is the "host.self_fenced"
# event of its host ("host 'h2' self-fenced: lease expired ...") and one
# "vm.destroyed" event per VM ("... self-fence, lease expired").
# Fails (non-zero, a message on stderr) when the events cannot be read or an
# event is not what the filter expects: an empty answer then means "none seen",
# never "not looked".
e2e_collateral() {
  local since=$1 host=$2 vms=${3:-} events
  events=$(events_since "$since") || { echo "e2e_collateral: reading the events after $since failed" >&2; return 1; }
  # `.subject` is bound before `$vms | ...`: inside that pipe `.` is $vms.
  jq -rn --arg h "host/$host" --arg vms " $vms " '
    inputs
    | .subject as $s
    | select(
        ((.kind | IN("host.suspect", "host.offline", "host.fencing", "host.fenced", "host.self_fenced"))
          and ($s | startswith("host/")) and $s != $h)
        or (.kind == "vm.destroyed" and ($vms | contains(" " + ($s | ltrimstr("vm/")) + " ") | not)))
    | "\(.t_ms) \(.kind) \(.subject) \(.message)"' <<<"$events" ||
    { echo "e2e_collateral: jq failed on the events after $since" >&2; return 1; }
}

# Agent logs: e2e_log_mark prints "HOST LINES" for every agent log (its current
# length); e2e_log_since MARK HOST REGEX prints HOST's agent log lines after the
# mark that match REGEX.
e2e_log_mark() {
  local f h
  for f in "$E2E_DIR"/logs/agent-*.log; do
    [ -e "$f" ] || continue
    h=${f##*/agent-}
    echo "${h%.log} $(wc -l <"$f")"
  done
}
e2e_log_since() {
  local mark=$1 h=$2 regex=$3 n
  n=$(awk -v h="$h" '$1 == h { print $2 }' <<<"$mark")
  [ -e "$E2E_DIR/logs/agent-$h.log" ] || return 0
  tail -n +"$((${n:-0} + 1))" "$E2E_DIR/logs/agent-$h.log" | grep -E "$regex" || true
}

# ---- heartbeats as the controller saw them ---------------------------------------
# e2e_start_hb_sampler FILE: every 0.2 s, one "T_MS HOST LAST_HEARTBEAT_MS" line
# per host of GET /api/v1/hosts into FILE, until e2e_stop_hb_sampler.
e2e_start_hb_sampler() {
  local file=$1
  : >"$file"
  (
    trap - EXIT
    while :; do
      t=${EPOCHREALTIME/./}
      curl -fsS -m 1 "$TW_CONTROLLER/api/v1/hosts" 2>/dev/null |
        jq -r --argjson t "${t:0:-3}" '.hosts[] | "\($t) \(.name) \(.last_heartbeat_ms // 0)"' 2>/dev/null
      sleep 0.2
    done
  ) >>"$file" &
  E2E_HB_PID=$!
}
e2e_stop_hb_sampler() {
  [ -n "${E2E_HB_PID:-}" ] || return 0
  kill "$E2E_HB_PID" 2>/dev/null || true
  wait "$E2E_HB_PID" 2>/dev/null || true
  E2E_HB_PID=""
}
# e2e_hb_gaps FILE HOST...: per HOST, "HOST max_age=S max_interval=S samples=N
# period=S": the longest a sample found since its last heartbeat, the longest
# interval between two successive heartbeats that the samples saw (it overstates
# a gap shorter than the sampling period: a busy machine samples more slowly than
# every 0.2 s), the samples and their mean period. Seconds.
e2e_hb_gaps() {
  local file=$1 h
  shift
  for h in "$@"; do
    awk -v h="$h" '$2 == h && $3 > 0 {
        n++
        if (!first) first = $1
        lastt = $1
        age = $1 - $3; if (age > max_age) max_age = age
        if (last && $3 != last && $3 - last > max_int) max_int = $3 - last
        last = $3
      }
      END { printf "%s max_age=%.2fs max_interval=%.2fs samples=%d period=%.2fs\n", h, max_age / 1000,
              max_int / 1000, n, (n > 1 ? (lastt - first) / (n - 1) / 1000 : 0) }' "$file"
  done
}
