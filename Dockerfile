# engagement-monitor: one image for every subcommand (worker, simulate, produce, ...).
#   docker build -t engagement-monitor .
#   docker run --rm engagement-monitor --help
# deploy/docker-compose.yml builds it for the worker and the simulator.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Only what the distribution needs (.dockerignore keeps the rest out of the context);
# constraints.txt pins the dependency versions the project is tested with.
COPY pyproject.toml README.md constraints.txt ./
COPY streams ./streams
COPY agents ./agents
COPY commands ./commands
RUN pip install -c constraints.txt . \
 && rm -rf /src/build

# Unprivileged user; worker state (RocksDB tables) in a volume-friendly folder.
RUN useradd --system --create-home --home-dir /home/app --uid 10001 app \
 && mkdir -p /var/lib/engagement-monitor \
 && chown app /var/lib/engagement-monitor
USER app
WORKDIR /home/app
ENV EM_DATA_DIR=/var/lib/engagement-monitor/worker

# /metrics and the JSON API of the worker.
EXPOSE 6066
ENTRYPOINT ["engagement-monitor"]
CMD ["worker"]
