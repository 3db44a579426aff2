#!/usr/bin/env bash
# End to end on the real-service images (ctest label e2e-full; on demand, not in
# scripts/test): `images/build --full` (apache2 + PHP, mariadb, haproxy qcow2 disks)
# booted by the agents on 3 scripts/hosts hosts with the demo's tiers.
#   1. apply -> every tier healthy: db = mariadb answers (tcp), web = the PHP page
#      shows a row from the db (http / is 503 without one), balancer = haproxy forwards
#   2. the balancer's page shows the db row
#   3. kill -9 a db VM's QEMU -> restarted, every tier healthy, the page still shows the row
#   4. write a row through the balancer (the page's POST form), crash the host running the
#      db VM (its disk is on the lab's shared storage) -> rebuilt elsewhere, every tier
#      healthy, the row is read back through the balancer (issue #15)
# Usage: tests/e2e/e2e_full_test.sh [BUILD_DIR]. Root; builds the images when missing
# (cold ≈ 5 min). Cache: $TW_IMAGES_CACHE, else /var/cache/tierwarden/images.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "e2e-full: needs root; skipped"; exit 77; }
E2E_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
E2E_BIN=${1:-$E2E_ROOT/build}/bin
E2E_DIR=${E2E_DIR:-/tmp/tierwarden-e2e-full}
E2E_PORT=${E2E_PORT:-7873}
# shellcheck source=tests/e2e/lib.sh
source "$E2E_ROOT/tests/e2e/lib.sh"
ROW="hello from the tierwarden db tier"

t=$(e2e_now)
"$E2E_ROOT/images/build" --full --cache "$E2E_IMAGES" --quiet || e2e_fail "images/build --full"
e2e_log "images ready in $(e2e_elapsed "$t" "$(e2e_now)") s ($E2E_IMAGES)"

rm -rf "$E2E_DIR"
mkdir -p "$E2E_DIR"
trap 'e2e_cleanup' EXIT
T0=$(e2e_now)
e2e_start_cluster 3
# The demo's tiers on the full images, with their memory and a longer grace.
{
  sed -n '1,/^tiers:/p' "$E2E_DIR/policy.yaml" | sed '$d'
  cat <<'EOT'
tiers:
  - name: mysql
    image: full-db
    replicas: 1
    memory: 384MiB
    # One database on the lab's shared storage: rebuilt on another host, it keeps its rows.
    storage: { type: shared, path: /srv/tierwarden/shared }
    # MariaDB's handshake names its version ("5.5.5-10.11.6-MariaDB-0+deb12u1").
    health: { type: tcp, port: 3306, expect: "MariaDB", grace: 90s }
    ports: [ { name: mysql, port: 3306 } ]
  - name: apache
    image: full-web
    replicas: 2
    min_healthy: 1
    memory: 256MiB
    after: [mysql]
    health: { type: http, port: 80, path: /, grace: 90s }
    ports: [ { name: http, port: 80 } ]
  - name: balancer
    image: full-balancer
    replicas: 1
    memory: 128MiB
    after: [apache]
    health: { type: http, port: 80, path: /, grace: 90s }
    ports: [ { name: http, port: 80 } ]
EOT
} >"$E2E_DIR/full.yaml"
twctl apply -f "$E2E_DIR/full.yaml" >/dev/null || e2e_fail "apply"
t=$(e2e_now)
e2e_wait 420 "every tier healthy (full images)" e2e_all_healthy
e2e_log "1. ok: every tier healthy $(e2e_elapsed "$t" "$(e2e_now)") s after apply"

page_has_row() { BAL=$(balancer_url) && [ -n "$BAL" ] && page=$(curl -fsS -m 5 "$BAL") && grep -q "$ROW" <<<"$page"; }
e2e_wait 60 "the balancer's page shows the db row" page_has_row
e2e_log "2. ok: $BAL shows \"$ROW\""

pid=$(qemu_pid mysql-1)
[ -n "$pid" ] || e2e_fail "no QEMU for mysql-1"
before=$(api incidents | jq '[.incidents[] | select(.subject == "vm/mysql-1")] | length')
t=$(e2e_now)
kill -9 "$pid"
e2e_wait 20 "mysql-1 running again" bash -c "p=\$(pgrep -f -- '-name guest=mysql-1,' | head -1); [ -n \"\$p\" ] && [ \"\$p\" != $pid ]"
closed() { api incidents | jq -e --argjson n "$before" '[.incidents[] | select(.subject == "vm/mysql-1")] | length == $n + 1 and .[-1].open == false' >/dev/null; }
e2e_wait 240 "mysql-1's incident closed (healthy again)" closed
e2e_wait 60 "the page shows the row after the db kill" page_has_row
e2e_log "3. ok: db VM killed -> healthy again after $(e2e_elapsed "$t" "$(e2e_now)") s; page ok"

VALUE="row-$$-$(date +%s%N)"
wrote=$(curl -fsS -m 10 --data-urlencode "message=$VALUE" "$BAL") || e2e_fail "POST $BAL"
grep -q "Wrote row .*$VALUE" <<<"$wrote" || e2e_fail "the POST did not write the row: $wrote"
victim=$(vm_host mysql-1)
[ -n "$victim" ] || e2e_fail "mysql-1 has no host"
t=$(e2e_now)
hosts crash "$victim" >/dev/null
e2e_wait 30 "$victim fenced" bash -c "[ \"\$(curl -fsS '$TW_CONTROLLER/api/v1/hosts' | jq -r '.hosts[] | select(.name == \"$victim\") | .state')\" = fenced ]"
moved() { h=$(vm_host mysql-1); [ -n "$h" ] && [ "$h" != "$victim" ] && vm_running_healthy mysql-1 && e2e_all_healthy; }
e2e_wait 300 "mysql-1 rebuilt elsewhere, every tier healthy" moved
row_back() { BAL=$(balancer_url) && [ -n "$BAL" ] && page=$(curl -fsS -m 5 -G --data-urlencode "find=$VALUE" "$BAL") && grep -q "Found row .*$VALUE" <<<"$page"; }
e2e_wait 60 "the row written before the crash, read back through the balancer" row_back
e2e_log "4. ok: row \"$VALUE\" written, host $victim (mysql-1) crashed -> every tier healthy after $(e2e_elapsed "$t" "$(e2e_now)") s; the row is read back on $(vm_host mysql-1)"
e2e_log "PASS in $(e2e_elapsed "$T0" "$(e2e_now)") s"
