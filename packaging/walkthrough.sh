#!/usr/bin/env bash
# packaging/walkthrough.sh — owns the fruit-stand walkthrough: installs (install.sh), then
# drives the real `pfsmount` CLI against a fresh temporary root, echoing each command.
# Set PFSMOUNT_KEEP=1 to keep the temporary root afterwards.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PFSMOUNT_VENV:-$REPO/.venv}
cd "$REPO"
bash packaging/install.sh
export PATH="$VENV/bin:$PATH"
PFSMOUNT_ROOT=$(mktemp -d -t pfsmount-walkthrough.XXXXXX)
export PFSMOUNT_ROOT

cleanup() {
    pfsmount down >/dev/null 2>&1 || true
    if [ -n "${PFSMOUNT_KEEP:-}" ]; then
        echo "(kept $PFSMOUNT_ROOT)"
    elif ! grep -qF " $PFSMOUNT_ROOT" /proc/mounts; then   # never rm -rf through a live mount
        rm -rf "$PFSMOUNT_ROOT"
    fi
}
trap cleanup EXIT

run() { printf '\n$ %s\n' "$*"; "$@"; }

echo "==> walkthrough (PFSMOUNT_ROOT=$PFSMOUNT_ROOT)"
run pfsmount up
run pfsmount create-repo data
run pfsmount list-repo
run pfsmount put-file data master sales -c -f examples/fruit_stand/set1.txt
run pfsmount list-repo
run pfsmount list-commit data
printf '\n$ %s\n' "pfsmount get-file data master sales | head"
pfsmount get-file data master sales | head
run pfsmount put-file data master sales -c -f examples/fruit_stand/set2.txt
run pfsmount list-commit data   # two commits now
run pfsmount fsck
run pfsmount down
echo "==> walkthrough done"
