#!/usr/bin/env bash
# packaging/test.sh — owns "the one test command": installs what is needed (install.sh,
# dockerd.sh, images.sh; all cheap when already done), then runs ruff, mypy and pytest from
# the venv.
# Extra arguments go to pytest, e.g. `bash packaging/test.sh tests/test_repo.py -k commit`.
# CI (CI=true) runs exactly this through .ci/run.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PFSMOUNT_VENV:-$REPO/.venv}
cd "$REPO"

bash packaging/install.sh
bash packaging/dockerd.sh
# Without it (no mirror reachable) only tests/e2e/test_images.py fails (under CI) or skips.
bash packaging/images.sh || echo "test.sh: images.sh failed; test_images cannot run" >&2
export PATH="$VENV/bin:$PATH"

echo "==> ruff"
"$VENV/bin/ruff" check .
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest (CI=${CI:-})"
rc=0
"$VENV/bin/python" -m pytest -x -q "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$rc"
