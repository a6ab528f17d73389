# korag worker / CLI image. CPU torch by default; the GPU override builds with a CUDA torch.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models \
    KORAG_DATA_DIR=/data \
    KORAG_BLOB_DIR=/blobs

RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 tesseract-ocr tesseract-ocr-kor && rm -rf /var/lib/apt/lists/*
RUN pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY korag ./korag
COPY ingest ./ingest
COPY retrieval ./retrieval
COPY workers ./workers
COPY api ./api
RUN pip install .

RUN useradd --create-home --uid 1000 korag && mkdir -p /data /blobs /models && chown korag /data /blobs /models
USER korag
ENTRYPOINT ["korag"]
CMD ["worker"]
