# voxline: the service on its embedded default (no network needed at run time).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS=-DGGML_NATIVE=OFF

# build-essential and cmake: llama.cpp compiles from source; libsndfile1: audio
# files; espeak-ng: the light fallback voice.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake libgomp1 libsndfile1 espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY voxline ./voxline
RUN pip install --no-cache-dir ".[fast,embedded]"

RUN useradd --system --create-home voxline
USER voxline
# Join and verify the embedded models once, at build time, into the image.
RUN python -c "from voxline.providers.models import resolve; [resolve(m) for m in ('whisper-tiny.en', 'piper-joe-medium', 'qwen2.5-coder-0.5b-instruct-q4_k_m')]"

EXPOSE 8080
# Bound beyond loopback, voxline refuses to start without credentials: run with
#   -e VOXLINE_API_TOKENS=...   (or VOXLINE_JWT_PUBLIC_KEY=...)
ENTRYPOINT ["voxline"]
CMD ["serve", "--host", "0.0.0.0", "--http-port", "8080"]
