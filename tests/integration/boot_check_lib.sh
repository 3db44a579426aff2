# shellcheck shell=bash
# Shared by the manual image boot checks (image_boot_test.sh, full_image_boot_test.sh):
# result lines, a failure count, time and a free loopback port. Source it after
# `failures=0`.

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
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
# A free TCP port on the loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
