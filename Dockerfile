# voxline: the service on its embedded default (no network needed at run time).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS=-DGGML_NATIVE=OFF

# build-essential and cmake: llama.cpp compiles from source; libsndfile1: audio
# files; espeak-ng: the light fallback voice.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake libsndfile1 espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY voxline ./voxline
RUN pip install --no-cache-dir ".[fast]"

RUN useradd --system --create-home voxline
USER voxline

ENTRYPOINT ["voxline"]
CMD ["--help"]
