# One image for all four of our services (torchserve, gateway, labeler, trainer); docker-compose.yml
# picks the command. Versions come from requirements.txt, the same pins as the venv.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/app/.cache/huggingface

# TorchServe's frontend is Java: a headless JRE 17 (Debian bookworm).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch==2.13.0 is taken from the CPU index (the PyPI wheel would pull CUDA).
COPY requirements.txt ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY pyproject.toml ./
COPY protos ./protos
COPY foodcal ./foodcal
COPY model_store ./model_store
COPY gateway ./gateway
COPY labeler ./labeler
COPY trainer ./trainer

# Generated gRPC code (foodcal/v1 and foodcal/torchserve are not in git).
RUN python -m foodcal.codegen

# A non-root user; the directories the named volumes mount on are created here so that new
# volumes start owned by it.
RUN useradd --system --uid 10001 --home-dir /app --no-create-home foodcal \
 && mkdir -p data uploads models run model_store/mar model_store/checkpoints .cache/huggingface \
 && chown -R foodcal:foodcal data uploads models run model_store/mar model_store/checkpoints .cache
USER foodcal

EXPOSE 50051 50052 50053
CMD ["python", "-m", "gateway"]
