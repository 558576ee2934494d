# Every Python strategy's image (a strategy with a Dockerfile of its own names it in its
# manifest's [docker] table). Build context: the repository root. No model inside: it is
# pulled from MODEL_URI at startup.
#
# The build arguments come from the strategy's manifest: docker-compose.yml passes them,
# rendered from each strategy.toml by docker/compose_files.py (`make render`). By hand:
#   docker build -f docker/python-service.Dockerfile -t model-serving/<strategy> \
#       --build-arg STRATEGY=<strategy> --build-arg PACKAGE=<package> \
#       --build-arg PORT=<port> --build-arg COMMAND="python -m <strategy>" .
#   STRATEGY          the strategy's folder (its name)
#   PACKAGE           the project name in its pyproject.toml
#   PORT              the manifest's port
#   COMMAND           the manifest's `run`, a shell command line ("python" is the venv's)
#   COMPILE_BYTECODE  1: compile the venv at build ([docker] compile_bytecode), for
#                     services whose many processes each import a large framework (the
#                     runtime user cannot write bytecode)
#   HOME_DIR          HOME of the runtime user ([docker] home; "/" is not writable)
#   TORCH_INDEX_URL   where torch and torchvision come from (only for strategies using them)
#
# Built first: the build stages start FROM BUILD_IMAGE, model-serving/python-build
# (docker/python-build.Dockerfile: uv, /opt/venv, the workspace manifests and uv.lock), which
# docker/build-images.sh builds before the Compose services, from this same PYTHON_IMAGE.
ARG PYTHON_IMAGE=python:3.11-slim
ARG BUILD_IMAGE=model-serving/python-build

# The third-party dependencies, exactly the locked versions, each wheel checked against
# uv.lock's hashes (torch and torchvision from TORCH_INDEX_URL: docker/install-locked.sh).
# The default index, PyTorch's CPU wheels, gives a torch image of about 1 GB; PyPI's wheels
# are CUDA builds (several GB more, unused on a CPU).
# NOTE: docker/exporter.Dockerfile starts with this very step (the same arguments, in the
# same order, and RUN line): keep them identical, so that the exporter reuses the torch
# layer of the strategy whose manifest sets [docker] exporter_base instead of installing
# torch again.
FROM ${BUILD_IMAGE} AS deps
ARG PACKAGE
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG COMPILE_BYTECODE=0
RUN UV_COMPILE_BYTECODE=$COMPILE_BYTECODE install-locked --no-dev --package "${PACKAGE:?build with --build-arg PACKAGE=<the strategy's project name>}"

# The workspace packages (the model contract, serving_common, the shared packages the
# strategy depends on, the strategy) built from the sources as wheels, installed apart from
# the dependencies: a source change rebuilds this small layer only. A strategy's wheel holds
# its strategy.toml (and any file its pyproject.toml force-includes), read at startup.
FROM ${BUILD_IMAGE} AS workspace
ARG PACKAGE
ARG COMPILE_BYTECODE=0
COPY . /src/
RUN UV_COMPILE_BYTECODE=$COMPILE_BYTECODE install-workspace "$PACKAGE"

FROM ${PYTHON_IMAGE}
ARG STRATEGY
ARG PORT
ARG COMMAND
ARG HOME_DIR=/
COPY --from=deps /opt/venv /opt/venv
COPY --from=workspace /opt/workspace/ /opt/venv/
# A login shell (KubeRay's `bash -lc`) finds the venv's commands (ray, serve) too.
COPY docker/venv-path.sh /etc/profile.d/venv.sh
# The manifest's start command, exec'd: the service is PID 1, and gets SIGTERM itself.
RUN : "${STRATEGY:?build with --build-arg STRATEGY=<folder>}" "${PORT:?}" "${COMMAND:?}" \
    && printf '#!/bin/sh\n# %s: its strategy.toml `run`\nexec %s\n' "$STRATEGY" "$COMMAND" \
        >/usr/local/bin/start-service \
    && chmod 755 /usr/local/bin/start-service
ENV PATH=/opt/venv/bin:$PATH \
    HOME=${HOME_DIR} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=${PORT}
USER 65532:65532
EXPOSE ${PORT}
# NOTE: HEALTHCHECK takes no build arguments: the start period here is the longest any
# strategy needs; Compose sets each service's own ([docker] start_period).
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/', timeout=2)"]
CMD ["start-service"]
