#!/usr/bin/env bash
# packaging/walkthrough.sh — owns the README's walkthrough: the seed's fruit-stand story
# (Pachyderm 1.3's, from "Pachyderm and the Data Science Workflow") told with the real
# `pfsmount` CLI, each command echoed, the totals after each commit checked against the raw
# sales, the provenance of the final result, then where to look next.
#
#   bash packaging/walkthrough.sh [--no-install] [--no-mount] [--down]
#
# As root it first runs packaging/install.sh (idempotent, fast when all is there); as an
# ordinary user it installs nothing and uses the venv install.sh made (run it once first).
# Where /dev/fuse cannot be used (an ordinary user on most hosts) it says so in one line and
# runs with --no-mount. The story's store is PFSMOUNT_WALKTHROUGH_DIR (default
# ~/.local/share/pfsmount-walkthrough, replaced on each run); the daemon keeps serving it
# afterwards unless --down.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PFSMOUNT_VENV:-$REPO/.venv}
EX=examples/fruit_stand
install=1 mount=1 down=0
for arg in "$@"; do
    case "$arg" in
        --no-install) install=0 ;;
        --no-mount) mount=0 ;;
        --down) down=1 ;;
        -h|--help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "walkthrough.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
cd "$REPO"

if [ "$install" = 1 ] && [ "$(id -u)" -eq 0 ]; then
    bash packaging/install.sh
elif [ "$install" = 1 ] && [ ! -x "$VENV/bin/pfsmount" ]; then
    echo "walkthrough.sh: pfsmount is not installed in $VENV: run 'bash" \
         "packaging/install.sh' once (it needs root or sudo for apt), then this again" >&2
    exit 1
fi
[ -x "$VENV/bin/pfsmount" ] || { echo "walkthrough.sh: no $VENV/bin/pfsmount" >&2; exit 1; }
if ! "$VENV/bin/python" -c '' 2>/dev/null; then  # e.g. a venv made from a Python under /root
    echo "walkthrough.sh: the Python of $VENV ($(readlink -m "$VENV/bin/python")) cannot be run" \
         "by uid $(id -u); make a venv you can run: PFSMOUNT_VENV=DIR bash packaging/install.sh" >&2
    exit 1
fi
export PATH="$VENV/bin:$PATH"

WT=${PFSMOUNT_WALKTHROUGH_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/pfsmount-walkthrough}
export PFSMOUNT_ROOT=$WT/root
MNT=$WT/pfs
if [ -e "$WT" ]; then  # the previous run's story: stop its daemon, then start over
    pfsmount down >/dev/null 2>&1 || true
    if grep -qF " $MNT " /proc/mounts; then
        echo "walkthrough.sh: $MNT is still mounted; run 'fusermount3 -u $MNT'" >&2; exit 1
    fi
    rm -rf "$WT"
fi
mkdir -p "$MNT"

web_pid=""
cleanup() {
    [ -z "$web_pid" ] || kill "$web_pid" 2>/dev/null || true
    if [ "$down" = 1 ] || [ "${ok:-0}" != 1 ]; then pfsmount down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
say() { printf '\n%s-- %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }
total() {  # total FRUIT FILE...: what the sum pipeline must print, from the raw sales
    local fruit=$1; shift
    cat "$@" | awk -v f="$fruit" '$1 == f {s += $2} END {print s}'
}
totals() {  # totals N FILE...: sum/master/N, each fruit checked against the raw sales
    local n=$1; shift
    printf '$ for f in apple banana orange; do pfsmount get-file sum master/%s $f; done\n' "$n"
    for fruit in apple banana orange; do
        got=$(pfsmount get-file sum "master/$n" "$fruit")
        want=$(total "$fruit" "$@")
        [ "$got" = "$want" ] || { echo "walkthrough.sh: sum/master/$n $fruit is $got," \
                                       "the raw sales say $want" >&2; exit 1; }
        printf '%s\n' "$got"
    done
    printf 'Totals after data/master/%s: apple %s, banana %s, orange %s' "$n" \
        "$(total apple "$@")" "$(total banana "$@")" "$(total orange "$@")"
    printf ' (as a recount of the raw sales gives)\n'
}
id1x() {  # the 1.x id (REPO/BRANCH/N) of REPO@ID
    pfsmount inspect-commit "${1%@*}" "${1#*@}" | sed -n 's/^1\.x id: *//p'
}

printf '==> The seed'"'"'s fruit stand (Pachyderm 1.3), with pfsmount in place of pachctl\n'
printf '    store %s (mount %s)\n' "$PFSMOUNT_ROOT" "$MNT"

say "deploy: one daemon, no cluster (the seed: minikube start; pachctl deploy local)"
if [ "$mount" = 1 ]; then
    printf '$ pfsmount up --mount %s\n' "$MNT"
    if pfsmount up --mount "$MNT" 2>"$WT/up.err"; then :; else
        err=$(head -1 "$WT/up.err"); echo "(no mount: ${err#error: }; so the story runs with --no-mount)"
        mount=0
    fi
fi
if [ "$mount" = 0 ]; then
    rmdir "$MNT"
    run pfsmount up --no-mount
fi

say "step 1: create a repo to store data"
run pfsmount create-repo data
run pfsmount list-repo

say "step 2: commit data to the repo, from a URL (a server on 127.0.0.1 stands in for GitHub)"
portfile=$WT/web.port
python3 -u -c '
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
open(sys.argv[2] + ".tmp", "w").write(str(server.server_port))
__import__("os").rename(sys.argv[2] + ".tmp", sys.argv[2])
server.serve_forever()' "$EX" "$portfile" 2>/dev/null &
web_pid=$!
for _ in $(seq 100); do [ -s "$portfile" ] && break; sleep 0.05; done
run pfsmount put-file data master sales -c -f "http://127.0.0.1:$(cat "$portfile")/set1.txt"
run pfsmount list-repo
run pfsmount list-commit data
printf '$ pfsmount get-file data master sales | head -4\n'
pfsmount get-file data master sales | head -4

say "step 3: create the pipelines, in the seed's 1.3 form: filter by fruit (map), then sum (reduce)"
run pfsmount create-pipeline -f $EX/pipelines_1x.json
run pfsmount flush-commit data/master/0
run pfsmount list-job
totals 0 $EX/set1.txt

say "add more data as it streams in (-c appends to sales, in a new commit)"
run pfsmount put-file data master sales -c -f $EX/set2.txt
run pfsmount list-commit data
say "the pipelines run by themselves: flush-commit waits for them and prints their commits"
run pfsmount flush-commit data/master/1
echo "(filter saw only the appended sales, as 1.x's map does, and added them to its output)"
totals 1 $EX/set1.txt $EX/set2.txt

say "provenance: where sum/master/1 comes from"
run pfsmount inspect-commit sum master/1
prov=$(pfsmount inspect-commit sum master/1 | sed -n 's/^Provenance: *//p' | tr -d ',')
chain=""
for commit in $prov; do chain="$chain, $(id1x "$commit")"; done
echo "sum/master/1 was computed from${chain#,}"

say "why a drop in sales? a one-off job on exact commits (the seed's create-job -f jupyter.json)"
echo "(compare_days.json reads sum at master/0 as /pfs/day1 and at master/1 as /pfs/both)"
job=$(pfsmount create-job -f $EX/compare_days.json)
printf '$ pfsmount create-job -f %s\n%s\n' "$EX/compare_days.json" "$job"
pfsmount job wait "$job" >/dev/null
printf '$ pfsmount get-logs --job %s\n' "$job"
pfsmount get-logs --job "$job" | grep -v '^\[pfsmount\]'
drops=""
for fruit in apple banana orange; do
    d1=$(total "$fruit" $EX/set1.txt) d2=$(total "$fruit" $EX/set2.txt)
    [ "$d2" -ge "$d1" ] || drops="$drops, $fruit $d1 -> $d2"
done
[ -z "$drops" ] || echo "Sales dropped on day 2 (${drops#, }). The seed's notebook found why" \
    "(rain); a notebook on these exact commits is one command away (below)."

say "and the store is sound"
run pfsmount fsck
ok=1

echo
if [ "$down" = 1 ]; then
    run pfsmount down
    upflag="--no-mount"; [ "$mount" = 0 ] || upflag="--mount $MNT"
    cat <<EOF
==> Done. The daemon is stopped; the story's store stays. To look around:
    export PFSMOUNT_ROOT=$PFSMOUNT_ROOT PATH=$VENV/bin:\$PATH
    pfsmount up $upflag
EOF
else
    cat <<EOF
==> Done. The daemon still serves the story; look around:
    export PFSMOUNT_ROOT=$PFSMOUNT_ROOT PATH=$VENV/bin:\$PATH
EOF
fi
if [ "$mount" = 1 ]; then
    cat <<EOF
    ls $MNT/                      # the mount: every repo, then <repo>/<branch>/, <repo>/<commit-id>/
    cat $MNT/sum/master/apple     # the newest total (older ones: sum/<commit-id>/apple)
    cp more.txt $MNT/data/master/ # a write opens a commit; pfsmount commit finish data/master seals it
EOF
else
    echo "    (no mount here: read with get-file, or pfsmount file get sum@master/0:/apple)"
fi
nbflag=""; [ "$mount" = 1 ] || nbflag="--no-mount "
cat <<EOF
    pfsmount list-job; pfsmount inspect-job $job
    pfsmount get-file filter master/1 apple   # every apple sale, appended commit by commit
    pfsmount logs -p sum                      # what the datums printed
$(printf '    %-41s ' "pfsmount notebook ${nbflag}sum/master/1")# JupyterLab on that commit and its provenance
    pfsmount --help                           # every command; README.md: R, pandas, images
    pfsmount down                             # stop it (running this script again starts over)
EOF
