#!/usr/bin/env bash
# Install test (ctest label `install`): the Debian packages install into a clean
# Debian 12 root and run from their systemd units' own command lines.
#
#   tests/install/install_test.sh BUILD_DIR
#
#  1. `cmake --build BUILD_DIR --target package` (timed): three .debs, checked
#     for their Depends and conffiles.
#  2. A clean bookworm root: mmdebstrap (minbase + systemd + what the packages
#     depend on, nothing of ours) from the Debian mirror this machine's apt uses,
#     cached as a tarball under $TW_INSTALL_TEST_CACHE (/var/cache/tierwarden-test),
#     keyed by the mirror and the package list: later runs unpack it (~2 s).
#  3. `dpkg -i` of the three packages inside it (a chroot in a mount namespace:
#     no systemd runs there, so the postinst must start nothing), then: the
#     `tierwarden` user, the token and config files' owners and modes, the
#     conffiles, the controller unit enabled and the agent's not,
#     `systemd-analyze verify` of both units (the root's own systemd).
#  4. In a network namespace of its own (no port of this machine is taken): the
#     controller from tierwarden-controller.service's ExecStart, with the unit's
#     Environment/EnvironmentFile expanded as systemd does, as its User/Group
#     with no new privileges, in its StateDirectory; it must answer
#     GET /api/v1/cluster and serve the dashboard. twctl (the package's) applies
#     a one-host policy with the token; the agent from tierwarden-agent.service's
#     ExecStart (agent.env set for libvirt's test driver) registers and runs the
#     VM. Both stop on TERM with status 0.
#  5. `dpkg -i` once more (the upgrade path of the scripts): the operator's
#     changed conffile, the token, the owners and the enabled units stay.
#  6. `dpkg --purge` of the three: units and token gone, the state dir kept.
#
# The unit's sandbox (ProtectSystem=, SystemCallFilter= ...) is not applied: no
# systemd runs here. Needs root (exit 77 = skipped otherwise), mmdebstrap,
# systemd (systemd-analyze), dpkg-dev (dpkg-shlibdeps for the package build).
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
if [[ $(id -u) != 0 ]]; then
  echo "install_test: needs root (chroot, dpkg in a root, users); skipped"
  exit 77
fi

say() { echo "install_test: $*"; }
die() { echo "install_test: FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f s", (b - a) / 1000 }'; }

for tool in mmdebstrap dpkg-deb dpkg-shlibdeps cpack unshare chroot curl zstd flock ip sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (scripts/setup installs it)"
done

started=$(now_ms)
work=$(mktemp -d /var/tmp/tw-install-test.XXXXXX)
root="$work/root"
keep=${TW_INSTALL_TEST_KEEP:-0}
cleanup() {
  local rc=$?
  # Anything still running inside the root (a failed step's daemon) goes first.
  local p
  for p in /proc/[0-9]*; do
    [[ "$(readlink "$p/root" 2>/dev/null)" == "$root" ]] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  if [[ $keep == 1 || ($rc != 0 && $keep != 0) ]]; then
    say "left $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. packages
t0=$(now_ms)
rm -f "$build"/packages/*.deb
cmake --build "$build" --target package >"$work/package.log" 2>&1 ||
  { tail -30 "$work/package.log" >&2; die "cmake --build $build --target package failed"; }
package_time=$(secs_since "$t0")
declare -A deb
for p in tierwarden-controller tierwarden-agent twctl; do
  f=$(ls "$build"/packages/"${p}"_*.deb 2>/dev/null | head -n1)
  [[ -n "$f" ]] || die "no ${p}_*.deb in $build/packages"
  deb[$p]=$f
done
say "packages built in $package_time:"
for p in tierwarden-controller tierwarden-agent twctl; do
  printf '  %-24s %6s KiB  Depends: %s\n' "$(basename "${deb[$p]}")" \
    "$(( $(stat -c %s "${deb[$p]}") / 1024 ))" "$(dpkg-deb -f "${deb[$p]}" Depends)"
done
# What each binary links (objdump -p: NEEDED), as Debian packages, and what
# the maintainer scripts and daemons run.
declare -A want=(
  [tierwarden-controller]="libvirt0 libsqlite3-0 libyaml-cpp0.7 libspdlog1.10-fmt9 libfmt9 libcpp-httplib0.11 libstdc++6 libc6 adduser"
  [tierwarden-agent]="libvirt0 libspdlog1.10-fmt9 libfmt9 libcpp-httplib0.11 libstdc++6 libc6 adduser qemu-utils iproute2 iputils-arping"
  [twctl]="libcpp-httplib0.11 libyaml-cpp0.7 libstdc++6 libc6"
)
for p in "${!want[@]}"; do
  depends=" $(dpkg-deb -f "${deb[$p]}" Depends | tr ',' '\n' | sed -E 's/\(.*\)//; s/[[:space:]]//g' | tr '\n' ' ') "
  for d in ${want[$p]}; do
    [[ "$depends" == *" $d "* ]] || die "$p does not depend on $d (Depends:$depends)"
  done
done
[[ " $(dpkg-deb -f "${deb[twctl]}" Depends) " != *libvirt* ]] || die "twctl depends on libvirt"
dpkg-deb -I "${deb[tierwarden-controller]}" conffiles >"$work/conffiles"
grep -qx /etc/tierwarden/controller.env "$work/conffiles" &&
  grep -qx /etc/tierwarden/fence-agents.conf "$work/conffiles" ||
  die "the controller package's conffiles: $(tr '\n' ' ' <"$work/conffiles")"
dpkg-deb -I "${deb[tierwarden-agent]}" conffiles | grep -qx /etc/tierwarden/agent.env ||
  die "the agent package does not mark /etc/tierwarden/agent.env as a conffile"

# ------------------------------------------------------------- 2. clean root
# The mirror: the Debian archive this machine's apt uses (as images/build-full
# finds it), else deb.debian.org; $TW_DEBIAN_MIRROR / $TW_DEBIAN_SECURITY_MIRROR override.
sourceUris() {
  {
    grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      2>/dev/null | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; break } }'
    grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
      sed 's/^[[:space:]]*URIs:[[:space:]]*//' | tr ' ' '\n'
  } | sed 's:/*$::' | awk 'NF'
}
uris=$(sourceUris || true)
suite=bookworm
mirror="${TW_DEBIAN_MIRROR:-$(grep -m1 -E '/debian$' <<<"$uris" || echo http://deb.debian.org/debian)}"
security="${TW_DEBIAN_SECURITY_MIRROR-$(grep -m1 -E '/debian-security$' <<<"$uris" || true)}"
sources=("deb $mirror $suite main" "deb $mirror $suite-updates main")
[[ -n "$security" ]] && sources+=("deb $security $suite-security main")

# What the packages depend on (first alternative, no versions; dpkg -i checks
# the versions), plus systemd: the units' home, systemd-analyze and deb-systemd-helper.
depends=$(for p in "${deb[@]}"; do dpkg-deb -f "$p" Depends; echo; done |
  tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g' | awk 'NF' |
  grep -vxE 'tierwarden-.*|twctl' | sort -u | tr '\n' ' ')
include="systemd $depends"
cache=${TW_INSTALL_TEST_CACHE:-/var/cache/tierwarden-test}
mkdir -p "$cache"
key=$({
  echo "v1 $suite minbase"
  printf '%s\n' "${sources[@]}"
  echo "$include"
} | sha256sum | cut -c1-16)
base="$cache/bookworm-$key.tar.zst"
t0=$(now_ms)
(
  flock 9
  if [[ ! -s "$base" ]]; then
    say "building the clean root (mmdebstrap $suite minbase + $include) from $mirror"
    mmdebstrap --mode=root --variant=minbase --include="${include// /,}" \
      --aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Retries "3"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      "$suite" "$base.tmp.tar.zst" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1 ||
      { tail -30 "$work/mmdebstrap.log" >&2; exit 1; }
    mv -f "$base.tmp.tar.zst" "$base"
    find "$cache" -name 'bookworm-*.tar.zst' ! -path "$base" -delete
  fi
) 9>"$cache/.lock" || die "mmdebstrap failed"
root_time=$(secs_since "$t0")
mkdir "$root"
tar -C "$root" --zstd -xf "$base"
say "clean root ($(du -sm "$base" | cut -f1) MB tarball) ready in $root_time"

# Runs a command chrooted in the root with /proc and /dev, in a mount namespace
# of its own (the mounts vanish with it).
inRoot() {
  # shellcheck disable=SC2016  # expanded by the inner shell
  unshare --mount --propagation private -- /bin/sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc" && mount --bind /dev "$root/dev" &&
      exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 "$@"
  ' sh "$root" "$@"
}

# --------------------------------------------------------------- 3. install
t0=$(now_ms)
mkdir -p "$root/tmp/debs"
cp "${deb[@]}" "$root/tmp/debs/"
inRoot dpkg -i "/tmp/debs/$(basename "${deb[tierwarden-controller]}")" \
  "/tmp/debs/$(basename "${deb[tierwarden-agent]}")" "/tmp/debs/$(basename "${deb[twctl]}")" \
  >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; die "dpkg -i failed"; }
install_time=$(secs_since "$t0")
inRoot dpkg-query -W -f='${Package} ${Version} ${Status}\n' tierwarden-controller tierwarden-agent twctl |
  tee "$work/status" | sed 's/^/  /'
[[ $(grep -c ' install ok installed$' "$work/status") == 3 ]] || die "not all three packages are installed"
for p in /proc/[0-9]*; do
  [[ "$(readlink "$p/root" 2>/dev/null)" == "$root" ]] &&
    die "a process runs in the root after dpkg -i: $(tr '\0' ' ' <"$p/cmdline")"
done

# The user, files, owners and modes.
IFS=: read -r _ _ tw_uid tw_gid _ tw_home tw_shell < <(grep '^tierwarden:' "$root/etc/passwd") ||
  die "no user tierwarden in the root's /etc/passwd"
[[ $tw_uid -lt 1000 && $tw_home == /var/lib/tierwarden && $tw_shell == /usr/sbin/nologin ]] ||
  die "user tierwarden: uid $tw_uid, home $tw_home, shell $tw_shell (want a system user, /var/lib/tierwarden, nologin)"
grep -q "^tierwarden:x:$tw_gid:" "$root/etc/group" || die "user tierwarden's group is not 'tierwarden'"
checkFile() {  # PATH MODE OWNER GROUP
  local got
  got=$(inRoot stat -c '%a %U %G' "$1") || die "$1 is missing"
  [[ "$got" == "$2 $3 $4" ]] || die "$1: $got, want $2 $3 $4"
}
checkFile /etc/tierwarden 755 root root
checkFile /etc/tierwarden/token 640 root tierwarden
checkFile /etc/tierwarden/fence-agents.conf 640 root tierwarden
checkFile /etc/tierwarden/controller.env 644 root root
checkFile /etc/tierwarden/agent.env 644 root root
checkFile /usr/sbin/tierwarden-controller 755 root root
checkFile /usr/sbin/tierwarden-agent 755 root root
checkFile /usr/bin/twctl 755 root root
checkFile /lib/systemd/system/tierwarden-controller.service 644 root root
checkFile /lib/systemd/system/tierwarden-agent.service 644 root root
grep -qxE '[0-9a-f]{64}' "$root/etc/tierwarden/token" || die "/etc/tierwarden/token holds no 64-hex-digit token"
token=$(cat "$root/etc/tierwarden/token")
cmp -s "$src/web/index.html" "$root/usr/share/tierwarden/web/index.html" ||
  die "/usr/share/tierwarden/web/index.html is not the dashboard"
inRoot dpkg-query -W -f='${Conffiles}\n' tierwarden-controller tierwarden-agent >"$work/conffiles"
for f in /etc/tierwarden/controller.env /etc/tierwarden/fence-agents.conf /etc/tierwarden/agent.env; do
  grep -q "^ $f " "$work/conffiles" || die "$f is not a conffile"
done
wants="$root/etc/systemd/system/multi-user.target.wants"
[[ -L "$wants/tierwarden-controller.service" ]] || die "tierwarden-controller.service is not enabled"
[[ ! -L "$wants/tierwarden-agent.service" ]] || die "tierwarden-agent.service is enabled before it is configured"
inRoot ldd /usr/sbin/tierwarden-controller /usr/sbin/tierwarden-agent /usr/bin/twctl >"$work/ldd" 2>&1
! grep -q 'not found' "$work/ldd" || die "missing libraries: $(grep 'not found' "$work/ldd" | sort -u | tr '\n' ' ')"

# The units parse (the root's systemd: the version of a real host).
inRoot systemd-analyze verify /lib/systemd/system/tierwarden-controller.service \
  /lib/systemd/system/tierwarden-agent.service >"$work/verify.log" 2>&1 ||
  { cat "$work/verify.log" >&2; die "systemd-analyze verify failed"; }
if grep -q tierwarden "$work/verify.log"; then
  cat "$work/verify.log" >&2
  die "systemd-analyze verify complains about the units"
fi
say "installed in $install_time; user, files, conffiles, units (systemd-analyze verify) fine"

# ------------------------------------------------- 4. run from the units' ExecStart
# unitKey UNIT KEY: the values of KEY= in the unit's [Service] section, one a line.
unitKey() {
  awk -v key="$2" '
    /^\[/ { service = ($0 == "[Service]"); next }
    service && index($0, key "=") == 1 { print substr($0, length(key) + 2) }' "$root$1"
}
# unitCommand UNIT: NUL-separated words: env assignments (Environment=, then
# EnvironmentFile=, later ones win), a line "--", then the ExecStart argv with
# $VAR (split at blanks) and ${VAR} (one word) replaced as systemd does.
unitCommand() {
  local unit="$1" line file word name value
  local -A env=()
  while IFS= read -r line; do
    # Environment="A=b c" D=e: quoted or bare assignments.
    while [[ -n "$line" ]]; do
      line="${line#"${line%%[![:space:]]*}"}"
      if [[ "$line" == \"* ]]; then
        word="${line:1}"; word="${word%%\"*}"; line="${line:$((${#word} + 2))}"
      else
        word="${line%%[[:space:]]*}"; line="${line:${#word}}"
      fi
      [[ -n "$word" ]] && env[${word%%=*}]="${word#*=}"
    done
  done < <(unitKey "$unit" Environment)
  while IFS= read -r file; do
    if [[ "$file" == -* ]]; then file="${file#-}"; [[ -f "$root$file" ]] || continue; fi
    while IFS= read -r line || [[ -n "$line" ]]; do
      [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
      name="${line%%=*}"; value="${line#*=}"
      if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then value="${BASH_REMATCH[1]}"; fi
      env[$name]="$value"
    done <"$root$file"
  done < <(unitKey "$unit" EnvironmentFile)
  for name in "${!env[@]}"; do printf '%s=%s\0' "$name" "${env[$name]}"; done
  printf -- '--\0'
  local exec
  exec=$(unitKey "$unit" ExecStart)
  [[ "$exec" != *[\"\'\\]* ]] || die "$unit: ExecStart with quotes or escapes: this parser does not take them"
  for word in $exec; do  # systemd splits ExecStart at blanks (no quotes here)
    if [[ "$word" =~ ^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$ ]]; then
      printf '%s\0' "${env[${BASH_REMATCH[1]}]-}"
    elif [[ "$word" =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
      for value in ${env[${BASH_REMATCH[1]}]-}; do printf '%s\0' "$value"; done
    else
      [[ "$word" != *\$* ]] || die "$unit: ExecStart word '$word': a variable inside a word"
      printf '%s\0' "$word"
    fi
  done
}

# The agent's settings for this test: libvirt's test driver, in this namespace.
cat >>"$root/etc/tierwarden/agent.env" <<'EOF'
TW_AGENT_ARGS="--host h1 --controller https://127.0.0.1:7801 --libvirt-uri test:///default --peer-listen 127.0.0.1:7802"
EOF
cat >"$root/tmp/policy.yaml" <<'EOF'
hosts:
  - name: h1
    uri: test:///default
    capacity: { cpus: 2 }
tiers:
  - name: web
    image: tiny-web
    replicas: 1
EOF

# One command line per unit, for the runner below: user, group, state dir and
# its mode, umask, then the words of unitCommand.
for unit in controller agent; do
  f=/lib/systemd/system/tierwarden-$unit.service
  {
    printf '%s\0' "$(unitKey "$f" User)" "$(unitKey "$f" Group)" "$(unitKey "$f" StateDirectory)" \
      "$(unitKey "$f" StateDirectoryMode)" "$(unitKey "$f" UMask)"
    unitCommand "$f"
  } >"$work/$unit.cmd"
  say "tierwarden-$unit.service runs: $(sed -n '/^--$/,$p' <(tr '\0' '\n' <"$work/$unit.cmd") | tail -n +2 | tr '\n' ' ')"
done
grep -qz -- '--web-dir' "$work/controller.cmd" || die "the controller's unit passes no --web-dir"

# The runner, in new network, mount and PID namespaces: loopback only.
cat >"$work/run.sh" <<'EOS'
set -euo pipefail
work=$1 root=$2 token=$3
ip link set lo up
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
fail() { echo "install_test: FAIL: $*" >&2; for f in "$work"/*.out; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }

# start UNIT: as systemd would: StateDirectory= (owner, mode), UMask=, User=/Group=
# with supplementary groups and no new privileges, only the unit's environment.
# Sets $pid. JOURNAL=1: stderr is a "journal stream" (JOURNAL_STREAM names it).
start() {
  local unit=$1 user group statedir mode umask_ home
  local -a fields envs=() argv=()
  mapfile -d '' fields <"$work/$unit.cmd"
  user=${fields[0]} group=${fields[1]} statedir=${fields[2]} mode=${fields[3]} umask_=${fields[4]}
  local i=5
  while [[ ${fields[$i]} != -- ]]; do envs+=("${fields[$i]}"); i=$((i + 1)); done
  argv=("${fields[@]:$((i + 1))}")
  user=${user:-root} group=${group:-$(chroot "$root" id -gn "$user")}
  if [[ -n "$statedir" ]]; then
    install -d -m "${mode:-0755}" "$root/var/lib/$statedir"
    chroot "$root" chown "$user:$group" "/var/lib/$statedir"
  fi
  home=$(chroot "$root" getent passwd "$user" | cut -d: -f6)
  : >"$work/$unit.out"
  [[ ${JOURNAL:-0} == 1 ]] && envs+=("JOURNAL_STREAM=$(stat -c '%d:%i' "$work/$unit.out")")
  (
    umask "${umask_:-0022}"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 "${envs[@]}" \
      setpriv --reuid "$user" --regid "$group" --init-groups --no-new-privs -- "${argv[@]}"
  ) >"$work/$unit.stdout" 2>>"$work/$unit.out" &
  pid=$!
}
twctl() { chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root TW_TOKEN_FILE=/etc/tierwarden/token TW_CA=/etc/tierwarden/ca.pem twctl "$@"; }
# HTTPS with the CA the postinst made (tierwarden-controller init).
ca=$root/etc/tierwarden/ca.pem
[[ -s "$ca" ]] || fail "the postinst made no /etc/tierwarden/ca.pem"

start controller
controller=$pid
for _ in $(seq 100); do
  curl -fsS --cacert "$ca" -H "Authorization: Bearer $token" -o "$work/cluster.json" https://127.0.0.1:7800/api/v1/cluster 2>/dev/null && break
  kill -0 "$controller" 2>/dev/null || fail "the controller exited"
  sleep 0.2
done
grep -q '"policy_version"' "$work/cluster.json" || fail "GET /api/v1/cluster: $(head -c 300 "$work/cluster.json")"
# The whole page first, then grep: `curl | grep -q` fails under pipefail when
# grep exits at its match before curl wrote the rest ("curl: (23) Failed
# writing body"; the page comes in several TLS records).
page=$(curl -fsS --cacert "$ca" https://127.0.0.1:7800/) || fail "GET / failed"
grep -q '<html' <<<"$page" || fail "GET / serves no dashboard"
curl -fsS -o /dev/null http://127.0.0.1:7800/ 2>/dev/null && fail "the controller answers plain HTTP"
echo "install_test: the controller answers GET /api/v1/cluster and serves the dashboard"
uid=$(ps -o uid= -p "$controller" | tr -d ' ')  # ps names users from this machine's passwd
[[ "$uid" == "$(chroot "$root" id -u tierwarden)" ]] || fail "the controller runs as uid $uid, not tierwarden"
[[ "$(chroot "$root" stat -c '%U %a' /var/lib/tierwarden/tierwarden.db)" == "tierwarden 600" ]] ||
  fail "state: $(ls -l "$root/var/lib/tierwarden")"
[[ ! -e "$root/var/lib/tierwarden/token" ]] || fail "the controller made a token in its state dir"
[[ "$(cat "$root/etc/tierwarden/token")" == "$token" ]] || fail "/etc/tierwarden/token changed"

code=$(curl -s --cacert "$ca" -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{}' \
  https://127.0.0.1:7800/api/v1/auth/check)
[[ "$code" == 401 ]] || fail "POST without the token answered $code, want 401"
twctl apply -f /tmp/policy.yaml >"$work/apply.out" 2>&1 || fail "twctl apply: $(cat "$work/apply.out")"
# Host h1's own agent token, issued as the controller's user (the running
# controller reads the new host-tokens at once), then its bundle put where
# the agent's unit reads it, as an operator copies it to the host.
chroot "$root" setpriv --reuid tierwarden --regid tierwarden --init-groups -- \
  /usr/sbin/tierwarden-controller issue-host h1 --state-dir /var/lib/tierwarden >"$work/issue.out" 2>&1 ||
  fail "issue-host h1: $(cat "$work/issue.out")"
install -d -m 0700 "$root/etc/tierwarden/agent"
install -m 0600 "$root"/var/lib/tierwarden/hosts/h1/{token,peer-token,ca.pem,host.pem,host.key} \
  "$root/etc/tierwarden/agent/"
JOURNAL=1 start agent
agent=$pid
for _ in $(seq 150); do
  twctl -o json get vms >"$work/vms.json" 2>&1 || true
  grep -q '"state":[[:space:]]*"running"' "$work/vms.json" && break
  kill -0 "$agent" 2>/dev/null || fail "the agent exited"
  sleep 0.2
done
grep -q '"state":[[:space:]]*"running"' "$work/vms.json" || fail "VM web-1 is not running: $(cat "$work/vms.json")"
twctl get hosts | tee "$work/hosts.txt" | sed 's/^/  /'
grep -q 'online' "$work/hosts.txt" || fail "host h1 is not online"
echo "install_test: twctl applied a policy; the agent registered and runs VM web-1"

for pid in "$agent" "$controller"; do
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  [[ $rc == 0 ]] || fail "a daemon exited with status $rc on TERM"
done
# Logs: on stderr, nothing on stdout; with a journal stream, the syslog
# priority prefix and no time of their own.
grep -qE '^[0-9]{4}-[0-9-]+T[0-9:.]+ info \[controller\] stopped$' "$work/controller.out" ||
  fail "the controller did not log its stop on stderr"
grep -qE '^<6>info \[agent h1\] stopped' "$work/agent.out" ||
  fail "the agent on a journal stream logs no '<6>info [agent h1] ...' lines"
[[ ! -s "$work/controller.stdout" && ! -s "$work/agent.stdout" ]] || fail "the daemons write to stdout"
echo "install_test: both stopped on TERM (status 0); logs on stderr (journal form under systemd)"
EOS
t0=$(now_ms)
unshare --net --mount --pid --fork --mount-proc --propagation private -- bash "$work/run.sh" "$work" "$root" "$token" ||
  die "running from the units failed (logs above; TW_INSTALL_TEST_KEEP=1 keeps $work)"
run_time=$(secs_since "$t0")

# -------------------------------------------------- 5. again (as an upgrade)
# The same packages once more: postinst with a version in $2. The operator's
# settings, the token and the owners stay; the agent stays disabled.
echo 'TW_CONTROLLER_ARGS="--listen 127.0.0.1:7900"  # changed by the operator' \
  >>"$root/etc/tierwarden/controller.env"
cp "$root/etc/tierwarden/controller.env" "$work/controller.env.changed"
inRoot dpkg -i "/tmp/debs/$(basename "${deb[tierwarden-controller]}")" \
  "/tmp/debs/$(basename "${deb[tierwarden-agent]}")" >"$work/dpkg-again.log" 2>&1 ||
  { cat "$work/dpkg-again.log" >&2; die "dpkg -i over the installed packages failed"; }
cmp -s "$work/controller.env.changed" "$root/etc/tierwarden/controller.env" ||
  die "reinstalling replaced the operator's controller.env"
[[ "$(cat "$root/etc/tierwarden/token")" == "$token" ]] || die "reinstalling changed the token"
checkFile /etc/tierwarden/token 640 root tierwarden
checkFile /etc/tierwarden/fence-agents.conf 640 root tierwarden
[[ -L "$wants/tierwarden-controller.service" && ! -L "$wants/tierwarden-agent.service" ]] ||
  die "reinstalling changed which units are enabled"
say "reinstalled over itself: settings, token, owners and enabled units kept"

# ------------------------------------------------------------------ 6. purge
inRoot dpkg --purge twctl tierwarden-agent tierwarden-controller >"$work/purge.log" 2>&1 ||
  { cat "$work/purge.log" >&2; die "dpkg --purge failed"; }
for f in /lib/systemd/system/tierwarden-controller.service /etc/tierwarden/token /etc/tierwarden/agent \
    /etc/tierwarden/controller.env /usr/sbin/tierwarden-controller \
    "/etc/systemd/system/multi-user.target.wants/tierwarden-controller.service"; do
  [[ ! -e "$root$f" ]] || die "$f is left after the purge"
done
[[ -f "$root/var/lib/tierwarden/tierwarden.db" ]] || die "the purge removed the cluster's database"
! inRoot dpkg-statoverride --list /etc/tierwarden/fence-agents.conf >/dev/null || die "the statoverride is left"
say "purged: units, token, config gone; /var/lib/tierwarden kept"
say "times: package $package_time, clean root $root_time, dpkg -i $install_time, run $run_time," \
  "total $(secs_since "$started")"
