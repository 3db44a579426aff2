#!/usr/bin/env bash
# The e2e tests' event checks (tests/e2e/lib.sh) on fixed events, no cluster:
# e2e_collateral finds what it is meant to find, skips the failed host and its
# VMs, and fails (rather than answering "nothing") when the events cannot be
# read. Its jq filter once indexed a string on the first vm.destroyed event: the
# check then printed nothing and every "no collateral damage" passed unseen.
set -euo pipefail
command -v jq >/dev/null || { echo "lib_selftest: jq is missing; skipped"; exit 77; }
E2E_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_ROOT/tests/e2e/lib.sh"

failures=0
check() {  # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then
    echo "ok: $1"
  else
    echo "FAIL: $1"$'\n'"  expected: $2"$'\n'"  got:      $3"
    failures=$((failures + 1))
  fi
}

# GET /api/v1/events?since=ID&limit=N as the controller answers it (oldest
# first, events after ID), from FIXTURE.
FIXTURE='{"events":[
 {"id":1,"t_ms":100,"level":"warn","kind":"host.suspect","subject":"host/h1","message":"h1 suspect"},
 {"id":2,"t_ms":110,"level":"info","kind":"vm.destroyed","subject":"vm/apache-1","message":"destroyed apache-1 on h1"},
 {"id":3,"t_ms":120,"level":"warn","kind":"host.suspect","subject":"host/h2","message":"h2 suspect"},
 {"id":4,"t_ms":130,"level":"info","kind":"vm.started","subject":"vm/apache-1","message":"started"},
 {"id":5,"t_ms":140,"level":"warn","kind":"vm.destroyed","subject":"vm/mysql-2","message":"destroyed mysql-2 on h3: self-fence"},
 {"id":6,"t_ms":150,"level":"error","kind":"host.self_fenced","subject":"host/h3","message":"h3 self-fenced"},
 {"id":7,"t_ms":160,"level":"info","kind":"vm.destroyed","subject":"vm/apache-10","message":"destroyed apache-10"}]}'
API_FAILS=0
api() {
  [ "$API_FAILS" = 0 ] || return 22  # curl -f on an HTTP error
  local since=${1#events?since=}
  since=${since%%&*}
  jq -c --argjson s "$since" '{events: [.events[] | select(.id > $s)], last_id: ([.events[].id] | max)}' <<<"$FIXTURE"
}

check "every event after 0 is read" 7 "$(events_since 0 | wc -l)"
check "events after 4" "5 6 7" "$(events_since 4 | jq -r '.id' | tr '\n' ' ' | sed 's/ $//')"

got=$(e2e_collateral 0 h1 "apache-1 mysql-1")
check "collateral of h1's failure: other hosts' states and other VMs' destroys, in order" \
  "120 host.suspect host/h2 h2 suspect|140 vm.destroyed vm/mysql-2 destroyed mysql-2 on h3: self-fence|150 host.self_fenced host/h3 h3 self-fenced|160 vm.destroyed vm/apache-10 destroyed apache-10" \
  "$(tr '\n' '|' <<<"$got" | sed 's/|$//')"
# A VM name that is a prefix of another is not taken for it (apache-1 vs apache-10).
check "a listed VM's destroy is not collateral, a longer name's is" 1 "$(grep -c 'vm/apache-10' <<<"$got")"
check "nothing after the last event" "" "$(e2e_collateral 7 h1 "apache-1")"

API_FAILS=1
if out=$(e2e_collateral 0 h1 "apache-1" 2>/dev/null); then
  check "e2e_collateral fails when the events cannot be read" "non-zero status" "status 0, output '$out'"
else
  check "e2e_collateral fails when the events cannot be read" x x
fi
API_FAILS=0

FIXTURE='{"events":[{"id":1,"t_ms":1,"kind":"vm.destroyed","subject":7,"message":"m"}]}'
if e2e_collateral 0 h1 "apache-1" >/dev/null 2>&1; then
  check "e2e_collateral fails when an event is not what its filter reads" "non-zero status" "status 0"
else
  check "e2e_collateral fails when an event is not what its filter reads" x x
fi

((failures == 0)) || { echo "$failures check(s) failed"; exit 1; }
echo "all checks passed"
