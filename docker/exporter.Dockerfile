# model-serving/exporter, the one-shot job of docker-compose.yml: export the demo model (of
# the network `--model` names), or a user's weights, and upload it, e.g.
# `--model resnet50 --upload gs://models/weather`. Build context: the repository root.
#
# It shares a strategy's torch layer: its first stage is docker/python-service.Dockerfile's
# `deps` stage, line for line, built with the PACKAGE of the strategy whose manifest sets
# [docker] exporter_base (docker-compose.yml passes it), so Docker's layer
# cache reuses whichever was built first; then the export's own extras (ONNX, ONNX Runtime)
# on top. Built after model-serving/python-build (docker/build-images.sh). By hand:
#   docker build -f docker/exporter.Dockerfile --build-arg PACKAGE=<package> \
#       -t model-serving/exporter .
ARG BUILD_IMAGE=model-serving/python-build

# NOTE: keep identical to docker/python-service.Dockerfile's `deps` stage: the ARG lines
# too, whose text is part of the layer cache's key.
FROM ${BUILD_IMAGE} AS deps
ARG PACKAGE
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG COMPILE_BYTECODE=0
RUN UV_COMPILE_BYTECODE=$COMPILE_BYTECODE install-locked --no-dev --package "${PACKAGE:?build with --build-arg PACKAGE=<the strategy's project name>}"
RUN install-locked --no-dev --package weather-model --extra export

# weather-model itself, as a wheel (docker/install-workspace.sh).
FROM ${BUILD_IMAGE} AS workspace
COPY . /src/
RUN install-workspace weather-model

FROM deps
COPY --from=workspace /opt/workspace/ /opt/venv/
# The sample photos the demo weights are calibrated on and parity is checked on: data the
# package reads from the repository, here where WEATHER_SAMPLE_IMAGES says.
COPY images/ /opt/images/
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 WEATHER_SAMPLE_IMAGES=/opt/images
USER 65532:65532
ENTRYPOINT ["python3", "-m", "weather_model.export", "--out", "/tmp/artifacts"]
