# One image for the API and the GPU worker. Build: docker compose -f docker-compose.gpu.yml build
FROM python:3.11-slim

# EGL renders offscreen on the GPU; OSMesa is the CPU fallback
RUN apt-get update && apt-get install -y --no-install-recommends libegl1 libgl1 libosmesa6 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY inference ./inference
COPY service ./service
COPY gpu_worker.py ./
COPY weights/README.md ./weights/README.md
# torch from PyPI is the CUDA build here (the image runs on a GPU host)
RUN pip install --no-cache-dir . \
    && AVATAR_WEIGHTS_DIR=/app/weights avatar weights fetch

ENV AVATAR_WEIGHTS_DIR=/app/weights \
    PYOPENGL_PLATFORM=egl \
    HOST=0.0.0.0
EXPOSE 8000
CMD ["avatar", "serve"]
