# A local Google Cloud Storage emulator (gcp-storage-emulator, at its locked version) for
# running everything without a cloud account. Build context: the repository root.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE}
ARG UV_VERSION=0.13.8
COPY pyproject.toml uv.lock /src/
# uv in a venv of its own, so the service's venv holds only what the service needs.
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir --quiet "uv==${UV_VERSION}" \
    && python3 -m venv /opt/venv \
    && cd /src && /opt/uv/bin/uv export --frozen --only-group emulator --no-hashes -o requirements.txt --quiet \
    && /opt/uv/bin/uv pip install --python /opt/venv/bin/python --no-cache --quiet -r requirements.txt \
    && rm -rf /src /opt/uv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 9023
HEALTHCHECK --interval=2s --timeout=2s --retries=15 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9023/storage/v1/b', timeout=1)"]
CMD ["gcp-storage-emulator", "start", "--host", "0.0.0.0", "--port", "9023", "--in-memory", "--default-bucket", "models"]
