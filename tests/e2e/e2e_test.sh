#!/usr/bin/env bash
# End-to-end (ctest label e2e): real libvirtd hosts (scripts/hosts), real QEMU
# guests booting the tiny tier images, the controller and agents as daemons.
#   1. apply the demo policy (2 db, 2 web, 1 balancer) -> every tier healthy
#   2. kill -9 a web VM's QEMU -> restarted in place, healthy, one incident with its timeline
#   1b. the db tier's disks are on the lab's shared storage: a row written to mysql-1,
#      a counter on its disk; a second host cannot start mysql-1's disk while it runs
#      (libvirt refuses; the lease is in virtlockd's lockspace on the shared folder)
#   1c. backups (docs/backups.md): twctl backup vm mysql-1 -> a catalogued backup
#      (a self-contained qcow2 on the DR place); the row changed and the counter
#      bumped; twctl restore vm mysql-1 --from ID -> the row and counter are back
#   3. crash the host running a db VM -> fenced, its VMs rebuilt elsewhere (the spare),
#      every tier healthy, never two copies; the balancer answers at the end and
#      failed only while a backend was down; mysql-1 still has the row and its
#      counter goes on (its disk came along)
#   4. drain a host -> its VMs live-migrated, the balancer keeps answering
#   5. restart the controller during a recovery -> converges
# Usage: tests/e2e/e2e_test.sh [BUILD_DIR]. Needs root; exit 77 (skip) without.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "e2e: needs root; skipped"; exit 77; }
E2E_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
E2E_BIN=${1:-$E2E_ROOT/build}/bin
E2E_DIR=${E2E_DIR:-/tmp/tierwarden-e2e}
E2E_PORT=${E2E_PORT:-7871}
# shellcheck source=tests/e2e/lib.sh
source "$E2E_ROOT/tests/e2e/lib.sh"

rm -rf "$E2E_DIR"
mkdir -p "$E2E_DIR"
trap 'e2e_stop_balancer_probe 2>/dev/null; e2e_stop_copy_watch 2>/dev/null; e2e_cleanup' EXIT
T0=$(e2e_now)

# ---- 1. apply -> all healthy ---------------------------------------------------
e2e_log "1. starting 3 hosts (h1, h2 active; h3 spare), controller, agents"
e2e_start_cluster 3
# The db tier backs up to a DR place every host sees (in the lab: a folder of the
# shared storage; on a real site another share, docs/backups.md).
# policies/demo.yaml has the line; here it keeps 3.
sed -i 's|^\(    \)backup: { every: 1h, keep: 24, to: /srv/tierwarden/shared/dr }$|\1backup: { every: 1h, keep: 3, to: /srv/tierwarden/shared/dr }|' "$E2E_DIR/policy.yaml"
grep -q 'backup: { every: 1h, keep: 3,' "$E2E_DIR/policy.yaml" || e2e_fail "no backup line (keep: 3) in the db tier"
mkdir -p "$E2E_DIR/hosts/shared/dr"
twctl apply -f "$E2E_DIR/policy.yaml" >/dev/null || e2e_fail "apply"
t=$(e2e_now)
e2e_wait 240 "every tier healthy after apply" e2e_all_healthy
e2e_log "1. ok: every tier healthy $(e2e_elapsed "$t" "$(e2e_now)") s after apply"
BAL=$(balancer_url)
[ -n "$BAL" ] || e2e_fail "the balancer has no endpoint"
page=$(curl -fsS -m 3 "$BAL") || e2e_fail "the balancer does not answer at $BAL"
echo "$page" | grep -q "tierwarden: apache-" || e2e_fail "the balancer's page names no web VM: $page"
e2e_start_copy_watch
e2e_start_balancer_probe "$BAL"

# ---- 1b. data on shared storage; one opener of a disk ------------------------------
row="row-$$-$RANDOM"
[ "$(db_vm mysql-1 "PUT e2e_row $row")" = OK ] || e2e_fail "cannot write a row to mysql-1"
count=$(db_vm mysql-1 "INCR visits")
[ "$count" = "OK 1" ] || e2e_fail "mysql-1's new counter answered '$count', not 'OK 1'"
db_info=$(db_vm mysql-1 INFO)
case "$db_info" in *storage=disk*) ;; *) e2e_fail "mysql-1 has no disk: $db_info" ;; esac
disk=/srv/tierwarden/shared/mysql-1.qcow2
[ -f "$E2E_DIR/hosts/shared/mysql-1.qcow2" ] || e2e_fail "mysql-1's disk is not on the shared storage ($disk)"
db_host=$(vm_host mysql-1)
other=h1
[ "$db_host" != h1 ] || other=h2
cat >"$E2E_DIR/lock-probe.xml" <<EOF
<domain type='qemu'><name>lock-probe</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>
<driver name='qemu' type='qcow2'/><source file='$disk'/><target dev='vda' bus='virtio'/></disk></devices></domain>
EOF
virsh -q -c "$(hosts uri "$other")" define "$E2E_DIR/lock-probe.xml" >/dev/null || e2e_fail "define lock-probe on $other"
if virsh -q -c "$(hosts uri "$other")" start lock-probe >"$E2E_DIR/lock-probe.out" 2>&1; then
  virsh -q -c "$(hosts uri "$other")" destroy lock-probe >/dev/null 2>&1 || true
  e2e_fail "$other started mysql-1's disk while $db_host runs it"
fi
virsh -q -c "$(hosts uri "$other")" undefine lock-probe >/dev/null 2>&1 || true
# The second guard: mysql-1's host's virtlockd holds the disk's lease (a POSIX lock
# on the lockspace file named by the SHA-256 of the disk's path).
lease=$(printf '%s' "$disk" | sha256sum | cut -d' ' -f1)
inode=$(stat -c %i "$E2E_DIR/hosts/shared/.lockspace/$lease" 2>/dev/null) || e2e_fail "no lease of $disk in the lockspace"
holder=$(awk -v i=":$inode" '$2 == "POSIX" && $6 ~ i "$" { print $5; exit }' /proc/locks)
[ -n "$holder" ] && grep -q virtlockd "/proc/$holder/comm" || e2e_fail "no virtlockd holds the lease of $disk"
vm_running_healthy mysql-1 || e2e_fail "mysql-1 is not running and healthy after the probe"
e2e_log "1b. ok: mysql-1 wrote $row, counter 1, $db_info; $other refused its disk: $(grep -m1 -o 'Failed to get "write" lock\|resource busy[^.]*' "$E2E_DIR/lock-probe.out" || true)"

# ---- 2. kill -9 a web VM's QEMU ------------------------------------------------
pid=$(qemu_pid apache-1)
[ -n "$pid" ] || e2e_fail "no QEMU for apache-1"
before=$(api incidents | jq '[.incidents[] | select(.subject == "vm/apache-1")] | length')
e2e_log "2. kill -9 QEMU of apache-1 (pid $pid)"
t=$(e2e_now)
kill -9 "$pid"
e2e_wait 10 "apache-1 running again (new QEMU)" bash -c "p=\$(pgrep -f -- '-name guest=apache-1,' | head -1); [ -n \"\$p\" ] && [ \"\$p\" != $pid ]"
t_run=$(e2e_now)
incident_closed() {
  api incidents | jq -e --argjson n "$before" '[.incidents[] | select(.subject == "vm/apache-1")] | length == $n + 1 and .[-1].open == false' >/dev/null
}
e2e_wait 90 "the new incident of apache-1 closed (healthy again)" incident_closed
inc=$(api incidents | jq -c '[.incidents[] | select(.subject == "vm/apache-1")] | .[-1]')
healthy_after=$(echo "$inc" | jq -r --arg t "$t" '(.closed_ms / 1000 - ($t | tonumber)) * 100 | round / 100')
steps=$(echo "$inc" | jq -r '[.steps[].step] | join(",")')
e2e_log "2. ok: running again after $(e2e_elapsed "$t" "$t_run") s, healthy after $healthy_after s; incident $(echo "$inc" | jq -r '.kind'): $steps"
case "$steps" in detected*restarted*healthy) ;; *) e2e_fail "incident timeline is not detected..restarted..healthy: $steps" ;; esac
vm_running_healthy apache-1 || e2e_fail "apache-1 is not running and healthy"

# ---- 1c. backup, change, restore -> the row is back ---------------------------------
t=$(e2e_now)
twctl backup vm mysql-1 >/dev/null || e2e_fail "twctl backup vm mysql-1"
requested_backup() {
  BACKUP_ID=$(api "backups?vm=mysql-1" | jq -r '[.backups[] | select(.request > 0)] | last | select(.) | .id')
  [ -n "$BACKUP_ID" ]
}
e2e_wait 60 "a requested backup of mysql-1 in the catalogue" requested_backup
t_backup=$(e2e_now)
backup=$(api "backups?vm=mysql-1" | jq -c --arg id "$BACKUP_ID" '.backups[] | select(.id == $id)')
file="$E2E_DIR/hosts/shared/dr/mysql-1/$BACKUP_ID.qcow2"
qemu-img check -q "$file" || e2e_fail "backup $BACKUP_ID is no valid qcow2 ($file)"
[ "$(db_vm mysql-1 "PUT e2e_row changed")" = OK ] || e2e_fail "cannot change the row"
[ "$(db_vm mysql-1 "INCR visits")" = "OK 2" ] || e2e_fail "cannot bump the counter"
epoch=$(vm_epoch mysql-1)
twctl restore vm mysql-1 --from "$BACKUP_ID" >/dev/null || e2e_fail "twctl restore vm mysql-1 --from $BACKUP_ID"
restored() { [ "$(vm_epoch mysql-1)" -gt "$epoch" ] && vm_running_healthy mysql-1 && [ "$(db_vm mysql-1 "GET e2e_row")" = "OK $row" ]; }
e2e_wait 90 "mysql-1 restored, healthy, its row back" restored
t_restored=$(e2e_now)
count=$(db_vm mysql-1 "GET visits")
[ "$count" = "OK 1" ] || e2e_fail "mysql-1's counter after the restore is '$count', not 'OK 1'"
e2e_log "1c. ok: backup $(echo "$backup" | jq -r '"\(.id): \(.bytes) bytes in \(.duration_ms) ms (\(.method))"') catalogued $(e2e_elapsed "$t" "$t_backup") s after the request; restored in $(e2e_elapsed "$t_backup" "$t_restored") s: row and counter back"

# ---- 3. crash the host running mysql-1 -----------------------------------------
victim=$(vm_host mysql-1)
[ -n "$victim" ] || e2e_fail "mysql-1 has no host"
moved=$(api hosts | jq -r --arg h "$victim" '.hosts[] | select(.name == $h) | .vms | join(" ")')
e2e_log "3. crash $victim (runs: $moved)"
t=$(e2e_now)
hosts crash "$victim" >/dev/null
fenced() { [ "$(host_state "$victim")" = fenced ]; }
e2e_wait 30 "$victim fenced" fenced
t_fenced=$(e2e_now)
all_elsewhere() {
  local v h
  for v in $moved; do
    h=$(vm_host "$v")
    [ -n "$h" ] && [ "$h" != "$victim" ] || return 1
    vm_running_healthy "$v" || return 1
  done
}
e2e_wait 90 "the VMs of $victim running and healthy on other hosts" all_elsewhere
t_moved=$(e2e_now)
e2e_wait 90 "every tier healthy after the host crash" e2e_all_healthy
spare_vms=$(api hosts | jq -r '.hosts[] | select(.name == "h3") | .vms | join(" ")')
on_spare=0
for v in $moved; do [ "$(vm_host "$v")" = h3 ] && on_spare=$((on_spare + 1)); done
[ "$victim" = h3 ] || [ "$on_spare" -ge 1 ] || e2e_fail "none of $moved was rebuilt on the spare h3"
e2e_log "3. ok: $(host_state "$victim") after $(e2e_elapsed "$t" "$t_fenced") s; its VMs healthy elsewhere after $(e2e_elapsed "$t" "$t_moved") s (spare h3 runs: ${spare_vms:-nothing})"
balancer_answers() { BAL=$(balancer_url) && [ -n "$BAL" ] && curl -fsS -m 3 "$BAL" >/dev/null; }
e2e_wait 30 "the balancer answers after the host crash" balancer_answers
[ -s "$E2E_DIR/duplicates.log" ] && e2e_fail "two copies of a VM ran at once: $(cat "$E2E_DIR/duplicates.log")"
got=$(db_vm mysql-1 "GET e2e_row")
[ "$got" = "OK $row" ] || e2e_fail "mysql-1 on $(vm_host mysql-1) lost its row: GET answered '$got'"
count=$(db_vm mysql-1 "INCR visits")
[ "$count" = "OK 2" ] || e2e_fail "mysql-1's counter did not go on after the crash: '$count'"
e2e_log "3. ok: mysql-1 on $(vm_host mysql-1) still has its row; counter $count; $(db_vm mysql-1 INFO)"

# Bring the crashed host back (as capacity) for the drain step.
hosts restart "$victim" >/dev/null
e2e_start_agent "$victim"
e2e_wait 30 "$victim back online" bash -c "[ \"\$(curl -fsS '$TW_CONTROLLER/api/v1/hosts' | jq -r '.hosts[] | select(.name == \"$victim\") | .state')\" = online ]"

# ---- 4. drain a host -> live migration -----------------------------------------
drain=$(api hosts | jq -r '[.hosts[] | select(.name != "h3" and (.vms | length) > 0)] | .[0].name')
[ -n "$drain" ] && [ "$drain" != null ] || e2e_fail "no active host with VMs to drain"
dvms=$(api hosts | jq -r --arg h "$drain" '.hosts[] | select(.name == $h) | .vms | join(" ")')
fails_before=$(grep -c ' fail' "$E2E_DIR/balancer.log" || true)
e2e_log "4. drain $drain (runs: $dvms)"
t=$(e2e_now)
twctl drain host "$drain" >/dev/null || e2e_fail "twctl drain host $drain"
drained() {
  [ "$(api hosts | jq -r --arg h "$drain" '.hosts[] | select(.name == $h) | .vms | length')" = 0 ] && e2e_all_healthy
}
e2e_wait 120 "$drain empty and every tier healthy" drained
migrated=$(api events | jq -r --argjson t "$(awk -v t="$t" 'BEGIN { printf "%d", t * 1000 }')" \
  '[.events[] | select(.t_ms >= $t and .kind == "vm.migrated") | .subject] | unique | length')
fails=$(($(grep -c ' fail' "$E2E_DIR/balancer.log" || true) - fails_before))
e2e_log "4. ok: drained in $(e2e_elapsed "$t" "$(e2e_now)") s, $migrated VMs live-migrated; balancer requests failed meanwhile: $fails"
[ "$migrated" -ge 1 ] || e2e_fail "no VM was live-migrated off $drain"
balancer_answers() { BAL=$(balancer_url) && [ -n "$BAL" ] && curl -fsS -m 3 "$BAL" >/dev/null; }
e2e_wait 30 "the balancer answers after the drain" balancer_answers
twctl undrain host "$drain" >/dev/null || e2e_fail "twctl undrain host $drain"

# ---- 5. controller restart during a recovery ----------------------------------
pid=$(qemu_pid apache-2)
[ -n "$pid" ] || e2e_fail "no QEMU for apache-2"
e2e_log "5. kill -9 QEMU of apache-2 and restart the controller at once"
h=$(vm_host apache-2)
healthy_before=$(grep -c "vm 'apache-2' is healthy" "$E2E_DIR/logs/agent-$h.log" || true)
t=$(e2e_now)
t_ms=$(awk -v t="$t" 'BEGIN { printf "%d", t * 1000 }')
kill -9 "$pid"
sleep 0.3
e2e_stop_controller
sleep 1
e2e_start_controller
# The agent's events of the restart reach the new controller, and apache-2 is
# reported healthy again by its agent after the restart.
restarted_seen() {
  api events | jq -e --argjson t "$t_ms" '[.events[] | select(.t_ms >= $t and .subject == "vm/apache-2" and (.kind == "vm.restarted" or .kind == "vm.crashed"))] | length > 0' >/dev/null
}
e2e_wait 30 "the restart of apache-2 reported to the new controller" restarted_seen
healthy_again() { [ "$(grep -c "vm 'apache-2' is healthy" "$E2E_DIR/logs/agent-$h.log")" -gt "$healthy_before" ]; }
e2e_wait 90 "apache-2 healthy again (its agent)" healthy_again
e2e_wait 90 "every tier healthy after the controller restart" e2e_all_healthy
e2e_log "5. ok: converged after the controller restart"

e2e_stop_balancer_probe
e2e_stop_copy_watch
[ -s "$E2E_DIR/duplicates.log" ] && e2e_fail "two copies of a VM ran at once: $(cat "$E2E_DIR/duplicates.log")"
total=$(wc -l <"$E2E_DIR/balancer.log")
failed=$(grep -c ' fail' "$E2E_DIR/balancer.log" || true)
e2e_log "balancer: $failed of $total requests failed over the whole run (backends down during recovery)"
e2e_log "PASS in $(e2e_elapsed "$T0" "$(e2e_now)") s"
