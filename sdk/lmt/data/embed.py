"""Embedding extraction over a folder of images, sharded and resumable, merged into one matrix and an index.

Every image under the folder (sorted by relative path) is embedded with an ``image-feature-extraction`` model
(DINOv2, CLIP, ViT: L2-normalised vectors). The output is ``embeddings.npy`` (or ``embeddings.safetensors``,
tensor ``embeddings``), float32 of shape (N, D), and ``index.json`` naming the image of each row. Runs are sharded
like :mod:`lmt.data.annotate`: ``accelerate launch ... -m lmt.cli data embed`` writes the same bytes as one process.

``batch_size`` trades determinism for speed: with 1 (the default) a vector never depends on which images shared
its batch, so any chunk size gives the same bytes; with more, batches are cut inside each chunk, so equal
``chunk_size`` still gives equal bytes for any process count, but another chunk size may move the last bits
(floating-point sums depend on the batch shape, on GPUs especially).

>>> from lmt.data.embed import embed_folder
>>> # run = embed_folder("photos/", "vectors/", model="dinov2-small", weights="tiny")
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmt.data.sharding import ShardRun, current_process, list_image_files, run_sharded, write_atomic
from lmt.errors import InvalidImageError, InvalidInputError
from lmt.validate import check_positive_int

logger = logging.getLogger(__name__)

EMBED_FORMAT = 1
FORMATS = ("npy", "safetensors")
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class EmbeddingRun:
    """One process's part of an embedding run; ``embeddings``/``index`` are set by the process that merged."""

    out_dir: Path
    shards: ShardRun
    embeddings: Path | None = None
    index: Path | None = None
    count: int = 0
    dim: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "embeddings": str(self.embeddings) if self.embeddings else None,
            "index": str(self.index) if self.index else None, "count": self.count, "dim": self.dim,
            "skipped": self.skipped, "shards": self.shards.to_dict(),
        }


def _vector_text(vector: np.ndarray) -> str:
    """float32 little-endian bytes as base64: exact, and a quarter of the size of decimal JSON."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


class _Embedder:
    """The per-batch work: loads the model on first use, so a resumed run with nothing left loads none."""

    def __init__(self, root: Path, model: Any, options: dict[str, Any]) -> None:
        self.root, self.model, self.options = root, model, options

    def __call__(self, items: Sequence[str]) -> list[dict[str, Any]]:
        from lmt.images import load_image
        from lmt.tasks import pipeline

        if isinstance(self.model, str):
            self.model = pipeline("image-feature-extraction", self.model, **self.options)
        records: list[dict[str, Any]] = []
        images, slots = [], []
        for item in items:
            try:
                images.append(load_image(self.root / item))
            except InvalidImageError as err:
                logger.warning("Skipping %s: %s", item, err.message)
                records.append({"skipped": err.message})
                continue
            slots.append(len(records))
            records.append({})
        if images:
            for slot, embedding in zip(slots, self.model(images), strict=True):
                records[slot] = {"dim": embedding.dim, "vector": _vector_text(embedding.vector)}
        return records


def _matrix_bytes(matrix: np.ndarray, fmt: str, index_name: str) -> bytes:
    if fmt == "safetensors":
        from safetensors.numpy import save

        return save({"embeddings": matrix}, metadata={"index": index_name})
    buffer = io.BytesIO()
    np.save(buffer, matrix, allow_pickle=False)
    return buffer.getvalue()


def embed_folder(
    images: str | Path,
    out: str | Path,
    *,
    model: Any = "dinov2-small",
    weights: str = "real",
    revision: str | None = None,
    device: Any = None,
    batch_size: int = 1,
    chunk_size: int = 256,
    resume: bool = False,
    process_index: int | None = None,
    num_processes: int | None = None,
    file_format: str = "npy",
) -> EmbeddingRun:
    """Embed every image under ``images`` into ``out/embeddings.<file_format>`` + ``out/index.json``.

    ``model`` is a model name (with ``weights``/``revision``) or a ready ``image-feature-extraction`` task object.
    """
    if file_format not in FORMATS:
        raise InvalidInputError(f"file_format must be one of {', '.join(FORMATS)}; got {file_format!r}.",
                                f"file_format 只能是 {'、'.join(FORMATS)} 之一，收到的是 {file_format!r}。")
    batch_size = check_positive_int(batch_size, "batch_size", maximum=1024)
    loaded = getattr(model, "loaded", None)
    spec = ({"name": loaded.name, "weights": loaded.weights, "revision": loaded.revision, "adapter": loaded.adapter}
            if loaded is not None else {"name": str(model), "weights": weights, "revision": revision, "adapter": None})
    # the batch size is in the settings: another batching may change the last bits, so such shards are recomputed
    settings = {"kind": "embed", "format": EMBED_FORMAT, "model": spec, "batch_size": batch_size}
    root, out_dir = Path(images).expanduser(), Path(out).expanduser()
    items = list_image_files(root, exclude=out_dir)
    slot = current_process(process_index, num_processes, device=device)
    options = {"weights": weights, "revision": revision, "device": device if device is not None else slot.device,
               "batch_size": batch_size}
    shards = run_sharded(items, _Embedder(root, model, options), out_dir, settings=settings, chunk_size=chunk_size,
                         batch_size=batch_size, resume=resume, process=slot, description="embed")
    if shards.records is None:
        return EmbeddingRun(out_dir, shards)
    kept = [(item, record) for item, record in shards.records if "skipped" not in record]
    skipped = [{"file_name": item, "reason": record["skipped"]} for item, record in shards.records
               if "skipped" in record]
    dim = kept[0][1]["dim"] if kept else 0
    matrix = np.stack([_vector(record["vector"]) for _, record in kept]) if kept else np.zeros((0, 0), "<f4")
    matrix_path = out_dir / f"embeddings.{file_format}"
    write_atomic(matrix_path, _matrix_bytes(matrix, file_format, INDEX_FILE))
    index = {"model": spec, "dim": dim, "count": len(kept), "normalised": "l2", "file": matrix_path.name,
             "items": [item for item, _ in kept], "skipped": skipped}
    index_path = out_dir / INDEX_FILE
    write_atomic(index_path, json.dumps(index, ensure_ascii=False, indent=1).encode("utf-8"))
    return EmbeddingRun(out_dir, shards, matrix_path, index_path, len(kept), dim, len(skipped))
