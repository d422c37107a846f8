# The ridestream app image: the backend and every service run from it (`ridestream …`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

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
RUN pip install --no-cache-dir -c constraints.txt -e . \
    && useradd --create-home ridestream && chown -R ridestream /app
USER ridestream

ENTRYPOINT ["ridestream"]
CMD ["--help"]
