# model-serving/python-build: the image the Python Dockerfiles' build stages start from (their
# BUILD_IMAGE build argument). Build context: the repository root. It holds
#   /opt/uv       uv, at the version pinned once in pyproject.toml ([tool.uv] required-version),
#                 in a venv of its own so the services' venv holds only what they need;
#   /opt/venv     an empty venv the service builds install into (copied into their runtime
#                 stage as is, so build this image FROM the services' PYTHON_IMAGE);
#   /src          the workspace manifests (the root pyproject.toml and each member's) and uv.lock;
#   install-locked  installs a `uv export` selection of the lock with its hashes checked;
#   install-workspace  builds and installs a package's workspace members, once /src holds
#                 their sources (the service Dockerfiles copy the context there).
#
# docker/build-images.sh builds it before the Compose services, or by hand:
#   docker build -f docker/python-build.Dockerfile -t model-serving/python-build .
ARG PYTHON_IMAGE=python:3.11-slim

# The manifests, picked out of the context at their paths (the members are read from the root
# pyproject.toml), and the pinned uv requirement. This stage reruns on any change to the
# context, in a second; the stage below only when the files it copies from here change.
FROM ${PYTHON_IMAGE} AS manifests
COPY . /context/
RUN mkdir /manifests \
    && python3 /context/docker/workspace_manifests.py /context /manifests /uv-requirement.txt

FROM ${PYTHON_IMAGE}
COPY --from=manifests /uv-requirement.txt /opt/uv-requirement.txt
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --quiet --disable-pip-version-check -r /opt/uv-requirement.txt \
    && python3 -m venv /opt/venv
COPY docker/install-locked.sh /usr/local/bin/install-locked
COPY docker/install-workspace.sh /usr/local/bin/install-workspace
WORKDIR /src
COPY --from=manifests /manifests/ /src/
