# The ridestream app image: the backend and every service run from it (`ridestream …`).
# Slim and non-root (uid 10001, the uid deploy/k8s runs it as); the shipped models' trees are
# compiled at build time; the container's health is the service's /healthz.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# gcc compiles the models' trees to native code (shared/ml/compiled.py): at build time for the
# shipped models, and in a running replica for a version rolled out later (scikit-learn serves
# meanwhile). Without it every model stays on scikit-learn.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home ridestream

COPY pyproject.toml constraints.txt README.md ./
COPY shared ./shared
COPY producer ./producer
COPY consumers ./consumers
COPY training ./training
COPY ridestream ./ridestream
COPY broker ./broker
COPY data ./data
COPY schemas ./schemas
COPY models ./models
# editable, so the shipped data, schemas and models are found beside the code; then the shipped
# models' trees are compiled into .ridestream/compiled (Kubernetes copies them into the pod's
# emptyDir cache). The runtime user owns only what ridestream writes: the state folder, the model
# store (`train` under Compose) and reports/; the code stays root's
RUN pip install --no-cache-dir -c constraints.txt -e . \
    && python -c "from shared.ml.artifacts import MODEL_NAMES, load_model; from shared.kafka.settings import Settings; \
[load_model(n).accelerate(Settings().compiled_dir) for n in MODEL_NAMES]" \
    && ls .ridestream/compiled/* > /dev/null \
    && mkdir -p reports && chown -R 10001:10001 /app/.ridestream /app/models /app/reports
USER 10001

# a service with RIDESTREAM_METRICS_PORT set answers /healthz there (the consume loop's
# heartbeat); a command that serves no HTTP (produce, topics create…) has nothing to check
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, sys, urllib.request; p = os.environ.get('RIDESTREAM_METRICS_PORT', '0'); \
sys.exit(0) if p == '0' else urllib.request.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"

ENTRYPOINT ["ridestream"]
CMD ["--help"]
