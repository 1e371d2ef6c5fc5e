# The harness for GPU machines: `python -m submission` is the entry point; data and results are volumes.
#   docker build -t fewshot-ad .
#   docker run --gpus all -v /path/to/mvtec_loco:/data:ro -v $PWD/runs:/runs fewshot-ad \
#       run --data /data --format loco --shots 1 2 4 8 --out /runs/loco
# The base image is a build argument so the same file builds anywhere (bench/image_test.sh builds it
# on a debootstrapped Debian base). pip installs torch 2.14.1 from PyPI, which is a CUDA build on x86_64.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# a bare Debian base has no Python: install bookworm's (3.11)
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 1000 harness

WORKDIR /opt/harness
COPY pyproject.toml README.md ./
COPY submission submission
COPY methods methods
COPY leaderboard leaderboard
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

ENV PATH=/opt/venv/bin:$PATH \
    FEWSHOT_AD_CACHE=/home/harness/.cache/fewshot_ad \
    PYTHONUNBUFFERED=1
USER harness
VOLUME ["/data", "/runs"]
WORKDIR /runs
ENTRYPOINT ["python", "-m", "submission"]
CMD ["methods"]
