# The harness for GPU machines: `python -m submission` is the entry point; data and results are volumes.
#   docker build -t fewshot-ad .
#   docker run --gpus all -v /path/to/mvtec_loco:/data:ro -v $PWD/runs:/runs fewshot-ad \
#       run --data /data --format loco --shots 1 2 4 8 --out /runs/loco
# Built from a submission bundle, the image is that bundle's VAND evaluation instead: its entry point runs
# `python -m submission evaluate BUNDLE --data /data --out /out` (the kit's loop: k 1 2 4 8, seeds 42 0 1234,
# 256 px, batches of 128) and writes the kit's metrics.csv and results.json into /out. Arguments after the
# image name are added to that command (e.g. --categories juice_bottle --shots 1 2); /out must be writable
# by uid 1000 (or pass --user). The bundle's checksums are checked at build time.
#   docker build --build-arg BUNDLE=dist/<run>__<variant>.tar.gz -t fewshot-ad:<variant> .
#   docker run --gpus all --network none -v /path/to/mvtec_loco:/data:ro -v $PWD/out:/out fewshot-ad:<variant>
# The base image is a build argument so the same file builds anywhere (bench/image_test.sh builds it
# on a debootstrapped Debian base). pip installs torch 2.14.1 from PyPI, which is a CUDA build on x86_64.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# a bare Debian base has no Python: install bookworm's (3.11)
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 1000 harness \
    && mkdir -p /out && chown harness:harness /out

WORKDIR /opt/harness
COPY pyproject.toml README.md ./
COPY submission submission
COPY methods methods
COPY leaderboard leaderboard
COPY metrics metrics
COPY runfolder runfolder
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

ENV PATH=/opt/venv/bin:$PATH \
    FEWSHOT_AD_CACHE=/home/harness/.cache/fewshot_ad \
    PYTHONUNBUFFERED=1

# The optional bundle comes last so every bundle image reuses the layers above. Without BUNDLE, COPY takes
# pyproject.toml as a stand-in (COPY needs a source) and the RUN drops it again.
ARG BUNDLE=
COPY ${BUNDLE:-pyproject.toml} /opt/bundle/bundle.tar.gz
RUN if [ -n "$BUNDLE" ]; then \
        check=$(mktemp -d) \
        && python -c "import sys; from pathlib import Path; from submission.packaging import unpack_checked; \
unpack_checked(Path(sys.argv[1]), Path(sys.argv[2]))" /opt/bundle/bundle.tar.gz "$check" \
        && rm -rf "$check"; \
    else rm -rf /opt/bundle; fi
ENV FEWSHOT_AD_BUNDLE=${BUNDLE:+/opt/bundle/bundle.tar.gz}

USER harness
VOLUME ["/data", "/runs", "/out"]
WORKDIR /runs
# With a bundle: its kit evaluation (extra arguments are added). Without: the harness CLI (default `methods`).
ENTRYPOINT ["/bin/sh", "-c", "if [ -n \"$FEWSHOT_AD_BUNDLE\" ]; then exec python -m submission evaluate \"$FEWSHOT_AD_BUNDLE\" --data /data --out /out \"$@\"; fi; [ \"$#\" -gt 0 ] || set -- methods; exec python -m submission \"$@\"", "fewshot-ad"]
CMD []
