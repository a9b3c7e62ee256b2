# syntax=docker/dockerfile:1
# The Trireme engine: the wheel (default config, sample capture and models bundled
# inside it) on Python 3.11. `docker compose up` (compose.yaml) runs it in paper mode
# against the loopback exchange; `docker run --rm trireme` replays the bundled sample.
#
# NOTE: written from Docker's documentation; no Docker engine was available where it
# was written, so this file has not been built yet.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md config.toml ./
COPY engine engine
COPY fsm fsm
COPY hardware hardware
COPY data/sample data/sample
COPY models/onnx models/onnx
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# OpenMP runtime, in case a numeric wheel does not vendor its own.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The capture the loopback exchange serves (the same file as the bundled one).
COPY data/sample /opt/trireme/sample

RUN useradd --create-home --uid 10001 trireme
USER trireme
WORKDIR /home/trireme/work
# numba caches compiled kernels here (site-packages is not writable for this user).
ENV NUMBA_CACHE_DIR=/home/trireme/.cache/numba \
    PYTHONUNBUFFERED=1
# Compile the kernels at build time (a first run otherwise spends 20-45 s on it); the
# replay is also a smoke test of the installed package. Its journal and log go.
RUN trireme > /dev/null && rm -rf runs logs && mkdir runs logs

ENTRYPOINT ["trireme"]
CMD []
