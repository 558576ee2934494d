#!/usr/bin/env bash
# Build every image `make test`, `make bench-compose` and `make up` need, in this order:
#   1. with BASE_IMAGES=local, the base images, from Debian packages
#      (docker/build-base-images.sh; kept when present),
#   2. model-serving/python-build, the Python Dockerfiles' build stage
#      (docker/python-build.Dockerfile; BUILD_IMAGE),
#   3. each service of docker-compose.yml (`docker compose build`, else docker-compose), in
#      two lanes side by side: the services built from the shared Dockerfiles in docker/ (the
#      Python strategies from python-service.Dockerfile, the export job from
#      exporter.Dockerfile, whose torch layer is the exporter_base strategy's), one after
#      another so that a layer they share is built once; beside them, those with a Dockerfile
#      of their own in their folder (a compiled service), which share none. Each lane has
#      long steps that keep one core busy (a compiler's last crate, Docker copying a large
#      layer): on 2 cores, the two lanes finish minutes sooner than one.
# Idempotent: Docker's layer cache makes a run with nothing changed take seconds.
#
# Progress goes to stderr, one line per step with the elapsed time (and a line a minute while
# a long step runs); Docker's own output goes to BUILD_LOG (default: a file in $TMPDIR), a
# step's whole output appended when it ends, and its tail printed when it fails. The exit
# status is non-zero when a step fails, the failed steps named on the last line.
#
# BASE_IMAGES, where the Dockerfiles' base images come from:
#   local   built here from Debian packages (docker/build-base-images.sh, which needs Linux
#           and debootstrap): no registry needed. The default on Linux.
#   public  the Dockerfiles' defaults (python:3.11-slim, rust:1-slim-trixie, distroless),
#           pulled for the machine's platform (amd64 or arm64). The default elsewhere, e.g.
#           Docker Desktop on a Mac.
#
# TORCH_INDEX_URL, where torch and torchvision come from, is kept when set; otherwise PyPI
# with local base images, since PyTorch's own index is unreachable from the machines that
# build them, and the Dockerfiles' default (PyTorch's CPU wheels) with public ones.
#
# Usage: docker/build-images.sh [--print-build-args]
#   --print-build-args  print the KEY=VALUE build arguments docker-compose.yml takes from the
#                       environment (local base images and BUILD_IMAGE) on one line, and exit:
#                       env $(docker/build-images.sh --print-build-args) docker-compose up
#
# NOTE: macOS runs this with its own bash 3.2 and BSD tools: no GNU-only options here.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_IMAGE=${BUILD_IMAGE:-model-serving/python-build}
if [[ -z ${BASE_IMAGES:-} ]]; then
    if [[ $(uname -s) == Linux ]]; then BASE_IMAGES=local; else BASE_IMAGES=public; fi
fi
case $BASE_IMAGES in
local | public) ;;
*)
    echo "[images] BASE_IMAGES=$BASE_IMAGES: use local (built here from Debian packages) or public (the Dockerfiles' default images)" >&2
    exit 2
    ;;
esac

build_args() {
    if [[ $BASE_IMAGES == local ]]; then
        echo "$(docker/build-base-images.sh --print-build-args) BUILD_IMAGE=$BUILD_IMAGE"
    else
        echo "BUILD_IMAGE=$BUILD_IMAGE"
    fi
}

if [[ ${1:-} == --print-build-args ]]; then
    build_args
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--print-build-args]" >&2
    exit 2
fi

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    echo "[images] neither \`docker compose\` nor docker-compose is installed" >&2
    exit 1
fi

read -r -a args <<<"$(build_args)"
export "${args[@]}"
if [[ $BASE_IMAGES == local ]]; then
    export TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple}
fi
# Empty with public base images: the python-build image then starts FROM its default.
PYTHON_IMAGE=$(printf '%s\n' "${args[@]}" | sed -n 's/^PYTHON_IMAGE=//p')
services=$("${compose[@]}" config --services)
total=$((1 + $(wc -w <<<"$services")))
if [[ $BASE_IMAGES == local ]]; then total=$((total + 1)); fi

LOG=${BUILD_LOG:-${TMPDIR:-/tmp}/model-serving-build-images.log}
: >"$LOG"
steps=$(mktemp -d)
start=$SECONDS
step=0
pid=

say() { printf '[images %02d:%02d] %s\n' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)) "$*" >&2; }
stop() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null
    exit 130
}
trap stop INT TERM
trap 'rm -rf "$steps"' EXIT

# run NAME COMMAND...: the next numbered step, its output in a file of its own (the lanes
# run side by side), appended to the log when it ends.
run() {
    local name=$1 began=$SECONDS last=$SECONDS where output status
    shift
    step=$((step + 1))
    output="$steps/$step.log"
    say "building $name ($step/$total)…"
    echo "===== $name: $*" >"$output"
    "$@" >>"$output" 2>&1 </dev/null &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 0.2
        if ((SECONDS - last >= 60)); then
            last=$SECONDS
            # The classic builder's "Step 3/12 : RUN ..." lines say where a long build is.
            where=$(grep -E '^Step [0-9]+/[0-9]+ : ' "$output" | tail -1 | cut -c1-90 || true)
            say "  still building $name, $((SECONDS - began)) s${where:+: $where}"
        fi
    done
    status=0
    wait "$pid" || status=$?
    pid=
    cat "$output" >>"$LOG"
    if ((status != 0)); then
        echo "----- $name: the last 40 lines of its output -----" >&2
        tail -n 40 "$output" >&2
        say "FAILED: building $name ($step/$total) after $((SECONDS - began)) s; full log: $LOG"
        echo "$name" >>"$steps/failed"
        return 1
    fi
}

# lane SERVICE...: the services one after another, in the background; its first step's
# number is the next. A failed step ends its lane, not the other.
lanes=()
lane() {
    (
        trap stop INT TERM
        for service; do run "$service" "${compose[@]}" build "$service" || exit 1; done
    ) &
    lanes+=($!)
    step=$((step + $#))
}

say "Docker output: $LOG; BASE_IMAGES=$BASE_IMAGES; TORCH_INDEX_URL=${TORCH_INDEX_URL:-the Dockerfile default}; ${compose[*]}"
if [[ $BASE_IMAGES == local ]]; then
    run "base images" docker/build-base-images.sh || exit 1
fi
run "$BUILD_IMAGE" docker build --network host ${PYTHON_IMAGE:+--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"} \
    -f docker/python-build.Dockerfile -t "$BUILD_IMAGE" . || exit 1
shared=() own=()
for service in $services; do
    if [[ -f $service/Dockerfile ]]; then own+=("$service"); else shared+=("$service"); fi
done
lane ${shared[@]+"${shared[@]}"}
lane ${own[@]+"${own[@]}"}
trap 'kill "${lanes[@]}" 2>/dev/null; exit 130' INT TERM
# A lane's exit status is in $steps/failed already.
for lane_pid in "${lanes[@]}"; do wait "$lane_pid" || true; done
if [[ -s $steps/failed ]]; then
    say "FAILED: building $(paste -s -d ' ' "$steps/failed"); full log: $LOG"
    exit 1
fi
say "done: $total steps in $((SECONDS - start)) s"
