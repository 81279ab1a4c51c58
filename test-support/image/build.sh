#!/usr/bin/env bash
# Builds the server image from ./Dockerfile on a machine without a container
# registry, then tries it.
#
#   test-support/image/build.sh [tag]     # default flotilla:local
#
# 1. The base image is made locally: a minimal Debian bookworm root
#    filesystem from the Debian mirror (debootstrap --variant=minbase),
#    imported with `docker import` as flotilla-local/debian:bookworm (once).
# 2. `docker build --network host` with BASE_IMAGE set to it (the build
#    stage fetches rustup and crates from their registries, trusting the
#    host's extra CAs in /usr/local/share/ca-certificates as EXTRA_CA_CERTS).
# 3. Smoke test on the host network, listening on 127.0.0.1 only: the image
#    runs as uid 10001, serves /api/v6/health behind a token, and runs the
#    hello-world definition to STOPPED with exit code 0 (local engine inside
#    the container); with DATABASE_URL set it does the same on PostgreSQL.
#
# Needs dockerd (test-support/docker/start.sh; DOCKER_HOST is taken from
# FLOTILLA_TEST_DOCKER when set) and root for debootstrap.
set -euo pipefail

tag="${1:-flotilla:local}"
base="flotilla-local/debian:bookworm"
here="$(cd "$(dirname "$0")/../.." && pwd)"
export DOCKER_HOST="${DOCKER_HOST:-${FLOTILLA_TEST_DOCKER:-unix:///var/run/docker.sock}}"

if ! docker image inspect "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$base" >&2
    rm -rf "$rootfs"
fi

start=$(date +%s)
# This machine reaches the registries through a TLS-intercepting proxy whose
# CA is in the host's store: the build stage trusts the same extra CAs.
extra_ca=""
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    extra_ca="$(cat /usr/local/share/ca-certificates/*.crt | base64 -w0)"
fi
DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_IMAGE=$base" \
    --build-arg "EXTRA_CA_CERTS=$extra_ca" -t "$tag" "$here" >&2
echo "built $tag in $(( $(date +%s) - start )) s; size $(docker image inspect -f '{{.Size}}' "$tag") bytes"

user="$(docker image inspect -f '{{.Config.User}}' "$tag")"
[ "$user" = "10001:10001" ] || { echo "image user is '$user', not 10001:10001" >&2; exit 1; }

smoke() { # smoke NAME [docker run -e args...]
    local name="$1"; shift
    local port token="smoke-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    local cid
    cid="$(docker run -d --rm --network host \
        -e "FLOTILLA_LISTEN=127.0.0.1:$port" -e FLOTILLA_AUTH=tokens \
        -e "FLOTILLA_TOKENS=[{token=\"$token\",owner=\"smoke\",role=\"admin\"}]" \
        "$@" "$tag")"
    trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' RETURN
    local url="http://127.0.0.1:$port" auth="Authorization: Bearer $token"
    for _ in $(seq 1 100); do
        curl -sf -H "$auth" "$url/api/v6/health" >/dev/null 2>&1 && break
        sleep 0.2
    done
    [ "$(docker exec "$cid" id -u)" = 10001 ] || { echo "$name: not uid 10001" >&2; return 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/api/v6/task")" = 401 ] ||
        { echo "$name: an anonymous call was not refused" >&2; return 1; }
    curl -sf -H "$auth" -XPOST "$url/api/v6/task" --data @"$here/examples/hello-world.json" >/dev/null
    local run_id
    run_id="$(curl -sf -H "$auth" -XPUT "$url/api/v6/task/alias/hello-flotilla/execute" \
        -d '{"cluster":"default","env":[{"name":"USERNAME","value":"image"}],"run_tags":{"owner_id":"smoke"}}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')"
    local body=""
    for _ in $(seq 1 150); do
        body="$(curl -sf -H "$auth" "$url/api/v6/history/$run_id")"
        echo "$body" | grep -q '"status":"STOPPED"' && break
        sleep 0.2
    done
    echo "$body" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["status"]=="STOPPED" and r["exit_code"]==0, r' ||
        { echo "$name: the run did not succeed: $body" >&2; docker logs "$cid" >&2; return 1; }
    echo "$name: ok (run $run_id STOPPED, exit code 0)"
}

smoke "sqlite (default)"
if [ -n "${DATABASE_URL:-}" ]; then
    smoke "postgres" -e "DATABASE_URL=$DATABASE_URL" -e FLOTILLA_STORE=postgres -e FLOTILLA_QUEUE=postgres
fi
