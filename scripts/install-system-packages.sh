#!/usr/bin/env bash
# The system commands `make setup` needs (the Makefile's setup-system), installed only when
# one is missing: idempotent, and silent when nothing is. The one list of them:
#   ab           the load generator (macOS ships /usr/sbin/ab)
#   cmake        libjpeg-turbo, compiled into the Rust service (turbojpeg-sys)
#   nasm         on x86-64 only: libjpeg-turbo's SIMD code there is NASM assembly (arm64's
#                Neon code is C and GNU as, which the C compiler brings)
#   debootstrap  on Linux only: the local base images (docker/build-base-images.sh)
#   chromium     on Linux only: the browser that loads the results page in its test
#                (benchmark/tests/test_page.py; elsewhere that test looks for Chromium or
#                Google Chrome, and skips saying so when there is neither)
#   valgrind     on Linux only: callgrind counts the in-process pipelines' instructions per
#                request (benchmark/benchmark/instructions.py; elsewhere the count is skipped,
#                saying so)
# Installed with apt-get where it exists, else with Homebrew; else one line on stderr says
# what to install, and the exit status is 1.
#
# NOTE: macOS runs this with its own bash 3.2: no associative arrays, and an empty array
# cannot be expanded under `set -u`, hence the word lists.
set -euo pipefail

required="ab cmake"
case $(uname -m) in
x86_64 | amd64) required="$required nasm" ;;
esac
if [[ $(uname -s) == Linux ]]; then
    required="$required debootstrap chromium valgrind"
fi

missing=
for command in $required; do
    command -v "$command" >/dev/null || missing="$missing $command"
done
[[ -z $missing ]] && exit 0
missing=${missing# }

# The package that provides each command: Debian's, Homebrew's (none for debootstrap,
# chromium or valgrind, which are asked for on Linux only).
debian_package() { case $1 in ab) echo apache2-utils ;; *) echo "$1" ;; esac; }
homebrew_formula() { case $1 in ab) echo httpd ;; cmake | nasm) echo "$1" ;; *) return 1 ;; esac; }
# packages_for LOOKUP: the packages of the missing commands; status 1 if one has none.
packages_for() {
    local command package packages=
    for command in $missing; do
        package=$("$1" "$command") || return 1
        packages="$packages $package"
    done
    echo "${packages# }"
}

# Word splitting of the package lists is wanted below: one word per package.
# shellcheck disable=SC2086
if command -v apt-get >/dev/null; then
    packages=$(packages_for debian_package)
    echo "[setup] installing $packages (apt-get) for $missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
elif command -v brew >/dev/null && formulae=$(packages_for homebrew_formula); then
    echo "[setup] installing $formulae (Homebrew) for $missing" >&2
    brew install --quiet $formulae
else
    hint="Debian: $(packages_for debian_package)"
    if formulae=$(packages_for homebrew_formula); then
        hint="$hint; Homebrew: $formulae"
    fi
    echo "[setup] missing commands: $missing; install them ($hint) and run make setup again" >&2
    exit 1
fi
