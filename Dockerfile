# taa's training image: `taa train RECIPE` on the CPU or on NVIDIA GPUs, as a Vertex AI
# custom training job runs it (docs/vertex.md).
#
#   docker build -t taa:cpu .                                  # CPU wheels of torch, the smaller image
#   docker build --build-arg VARIANT=cuda -t taa:cuda .        # torch's CUDA wheels (they bring CUDA's libraries)
#   docker run --rm taa:cpu copy --tracking none               # the image's command is `taa train`
#
# BASE is the image to start from: Python 3.10 or newer (python:3.12-slim), or an image
# without Python that apt-get can add it to (nvidia/cuda:*-runtime-ubuntu24.04), or one
# that already holds torch 2.13 (a pytorch/pytorch image), whose torch is then kept.
ARG BASE=python:3.12-slim
FROM ${BASE}

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.*
# taa's optional dependencies to add: eval (sacreBLEU, the training curves' matplotlib),
# tracking (TensorBoard's event files, which the job spec asks for, and MLflow), hf
ARG EXTRAS=eval,tracking

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/taa/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python, where the base has none (the nvidia/cuda images).
# hadolint ignore=DL3008
RUN if ! command -v python3 > /dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# One virtual environment for taa; it sees the base's packages, so a base's torch is used.
RUN python3 -m venv --system-site-packages /opt/taa

# torch first: the CPU variant from PyTorch's CPU wheels, the CUDA variant from PyPI.
RUN case "${VARIANT}" in \
        cpu) export PIP_INDEX_URL=https://download.pytorch.org/whl/cpu ;; \
        cuda) ;; \
        *) echo "VARIANT is cpu or cuda, not ${VARIANT}" >&2; exit 1 ;; \
    esac \
    && pip install "torch==${TORCH_VERSION}"

# taa itself, with the built-in recipes (the job names one: taa vertex-job RECIPE).
WORKDIR /build
COPY pyproject.toml README.md ./
COPY recipes ./recipes
COPY src ./src
RUN pip install "./[${EXTRAS}]" && taa --version

# Train as an ordinary user, in its home folder (the data and tokenizer caches go there);
# a number of its own, since some bases (ubuntu) already have a user 1000.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin taa
USER 10001:10001
WORKDIR /home/taa

ENTRYPOINT ["taa", "train"]
