# One image for all four of our services (torchserve, gateway, labeler, trainer); docker-compose.yml
# picks the command. Versions come from requirements.txt, the same pins as the venv.

# Wheels for a build without PyPI: empty here, so a normal build reads PyPI and the PyTorch CPU
# index. Pass a folder of wheels in its place with `--build-context wheels=DIR --build-arg
# OFFLINE=1` (compose: build.additional_contexts and args, as tests/compose/ does).
FROM scratch AS wheels

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/app/.cache/huggingface

# TorchServe's frontend is Java: a headless JRE 17 (Debian bookworm).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

WORKDIR /app

# torch==2.13.0 is taken from the CPU index (the PyPI wheel would pull CUDA). The same layer drops
# what torch ships for building and testing C++ (headers, CMake files, test binaries, protoc):
# about 200 MB that nothing here runs.
COPY requirements.txt ./
ARG OFFLINE=
RUN --mount=type=bind,from=wheels,target=/wheels \
    pip install ${OFFLINE:+--no-index} --find-links /wheels \
        --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt \
 && torch=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch \
 && rm -rf "$torch/test" "$torch/include" "$torch/share/cmake" \
 && find "$torch/bin" -mindepth 1 -maxdepth 1 ! -name torch_shm_manager -exec rm -rf {} +

COPY pyproject.toml ./
COPY protos ./protos
COPY foodcal ./foodcal
COPY model_store ./model_store
COPY gateway ./gateway
COPY labeler ./labeler
COPY trainer ./trainer

# Generated gRPC code (foodcal/v1 and foodcal/torchserve are not in git).
RUN python -m foodcal.ops.codegen

# A non-root user; the directories the named volumes mount on are created here so that new
# volumes start owned by it.
RUN useradd --uid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin foodcal \
 && mkdir -p data uploads models run model_store/mar model_store/checkpoints .cache/huggingface \
 && chown -R foodcal:foodcal data uploads models run model_store/mar model_store/checkpoints .cache
USER foodcal

EXPOSE 50051 50052 50053
CMD ["python", "-m", "gateway"]
