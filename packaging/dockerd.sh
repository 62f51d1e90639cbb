#!/usr/bin/env bash
# packaging/dockerd.sh — owns the Docker engine for pfsmount's tests and pipelines: starts a
# private dockerd when `docker info` does not answer (no systemd here), and makes sure the
# offline test image pfsmount-test/busybox:latest exists (docker import of a busybox rootfs;
# no registry is reachable). Idempotent. Extra dockerd flags: PFSMOUNT_DOCKERD_FLAGS.
set -euo pipefail

IMAGE=pfsmount-test/busybox:latest
LOG=/var/log/pfsmount-dockerd.log
PIDFILE=/var/run/pfsmount-dockerd.pid
EXECROOT=/var/run/pfsmount-docker
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

alive() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]; }

echo "==> docker engine"
if ! docker info >/dev/null 2>&1; then
    # A killed dockerd/containerd lingers a moment as a zombie with its pidfile, which makes a
    # new dockerd refuse to start or wait for the dead containerd: drop pidfiles of dead pids.
    for f in "$PIDFILE" "$EXECROOT/containerd/containerd.pid"; do
        p=$(cat "$f" 2>/dev/null || true)
        if [ -z "$p" ] || ! alive "$p"; then $SUDO rm -f "$f"; fi
    done
    if [ -f "$PIDFILE" ]; then
        echo "    dockerd (pid $(cat "$PIDFILE")) is running but not answering yet; waiting"
        started=""
    else
        # Containers run with --network none, so no bridge and no iptables rules are needed.
        # shellcheck disable=SC2086
        $SUDO setsid nohup dockerd --host=unix:///var/run/docker.sock \
            --data-root=/var/lib/pfsmount-docker --exec-root="$EXECROOT" \
            --pidfile="$PIDFILE" --bridge=none --iptables=false --ip6tables=false \
            ${PFSMOUNT_DOCKERD_FLAGS:-} </dev/null >>"$LOG" 2>&1 &
        started=$!
    fi
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        if [ -n "$started" ] && ! kill -0 "$started" 2>/dev/null; then
            tail -20 "$LOG" >&2; echo "dockerd.sh: dockerd exited (log: $LOG)" >&2; exit 1
        fi
        sleep 1
    done
    docker info >/dev/null 2>&1 || {
        tail -20 "$LOG" >&2; echo "dockerd.sh: dockerd not answering after 60 s (log: $LOG)" >&2
        exit 1
    }
    echo "    dockerd up (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'), log $LOG)"
fi

echo "==> test image $IMAGE"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
    mkdir -p "$root"/{bin,tmp,pfs,etc,proc,sys,dev}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
fi
echo "==> docker ready"
