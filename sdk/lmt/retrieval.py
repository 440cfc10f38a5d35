"""An in-memory embedding index: add normalised vectors with ids, search by cosine similarity, save and load."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmt.errors import InvalidInputError
from lmt.results import Embedding, SearchHit
from lmt.validate import check_positive_int


def _as_matrix(vectors: np.ndarray | Embedding | Sequence[Embedding]) -> np.ndarray:
    if isinstance(vectors, Embedding):
        vectors = [vectors]
    if isinstance(vectors, (list, tuple)):
        vectors = np.stack([v.vector if isinstance(v, Embedding) else np.asarray(v) for v in vectors])
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None]
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise InvalidInputError(
            f"Embeddings must be a finite (n, dim) matrix; got shape {matrix.shape}.",
            f"嵌入向量必须是有限值的 (n, dim) 矩阵，收到的形状为 {matrix.shape}。",
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


class EmbeddingIndex:
    """Vectors with ids; ``search`` returns the ``top_k`` most similar by cosine similarity.

    >>> index = EmbeddingIndex()
    >>> index.add(np.eye(3), ids=["x", "y", "z"])
    >>> index.search(np.array([0.0, 1.0, 0.1]), top_k=1)[0].id
    'y'
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.vectors = np.zeros((0, dim or 0), dtype=np.float32)
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, vectors: np.ndarray | Embedding | Sequence[Embedding], ids: Sequence[str] | None = None) -> None:
        matrix = _as_matrix(vectors)
        if self.dim is None or len(self) == 0:
            self.dim = matrix.shape[1]
            self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        if matrix.shape[1] != self.dim:
            raise InvalidInputError(
                f"Embedding dimension {matrix.shape[1]} does not match the index's {self.dim}: embed the gallery "
                "and the queries with the same model.",
                f"嵌入维度 {matrix.shape[1]} 与索引的 {self.dim} 不一致：图库和查询必须用同一个模型嵌入。",
            )
        new_ids = [str(i) for i in ids] if ids is not None else [str(len(self) + i) for i in range(len(matrix))]
        if len(new_ids) != len(matrix):
            raise InvalidInputError(
                f"{len(new_ids)} ids for {len(matrix)} vectors.", f"{len(matrix)} 个向量却给了 {len(new_ids)} 个 id。"
            )
        self.vectors = np.concatenate([self.vectors, matrix])
        self.ids.extend(new_ids)

    def search(
        self, query: np.ndarray | Embedding | Sequence[Embedding], top_k: int = 5
    ) -> list[SearchHit] | list[list[SearchHit]]:
        """Best ``top_k`` hits for one query (a list of hits) or for several (a list of lists)."""
        top_k = check_positive_int(top_k, "top_k")
        if len(self) == 0:
            raise InvalidInputError(
                "The gallery is empty: add images before searching.", "图库为空：请先添加图像再检索。"
            )
        single = isinstance(query, Embedding) or (isinstance(query, np.ndarray) and query.ndim == 1)
        queries = _as_matrix(query)
        if queries.shape[1] != self.dim:
            raise InvalidInputError(
                f"Query dimension {queries.shape[1]} does not match the index's {self.dim}: use the same model.",
                f"查询维度 {queries.shape[1]} 与索引的 {self.dim} 不一致：请使用同一个模型。",
            )
        similarities = queries @ self.vectors.T
        k = min(top_k, len(self))
        results = []
        for row in similarities:
            order = np.argsort(-row, kind="stable")[:k]
            results.append([SearchHit(int(i), self.ids[i], float(row[i])) for i in order])
        return results[0] if single else results

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` (vectors) and ``<path>.json`` (ids); returns the npz path."""
        path = Path(path)
        np.savez(path.with_suffix(".npz"), vectors=self.vectors)
        path.with_suffix(".json").write_text(json.dumps({"ids": self.ids, "dim": self.dim}, ensure_ascii=False))
        return path.with_suffix(".npz")

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingIndex:
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        index = cls(meta["dim"])
        index.vectors = np.load(path.with_suffix(".npz"))["vectors"].astype(np.float32)
        index.ids = list(meta["ids"])
        return index
