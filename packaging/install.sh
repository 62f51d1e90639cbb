#!/usr/bin/env bash
# packaging/install.sh — owns the machine setup for pfsmount: the Debian packages it needs
# (FUSE, bubblewrap, Docker engine, busybox-static for test images, R and pandas for
# sandboxed pipelines, tools) and the Python venv with pfsmount installed editable plus its
# test extras.
# Idempotent and fast when everything is already there. Env: PFSMOUNT_VENV (default $REPO/.venv).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PFSMOUNT_VENV:-$REPO/.venv}
export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install.sh: not root and no sudo" >&2; exit 1; }
    SUDO="sudo"
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed'; }

echo "==> apt packages"
pkgs=(fuse3 libfuse3-dev pkg-config gcc bubblewrap docker.io busybox-static git rsync sqlite3 curl psmisc)
# R and pandas for the host's own programs: pipelines without an image run them in the
# sandbox (examples/fruit_stand: Rscript, /usr/bin/python3 with Debian's pandas);
# debootstrap for the example Docker image (images.sh).
pkgs+=(r-base-core python3-pandas debootstrap)
# mkfs.ext4 for the full-disk tests (a 200 MB loop filesystem as the store root).
pkgs+=(e2fsprogs)
# Graphviz's dot: tests check that `pipeline draw --format dot` is a graph it draws.
pkgs+=(graphviz)
# Python headers: only when the python3 we build against lacks Python.h (pyenv ships its own).
inc=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$inc/Python.h" ] || pkgs+=(python3-dev)
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
installed vim || installed vim-tiny || missing+=(vim-tiny)
if [ ${#missing[@]} -gt 0 ]; then
    echo "    installing: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

echo "==> venv ($VENV)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# Reinstall only when pyproject.toml or the set of top-level modules changed (the editable
# install maps top-level modules; code inside them is picked up without reinstalling).
stamp="$VENV/.pfsmount-install-stamp"
want=$(cd "$REPO" && { cat pyproject.toml; ls -d cli.py pfsmount* scheduler* 2>/dev/null || true; } \
    | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$VENV/bin/pfsmount" ]; then
    log="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
           (cd "$REPO" && "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[test]')
         } >"$log" 2>&1; then
        tail -40 "$log" >&2; echo "install.sh: pip install failed (full log: $log)" >&2; exit 1
    fi
    echo "$want" > "$stamp"
fi
echo "==> install done"
