#!/usr/bin/env bash
# packaging/images.sh — owns the example Docker image pfsmount-examples/python3-pil:latest
# (examples/images runs in it), built without a registry: a Debian minbase root made by
# debootstrap with python3 and python3-pil, then `docker import`. It holds no project code
# (the example's scripts come from a repo), so it never needs a rebuild; nothing is done when
# the image exists. Needs a running engine (dockerd.sh) and debootstrap (install.sh).
# Env: PFSMOUNT_DEBIAN_MIRROR (default http://deb.debian.org/debian), PFSMOUNT_DEBIAN_SUITE
# (default bookworm).
set -euo pipefail

IMAGE=pfsmount-examples/python3-pil:latest
MIRROR=${PFSMOUNT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${PFSMOUNT_DEBIAN_SUITE:-bookworm}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

echo "==> example image $IMAGE"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || {
    echo "images.sh: debootstrap is not installed (run packaging/install.sh)" >&2; exit 1; }
root=$(mktemp -d /var/tmp/pfsmount-image.XXXXXX)
trap '$SUDO rm -rf "$root"' EXIT
log="$root.log"
echo "    debootstrap $SUITE minbase + python3-pil from $MIRROR (log $log)"
if ! $SUDO /usr/sbin/debootstrap --variant=minbase --include=python3,python3-pil \
        "$SUITE" "$root/rootfs" "$MIRROR" >"$log" 2>&1; then
    tail -20 "$log" >&2; echo "images.sh: debootstrap failed (log: $log)" >&2; exit 1
fi
# What a datum never needs: package caches and lists, docs, manuals, translations.
$SUDO rm -rf "$root"/rootfs/var/cache/apt/* "$root"/rootfs/var/lib/apt/lists/* \
    "$root"/rootfs/usr/share/{doc,man,info,locale}
$SUDO tar -C "$root/rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
rm -f "$log"
echo "    built $IMAGE"
