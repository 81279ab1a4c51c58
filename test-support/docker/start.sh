#!/usr/bin/env bash
# Starts a private dockerd for flotilla's Docker tests and builds the local
# test image (no registry is needed: a busybox-static root filesystem is
# imported with `docker import`).
#
#   eval "$(test-support/docker/start.sh)"   # then export the variables
#
# Installs docker.io and busybox-static with apt when missing. dockerd runs
# with --iptables=false --bridge=none (containers use --network none) and
# its own data root, exec root, pid file and socket under $DOCKER_TEST_ROOT
# (default /var/lib/flotilla-test-docker); its log goes to
# $DOCKER_TEST_ROOT/dockerd.log. Prints
#
#   FLOTILLA_TEST_DOCKER=unix://$DOCKER_TEST_ROOT/docker.sock
#   FLOTILLA_TEST_DOCKER_IMAGE=flotilla-test/busybox:1
#   DOCKERD_PID=PID
#
# Idempotent: when a dockerd already answers on that socket it is reused
# (and the image rebuilt only if missing). Stop it with `kill $DOCKERD_PID`.
set -euo pipefail

root="${DOCKER_TEST_ROOT:-/var/lib/flotilla-test-docker}"
sock="$root/docker.sock"
pidfile="$root/dockerd.pid"
log="$root/dockerd.log"
image="${FLOTILLA_TEST_DOCKER_IMAGE:-flotilla-test/busybox:1}"

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "start.sh: $* missing and not root: install it first" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
    }
}

command -v dockerd >/dev/null 2>&1 || apt_install docker.io
[ -x /bin/busybox ] || apt_install busybox-static

mkdir -p "$root"
dk() { docker -H "unix://$sock" "$@"; }

if ! dk version >/dev/null 2>&1; then
    nohup dockerd --iptables=false --bridge=none \
        --data-root "$root/data" --exec-root "$root/exec" \
        --pidfile "$pidfile" -H "unix://$sock" >"$log" 2>&1 &
    ok=
    for _ in $(seq 1 300); do
        if dk version >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
    done
    if [ -z "$ok" ]; then
        echo "dockerd did not answer on $sock; its log ($log):" >&2
        tail -50 "$log" >&2
        exit 1
    fi
fi
pid="$(cat "$pidfile")"

if ! dk image inspect "$image" >/dev/null 2>&1; then
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $("$rootfs/bin/busybox" --list); do
        [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    tar -C "$rootfs" -c . | dk import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$image" >&2
fi

echo "FLOTILLA_TEST_DOCKER=unix://$sock"
echo "FLOTILLA_TEST_DOCKER_IMAGE=$image"
echo "DOCKERD_PID=$pid"
