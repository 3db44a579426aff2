#!/usr/bin/env bash
# LibvirtHypervisor::backupDisk on a real libvirtd + QEMU (TCG) guest:
#   flock /tmp/tw-realvm.lock tests/integration/backup_realvm_test.sh [BUILD_DIR]
# Starts one lab host (scripts/hosts, a private state dir), then runs
# LibvirtBackupTest.RealVmBackupHoldsTheData against it: the tiny db writes a
# value, its running disk is backed up with libvirt's backup API and with the
# snapshot + block commit fallback, each copy is checked (qemu-img check,
# self-contained qcow2, holds the value) and the VM keeps writing. Prints the
# size and time of each backup. Needs root and the tiny images (scripts/setup);
# exit 77 (skipped) otherwise. Takes about 10 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
images="${TW_IMAGES_DIR:-/var/cache/tierwarden/images}"
[[ $EUID == 0 ]] || { echo "SKIP: needs root"; exit 77; }
[[ -f "$images/tiny-db.json" ]] || { echo "SKIP: no tiny images in $images"; exit 77; }
[[ -x "$build/bin/tw_integration_tests" ]] || { echo "no $build/bin/tw_integration_tests"; exit 2; }

dir="$(mktemp -d /tmp/tw-backup-hosts.XXXXXX)"
export TW_HOSTS_DIR="$dir"
cleanup() { scripts/hosts clean >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
scripts/hosts start 1 --prefix bk >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TW_BACKUP_TEST_URI="$(scripts/hosts uri bk1)" TW_BACKUP_TEST_IMAGES="$images" TW_BACKUP_TEST_PORT="$port" \
  "$build/bin/tw_integration_tests" --gtest_filter='LibvirtBackupTest.*'
