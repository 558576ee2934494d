# A local Google Cloud Storage emulator (gcp-storage-emulator, at its locked version) for
# running everything without a cloud account. Build context: the repository root.
#
# Built first: the build stage starts FROM BUILD_IMAGE, model-serving/python-build
# (docker/python-build.Dockerfile: uv, /opt/venv, the workspace manifests and uv.lock), which
# docker/build-images.sh builds before the Compose services, from this same PYTHON_IMAGE.
ARG PYTHON_IMAGE=python:3.11-slim
ARG BUILD_IMAGE=model-serving/python-build

FROM ${BUILD_IMAGE} AS build
# The lock's `emulator` dependency group, each wheel checked against uv.lock's hashes.
RUN install-locked --only-group emulator

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 9023
HEALTHCHECK --interval=2s --timeout=2s --retries=15 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9023/storage/v1/b', timeout=1)"]
CMD ["gcp-storage-emulator", "start", "--host", "0.0.0.0", "--port", "9023", "--in-memory", "--default-bucket", "models"]
