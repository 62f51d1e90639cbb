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
MNT=$(mktemp -d -t pfs.XXXXXX)
export PFSMOUNT_ROOT

cleanup() {
    pfsmount down >/dev/null 2>&1 || true
    if [ -n "${PFSMOUNT_KEEP:-}" ]; then
        echo "(kept $PFSMOUNT_ROOT)"
    elif ! grep -qF " $PFSMOUNT_ROOT" /proc/mounts; then   # never rm -rf through a live mount
        rm -rf "$PFSMOUNT_ROOT"
        rmdir "$MNT" 2>/dev/null || true
    fi
}
trap cleanup EXIT

run() { printf '\n$ %s\n' "$*"; "$@"; }

echo "==> walkthrough (PFSMOUNT_ROOT=$PFSMOUNT_ROOT, mount $MNT)"
run pfsmount up --mount "$MNT"
run pfsmount create-repo data
run pfsmount list-repo
run pfsmount put-file data master sales -c -f examples/fruit_stand/set1.txt
run pfsmount list-repo
run pfsmount list-commit data
printf '\n$ %s\n' "pfsmount get-file data master sales | sed -n 1,5p"
pfsmount get-file data master sales | sed -n 1,5p
run pfsmount create-pipeline -f examples/fruit_stand/pipelines.json
run pfsmount flush-commit data@master
run pfsmount list-job
expect_sums() {  # the sums the pipeline wrote must be the sums of the data put so far
    for fruit in apple banana orange; do
        want=$(cat "$@" | awk -v f=$fruit '$1 == f {s += $2} END {print s}')
        got=$(cat "$MNT/sum/master/$fruit")
        printf '%s: %s\n' "$fruit" "$got"
        [ "$got" = "$want" ] || { echo "expected $fruit = $want, got $got" >&2; exit 1; }
    done
}
printf '\n$ cat %s\n' "$MNT/sum/master/*"
expect_sums examples/fruit_stand/set1.txt
run pfsmount put-file data master sales -c -f examples/fruit_stand/set2.txt
run pfsmount list-commit data   # two commits now
pfsmount list-commit data --json | python3 -c 'import json, sys; n = len(json.load(sys.stdin)); assert n == 2, f"expected 2 commits, got {n}"'
cat examples/fruit_stand/set1.txt examples/fruit_stand/set2.txt | cmp - <(pfsmount get-file data master sales)
echo "(sales holds set1 followed by set2)"
run pfsmount flush-commit data@master
printf '\n$ cat %s\n' "$MNT/sum/master/*"
expect_sums examples/fruit_stand/set1.txt examples/fruit_stand/set2.txt
run pfsmount commit inspect sum@master
run pfsmount fsck
run pfsmount down
echo "==> walkthrough done"
