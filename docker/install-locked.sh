#!/bin/sh
# install-locked UV_EXPORT_ARGS...: install what `uv export` selects from /src/uv.lock into
# /opt/venv, every wheel checked against the sha256 hashes the lock records
# (`uv pip install --require-hashes`). In the python-build image as
# /usr/local/bin/install-locked, e.g. `install-locked --no-dev --package <package>`.
#
# One exception: when TORCH_INDEX_URL names an index other than PyPI (PyTorch's CPU wheels,
# the torch Dockerfile's default), torch and torchvision come from that index at their locked
# versions but without hash checks: uv.lock records PyPI's wheels, and PyTorch's index serves
# other builds of the same versions (CPU-only, `+cpu`), whose hashes are not in the lock. The
# CUDA packages PyPI's torch pulls in (nvidia-*, cuda-*, triton) are then left out. Everything
# else, torch's own dependencies included, is still installed with hashes checked, first.
set -eu
uv=/opt/uv/bin/uv
cd /src
"$uv" export --frozen --quiet --no-emit-workspace "$@" -o /tmp/locked.txt
install() { "$uv" pip install --python /opt/venv/bin/python --no-cache --quiet "$@"; }

case "${TORCH_INDEX_URL:-https://pypi.org/simple}" in
https://pypi.org/simple | https://pypi.org/simple/)
    install --require-hashes -r /tmp/locked.txt
    ;;
*)
    # An exported requirement is a line naming it, then indented --hash and "# via" lines.
    awk '/^[^ #]/ { keep = !/^(torch==|torchvision==|triton==|nvidia-|cuda-)/ } keep' \
        /tmp/locked.txt >/tmp/hashed.txt
    install --require-hashes -r /tmp/hashed.txt
    grep -E '^(torch|torchvision)==' /tmp/locked.txt | sed 's/ *\\$//' >/tmp/torch.txt || true
    if [ -s /tmp/torch.txt ]; then
        install --extra-index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt
    fi
    ;;
esac
rm -f /tmp/locked.txt /tmp/hashed.txt /tmp/torch.txt
