# The ridestream app image: the backend and every service run from it (`ridestream …`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# gcc compiles the models' trees to native code (shared/ml/compiled.py); without it they stay on scikit-learn
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

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
# editable, so the shipped data, schemas and models are found beside the code
# …and the shipped models are compiled here, once, so every container starts on native trees
RUN pip install --no-cache-dir -c constraints.txt -e . \
    && python -c "from shared.ml.artifacts import MODEL_NAMES, load_model; from shared.kafka.settings import Settings; \
[load_model(n).accelerate(Settings().compiled_dir) for n in MODEL_NAMES]" \
    && useradd --create-home ridestream && chown -R ridestream /app
USER ridestream

ENTRYPOINT ["ridestream"]
CMD ["--help"]
