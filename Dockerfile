# syntax=docker/dockerfile:1
# Two images from one file (docker compose -f docker-compose.gpu.yml build builds both):
#   api    — CPU only: FastAPI + the CPU torch wheel (the API never computes)
#            docker build --target api -t avatar-api:0.1.0 .
#   worker — the GPU worker: CUDA torch (PyPI's linux wheel bundles the CUDA runtime; the driver
#            comes from the host), NVIDIA EGL for rendering on the GPU (OSMesa as the fallback),
#            the weights and Anny's cache placed at build time so a container starts without network
#            docker build --target worker -t avatar-worker:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS source
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY inference ./inference
COPY service ./service
COPY gpu_worker.py ./
COPY weights/README.md ./weights/README.md

FROM source AS api
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu -c constraints.txt torch \
    && pip install --no-cache-dir -c constraints.txt .
ENV HOST=0.0.0.0
EXPOSE 8000
CMD ["avatar", "serve"]

FROM source AS worker
# glvnd's libEGL dispatches to NVIDIA's libEGL_nvidia.so.0, which the NVIDIA container toolkit
# mounts from the host driver when NVIDIA_DRIVER_CAPABILITIES has 'graphics'; the vendor file
# tells glvnd to load it. libosmesa6: the CPU fallback when EGL cannot start.
RUN apt-get update && apt-get install -y --no-install-recommends \
        libglvnd0 libegl1 libgl1 libgles2 libosmesa6 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/share/glvnd/egl_vendor.d \
    && printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}\n' \
        > /usr/share/glvnd/egl_vendor.d/10_nvidia.json
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    AVATAR_WEIGHTS_DIR=/app/weights \
    ANNY_CACHE_DIR=/app/weights/anny \
    PYOPENGL_PLATFORM=egl \
    YOLO_OFFLINE=1
RUN pip install --no-cache-dir -c constraints.txt . \
    && avatar weights fetch && avatar weights check
CMD ["avatar", "worker", "--gpu", "0"]
