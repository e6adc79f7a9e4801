# ACE image: the `ace` command, the API and the Celery workers all run from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# README.md* : pyproject names the README, but the build must not fail without one.
COPY pyproject.toml requirements-runtime.lock README.md* ./
# the exact versions the tests ran with, checked against their hashes
RUN pip install --require-hashes --no-deps -r requirements-runtime.lock
COPY ace_shared ace_shared
COPY ace_workers ace_workers
COPY ace_api ace_api
RUN pip install --no-deps .
# The demo loader, to fill the compose cluster: python deploy/demo_data.py --help
COPY deploy/demo_data.py deploy/

# Run as a plain user. /data/output is where diff files are shared between the API and
# the workers; a fresh named volume mounted there takes this ownership.
RUN useradd --create-home --uid 1000 ace \
    && mkdir -p /data/output /cluster \
    && chown ace:ace /data/output
USER ace

ENV ACE_OUTPUT_DIR=/data/output \
    ACE_CLUSTER_DIR=/cluster

EXPOSE 5000
CMD ["ace", "api", "--host", "0.0.0.0", "--port", "5000"]
