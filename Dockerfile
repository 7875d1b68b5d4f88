# syntax=docker/dockerfile:1
# One image for every kdstream service (processor, teacher, topics, api); the sub-command is
# the container's command: `docker run kdstream:0.1.0 processor --help`.
#
# Size: torch dominates. PyPI's default Linux x86_64 torch wheel pulls the CUDA libraries
# (torch ~1.2 GB + nvidia-* ~3 GB installed); the teacher trains on CPU here, so the CPU-only
# wheel from PyTorch's own index is installed first (a few hundred MB) and `pip install .`
# then finds torch already satisfied. Build with --build-arg TORCH_INDEX_URL=https://pypi.org/simple
# to get the CUDA build instead.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Its own layer: source edits do not re-download torch. Same bounds as pyproject.toml.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.2,<3"
# A C compiler for the student's compiled step (setup.py); only the build stage has it, the
# runtime stage gets the built extension inside /opt/venv.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY kdstream ./kdstream
COPY student ./student
COPY teacher ./teacher
COPY online ./online
COPY stream ./stream
COPY replay ./replay
# A regular (not editable) install: the runtime stage copies only /opt/venv, not /src.
# The import check fails the build if the compiled step did not build (it is optional to pip).
RUN pip install . && kdstream --help > /dev/null \
    && python -c "import kdstream.student._kernel"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# Non-root; /data holds the teacher's models and checkpoints (KDSTREAM_STATE_DIR). A named
# volume mounted there starts with this ownership, so the user can write it.
RUN groupadd --system --gid 10001 kdstream \
    && useradd --system --uid 10001 --gid kdstream --home-dir /home/kdstream --create-home \
        --shell /usr/sbin/nologin kdstream \
    && mkdir -p /data/state \
    && chown -R kdstream:kdstream /data
COPY --from=build /opt/venv /opt/venv
USER kdstream
WORKDIR /data
ENV KDSTREAM_STATE_DIR=/data/state
EXPOSE 8000
ENTRYPOINT ["kdstream"]
CMD ["--help"]
