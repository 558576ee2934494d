#!/bin/sh
# install-workspace PACKAGE: install the workspace members PACKAGE needs (PACKAGE itself, the
# shared packages it depends on, through uv.lock) from the sources in /src, as wheels built
# here (not editable, --no-deps: install-locked installed their dependencies), under the
# prefix /opt/workspace, laid out as a venv. The service images copy that folder over
# /opt/venv, a layer of their own: a source change leaves the dependencies' layer alone.
# In the python-build image as /usr/local/bin/install-workspace.
#
# NOTE: the build backend (hatchling, at the version each pyproject.toml pins) is fetched
# from PyPI for each build, without a lock hash: uv.lock records no build dependencies.
set -eu
uv=/opt/uv/bin/uv
cd /src
# The members, one `./folder ; marker` line each; the markers are kept.
"$uv" export --frozen --quiet --no-dev --no-hashes --no-header --no-annotate --no-editable \
    --package "$1" | grep '^\./' >/tmp/workspace.txt
"$uv" pip install --python /opt/venv/bin/python --prefix /opt/workspace --no-cache --quiet \
    --no-deps -r /tmp/workspace.txt
rm -f /tmp/workspace.txt
