"""Smart retail: recognise products against a catalog of reference images, and audit a shelf photo.

Recognition is nearest-neighbour search: every reference image of every SKU is embedded once (DINOv2 or CLIP
image features, :class:`lmt.ImageFeatureExtraction`) into an :class:`lmt.EmbeddingIndex`; a product photo is
embedded the same way and takes the SKU of its most similar reference, or :data:`UNKNOWN` when that similarity
is below the catalog's threshold. The threshold can be calibrated on the catalog itself (leave-one-out, see
:func:`calibrate_threshold`).

Shelf analysis detects products with an open-vocabulary detector (OWLv2, :class:`lmt.ZeroShotObjectDetection`),
recognises each crop, groups boxes into shelf rows, and reports counts, share of shelf, empty gaps and
planogram compliance. Any callable with the task call's signature can stand in for the detector or the embedder
(tests pass ground-truth ones)::

    catalog = build_catalog({"cola": ["cola1.png", "cola2.png"], "tea": ["tea1.png"]}, names={"cola": "可乐"})
    report = analyze_shelf("shelf.jpg", catalog, planogram=Planogram.from_csv("cola,4\\ntea,2"))
    report.counts()  # {"cola": 3, "tea": 2}
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import statistics
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lmt.errors import InvalidImageError, InvalidInputError
from lmt.images import ImageInput, load_image, load_images
from lmt.results import Box, Detection, Detections, Embedding
from lmt.retrieval import EmbeddingIndex
from lmt.validate import check_float_range, check_labels, check_positive_int, check_probability, check_text

logger = logging.getLogger(__name__)

#: Called like :class:`lmt.ZeroShotObjectDetection`: ``detector(image, queries=[...], threshold=...) -> Detections``.
Detector = Callable[..., Detections]
#: Called like :class:`lmt.ImageFeatureExtraction`: ``embedder([images]) -> [Embedding]``.
Embedder = Callable[..., Any]

DEFAULT_EMBEDDER = "dinov2-small"
DEFAULT_DETECTOR = "owlv2-b16"
DEFAULT_QUERY = "a product on a shelf"
#: The SKU of a product whose best similarity is below the catalog's threshold.
UNKNOWN = "unknown"
UNKNOWN_NAME = "未知 / unknown"
#: Used only when a catalog cannot be calibrated (one SKU, or one reference per SKU); reports say so.
DEFAULT_THRESHOLD = 0.5
MIN_BOX_SIDE = 8  # the smallest image the embedders accept (lmt.load_image's min_side)
MAX_REFERENCES = 2000
MAX_PRODUCTS = 300
MAX_PLANOGRAM_LINES = 500
MAX_SKU_CHARS = 100
MAX_ZIP_ENTRIES = 1000
MAX_ZIP_BYTES = 200 * 1024 * 1024  # uncompressed, summed over the images read from one zip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SUMMARY_COLUMNS = ("sku", "name", "count", "share_by_count", "share_by_width", "expected", "missing", "extra",
                   "misplaced", "status")
CATALOG_FORMAT = "lmt-retail-catalog"
CATALOG_VERSION = 1
# Chinese, Japanese and Korean scripts plus full-width forms: CLIP's English text encoder cannot read them.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- catalog -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkuHit:
    """One SKU and how similar a query is to its nearest reference."""

    sku: str
    name: str
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {"sku": self.sku, "name": self.name, "similarity": self.similarity}


@dataclass(frozen=True)
class Recognition:
    """What a product is: ``sku`` is :data:`UNKNOWN` when ``similarity`` is below ``threshold``.

    ``candidates`` are the nearest SKUs (best first, at most three) whatever the threshold.
    """

    sku: str
    name: str
    similarity: float
    threshold: float
    candidates: tuple[SkuHit, ...]

    @property
    def known(self) -> bool:
        return self.sku != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku, "name": self.name, "known": self.known, "similarity": self.similarity,
            "threshold": self.threshold, "candidates": [c.to_dict() for c in self.candidates],
        }


@dataclass(frozen=True)
class Calibration:
    """Leave-one-out similarities of the catalog's references and the threshold that best separates them.

    ``genuine``: each reference against the nearest *other* reference of its own SKU (SKUs with two or more
    references). ``impostor``: each reference against the nearest reference of any other SKU. ``errors`` counts
    genuine similarities below the threshold plus impostor ones at or above it.
    """

    threshold: float
    genuine: tuple[float, ...]
    impostor: tuple[float, ...]
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "errors": self.errors,
            "genuine": list(self.genuine), "impostor": list(self.impostor),
        }


@dataclass(frozen=True)
class Catalog:
    """Reference embeddings of every SKU (``index`` ids are SKUs, one row per reference image).

    ``names`` are display names (Chinese allowed; never fed to a text encoder). ``model``/``weights`` name the
    embedder that built it, so a loaded catalog embeds queries the same way; ``None`` for a custom embedder.
    ``threshold_source`` is "calibrated", "given" or "default".
    """

    index: EmbeddingIndex
    names: dict[str, str]
    threshold: float
    model: str | None = None
    weights: str = "real"
    threshold_source: str = "given"

    @property
    def skus(self) -> list[str]:
        """SKU ids in the order they were added."""
        return list(dict.fromkeys(self.index.ids))

    def name_of(self, sku: str) -> str:
        return UNKNOWN_NAME if sku == UNKNOWN else self.names.get(sku, sku)

    def reference_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sku in self.index.ids:
            counts[sku] = counts.get(sku, 0) + 1
        return counts

    def with_names(self, names: Mapping[str, str]) -> Catalog:
        """The same catalog with some display names replaced (every SKU named must be in the catalog)."""
        return replace(self, names={**self.names, **_check_names(names, self.skus)})

    def with_threshold(self, threshold: float) -> Catalog:
        return replace(self, threshold=_check_threshold(threshold), threshold_source="given")

    def recognize_embeddings(self, embeddings: Sequence[Embedding]) -> list[Recognition]:
        """Recognitions for embeddings already computed with this catalog's embedder."""
        if not embeddings:
            return []
        hits = self.index.search(list(embeddings), top_k=len(self.index))
        return [self._recognition(row) for row in hits]

    def _recognition(self, hits: Sequence[Any]) -> Recognition:
        best: dict[str, float] = {}
        for hit in hits:  # best first: the first hit of a SKU is its nearest reference
            best.setdefault(hit.id, hit.score)
        candidates = tuple(SkuHit(sku, self.name_of(sku), score) for sku, score in list(best.items())[:3])
        top = candidates[0]
        sku = top.sku if top.similarity >= self.threshold else UNKNOWN
        return Recognition(sku, self.name_of(sku), top.similarity, self.threshold, candidates)

    def to_dict(self) -> dict[str, Any]:
        """A summary (no vectors): SKUs with names and reference counts, threshold, embedder."""
        counts = self.reference_counts()
        return {
            "skus": [{"sku": s, "name": self.name_of(s), "references": counts[s]} for s in self.skus],
            "threshold": self.threshold, "threshold_source": self.threshold_source,
            "model": self.model, "weights": self.weights, "dim": self.index.dim,
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``catalog.json`` (names, threshold, embedder) and ``index.npz``/``index.json``; no pickle."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.index.save(folder / "index")
        meta = {
            "format": CATALOG_FORMAT, "version": CATALOG_VERSION, "names": self.names, "threshold": self.threshold,
            "threshold_source": self.threshold_source, "model": self.model, "weights": self.weights,
        }
        (folder / "catalog.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Catalog:
        """A catalog written by :meth:`save`; it recognises exactly as the saved one did."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "catalog.json").read_text(encoding="utf-8"))
            index = EmbeddingIndex.load(folder / "index")
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInputError(
                f"'{folder.name}' is not a readable retail catalog ({type(exc).__name__}). Pass the folder written "
                "by Catalog.save(), holding catalog.json, index.npz and index.json.",
                f"'{folder.name}' 不是可读取的商品库（{type(exc).__name__}）。请传入 Catalog.save() 写出的目录，"
                "其中应有 catalog.json、index.npz 和 index.json。",
            ) from exc
        if not isinstance(meta, dict) or meta.get("format") != CATALOG_FORMAT or meta.get("version") != CATALOG_VERSION:
            raise InvalidInputError(
                f"'{folder.name}/catalog.json' is not a version {CATALOG_VERSION} retail catalog.",
                f"'{folder.name}/catalog.json' 不是第 {CATALOG_VERSION} 版的商品库文件。",
            )
        if len(index.vectors) != len(index.ids) or not index.ids:
            raise InvalidInputError(
                f"'{folder.name}' holds {len(index.vectors)} vectors for {len(index.ids)} SKU ids; save it again.",
                f"'{folder.name}' 中向量数 {len(index.vectors)} 与 SKU 数 {len(index.ids)} 不一致，请重新保存。",
            )
        return cls(
            index=index, names={str(k): str(v) for k, v in meta.get("names", {}).items()},
            threshold=_check_threshold(meta.get("threshold")), model=meta.get("model"),
            weights=meta.get("weights", "real"), threshold_source=meta.get("threshold_source", "given"),
        )


def build_catalog(
    references: Mapping[str, Sequence[ImageInput]],
    *,
    names: Mapping[str, str] | None = None,
    embedder: Embedder | str = DEFAULT_EMBEDDER,
    weights: str = "real",
    threshold: float | None = None,
) -> Catalog:
    """Embed a few reference images per SKU (``{sku: [images]}``) into a :class:`Catalog`.

    ``embedder`` is a model name (built as :class:`lmt.ImageFeatureExtraction` with ``weights``) or a callable
    like it. With ``threshold=None`` the threshold is calibrated (:func:`calibrate_threshold`) when the catalog
    allows it (two SKUs or more, one of them with two references or more), else :data:`DEFAULT_THRESHOLD`.
    """
    skus = _check_references(references)
    display = _check_names(names or {}, skus)
    model, model_weights, embed = _resolve_embedder(embedder, weights)
    ids: list[str] = []
    images: list[Image.Image] = []
    for sku in skus:
        try:
            loaded = load_images(list(references[sku]))
        except InvalidImageError as err:
            raise InvalidImageError(f"SKU '{sku}': {err.message}", f"SKU '{sku}'：{err.message_zh}") from err
        images.extend(loaded)
        ids.extend([sku] * len(loaded))
    index = EmbeddingIndex()
    index.add(_embed_all(embed, images), ids=ids)
    catalog = Catalog(index, {sku: display.get(sku, sku) for sku in skus}, DEFAULT_THRESHOLD, model, model_weights,
                      "default")
    if threshold is not None:
        return catalog.with_threshold(threshold)
    if can_calibrate(catalog):
        return replace(catalog, threshold=calibrate_threshold(catalog).threshold, threshold_source="calibrated")
    logger.warning("catalog cannot be calibrated (needs 2+ SKUs and a SKU with 2+ references); threshold %.2f",
                   DEFAULT_THRESHOLD)
    return catalog


def can_calibrate(catalog: Catalog) -> bool:
    counts = catalog.reference_counts()
    return len(counts) >= 2 and max(counts.values()) >= 2


def calibrate_threshold(catalog: Catalog) -> Calibration:
    """The recognition threshold from leave-one-out similarities of the catalog's own references.

    Each reference is held out and compared with the rest: its similarity to the nearest remaining reference of
    its own SKU is *genuine*, to the nearest reference of another SKU *impostor*. The threshold minimises genuine
    similarities below it plus impostor similarities at or above it; among equally good thresholds it is the
    middle of the widest gap between neighbouring similarities (then the lowest). A catalog of near-duplicate
    references gives an optimistic threshold: add references photographed as the shelf will be.
    """
    if not can_calibrate(catalog):
        raise InvalidInputError(
            "Calibration needs at least two SKUs and at least one SKU with two or more reference images.",
            "阈值校准至少需要两个 SKU，且至少有一个 SKU 有两张或以上参考图。",
        )
    vectors, ids = catalog.index.vectors, np.array(catalog.index.ids)
    similarities = vectors @ vectors.T
    genuine, impostor = [], []
    for i in range(len(ids)):
        same = ids == ids[i]
        same[i] = False
        if same.any():
            genuine.append(float(similarities[i][same].max()))
        impostor.append(float(similarities[i][ids != ids[i]].max()))
    threshold, errors = _best_threshold(genuine, impostor)
    return Calibration(threshold, tuple(genuine), tuple(impostor), errors)


def _best_threshold(genuine: Sequence[float], impostor: Sequence[float]) -> tuple[float, int]:
    values = sorted(set(genuine) | set(impostor))
    if len(values) == 1:
        return values[0], len(impostor)
    best: tuple[int, float, float] | None = None  # (errors, -gap, threshold): the smallest wins
    for low, high in zip(values, values[1:], strict=False):
        threshold = (low + high) / 2
        errors = sum(g < threshold for g in genuine) + sum(m >= threshold for m in impostor)
        key = (errors, -(high - low), threshold)
        if best is None or key < best:
            best = key
    return best[2], best[0]


def recognize(
    image: ImageInput | Sequence[ImageInput], catalog: Catalog, *, embedder: Embedder | None = None
) -> Recognition | list[Recognition]:
    """The SKU (or :data:`UNKNOWN`) of a product photo, or of each photo in a list.

    ``embedder`` defaults to the catalog's own model; pass the callable a custom catalog was built with.
    """
    images = load_images(image)
    embed = embedder if embedder is not None else catalog_embedder(catalog)
    results = catalog.recognize_embeddings(_embed_all(embed, images))
    return results if isinstance(image, (list, tuple)) else results[0]


def catalog_embedder(catalog: Catalog) -> Embedder:
    """The :class:`lmt.ImageFeatureExtraction` the catalog was built with."""
    if not catalog.model:
        raise InvalidInputError(
            "This catalog was built with a custom embedder: pass the same one as embedder=...",
            "该商品库由自定义的嵌入模型构建：请通过 embedder=... 传入同一个模型。",
        )
    from lmt.tasks import ImageFeatureExtraction

    return ImageFeatureExtraction(catalog.model, weights=catalog.weights)


def find_by_text(catalog: Catalog, text: str, *, embedder: Embedder | None = None, top_k: int = 3) -> list[SkuHit]:
    """SKUs ranked by how well their references match an English description (CLIP catalogs only).

    Chinese (and other CJK) text is refused: CLIP's text encoder was trained on English, so it would return
    confident nonsense. The catalog's Chinese names are for display only.
    """
    text = check_text(text, "text", max_chars=200)
    if _CJK.search(text):
        raise InvalidInputError(
            "Text search uses CLIP's English text encoder, which cannot read Chinese, Japanese or Korean text. "
            "Describe the product in English; the catalog's Chinese names are display names only.",
            "文字检索使用 CLIP 的英文文本编码器，无法理解中日韩文字，请用英文描述商品；商品库中的中文名称仅用于显示。",
        )
    top_k = check_positive_int(top_k, "top_k", maximum=100)
    embed = embedder if embedder is not None else catalog_embedder(catalog)
    if not hasattr(embed, "embed_text"):
        raise InvalidInputError(
            "This embedder has no text encoder: build the catalog with a CLIP model (e.g. clip-vit-b32).",
            "该嵌入模型没有文本编码器：请用 CLIP 模型（如 clip-vit-b32）构建商品库。",
        )
    query = embed.embed_text(text)
    best: dict[str, float] = {}
    for hit in catalog.index.search(query, top_k=len(catalog.index)):
        best.setdefault(hit.id, hit.score)
    return [SkuHit(sku, catalog.name_of(sku), score) for sku, score in list(best.items())[:top_k]]


def _resolve_embedder(embedder: Embedder | str, weights: str) -> tuple[str | None, str, Embedder]:
    if isinstance(embedder, str):
        from lmt.tasks import ImageFeatureExtraction

        built = ImageFeatureExtraction(embedder, weights=weights)
        return built.loaded.name, built.loaded.weights, built
    loaded = getattr(embedder, "loaded", None)
    if loaded is not None:  # a real task object: a saved catalog can rebuild it
        return loaded.name, loaded.weights, embedder
    return None, weights, embedder


def _embed_all(embed: Embedder, images: Sequence[Image.Image]) -> list[Embedding]:
    embeddings = embed(list(images))
    if not isinstance(embeddings, list) or len(embeddings) != len(images):
        raise InvalidInputError(
            "The embedder must return one Embedding per image for a list of images.",
            "嵌入模型对一组图片必须为每张图片返回一个 Embedding。",
        )
    return embeddings


def _check_threshold(value: Any) -> float:
    return check_float_range(value, "threshold", -1.0, 1.0)


def check_sku(sku: Any) -> str:
    """A SKU id: non-empty text without control characters, at most 100 characters, not 'unknown'."""
    if not isinstance(sku, str) or not sku.strip() or _CONTROL.search(sku) or len(sku) > MAX_SKU_CHARS:
        raise InvalidInputError(
            f"A SKU id must be 1-{MAX_SKU_CHARS} characters of text on one line; got {sku!r:.60}.",
            f"SKU 编号必须是 1-{MAX_SKU_CHARS} 个字符的单行文本，收到的是 {sku!r:.60}。",
        )
    sku = sku.strip()
    if sku.lower() == UNKNOWN:
        raise InvalidInputError(
            f"'{UNKNOWN}' is reserved for unrecognised products; name the SKU differently.",
            f"'{UNKNOWN}' 保留给无法识别的商品，请换一个 SKU 编号。",
        )
    return sku


def _check_references(references: Any) -> list[str]:
    if not isinstance(references, Mapping) or not references:
        raise InvalidInputError(
            "Give the catalog as {sku: [reference images]} with at least one SKU.",
            "商品库应为 {SKU: [参考图片]} 的形式，且至少有一个 SKU。",
        )
    skus, total = [], 0
    for sku, images in references.items():
        checked = check_sku(sku)
        if checked != sku:
            raise InvalidInputError(f"SKU id {sku!r:.60} has spaces around it.", f"SKU 编号 {sku!r:.60} 首尾有空格。")
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence) or not images:
            raise InvalidInputError(
                f"SKU '{sku}' needs a non-empty list of reference images.", f"SKU '{sku}' 需要非空的参考图片列表。"
            )
        total += len(images)
        skus.append(sku)
    if total > MAX_REFERENCES:
        raise InvalidInputError(
            f"{total} reference images; at most {MAX_REFERENCES} per catalog.",
            f"参考图片共 {total} 张，每个商品库最多 {MAX_REFERENCES} 张。",
        )
    return skus


def _check_names(names: Mapping[str, str], skus: Sequence[str]) -> dict[str, str]:
    if not isinstance(names, Mapping):
        raise InvalidInputError("names must map SKU ids to display names.", "names 必须是 SKU 编号到显示名称的映射。")
    unknown = [sku for sku in names if sku not in skus]
    if unknown:
        raise InvalidInputError(
            f"names gives a name for SKU '{unknown[0]}', which has no reference images.",
            f"names 中的 SKU '{unknown[0]}' 没有参考图片。",
        )
    return {sku: check_text(name, f"name of '{sku}'", max_chars=MAX_SKU_CHARS) for sku, name in names.items()}


# ---- reading catalogs from files ---------------------------------------------------------------------------------
def sku_from_filename(filename: str) -> str:
    """``cola-1.png`` / ``cola_02.jpg`` / ``cola.png`` -> ``cola``: the stem without a trailing number."""
    stem = PurePosixPath(filename.replace("\\", "/")).stem
    match = re.fullmatch(r"(.+?)[-_ ]\d+", stem)
    return check_sku(match.group(1) if match else stem)


def references_from_files(paths: Sequence[str | Path]) -> dict[str, list[str]]:
    """Group image files by the SKU in their names (:func:`sku_from_filename`)."""
    references: dict[str, list[str]] = {}
    for path in paths:
        references.setdefault(sku_from_filename(Path(path).name), []).append(str(path))
    return references


def parse_names(text: str) -> dict[str, str]:
    """``sku,display name`` per line (a ``sku,name`` header is skipped) -> ``{sku: name}``."""
    names: dict[str, str] = {}
    for number, row in _csv_rows(text, "names"):
        if len(row) != 2:
            raise InvalidInputError(
                f"names line {number}: write 'sku,name' (two fields), got {len(row)}.",
                f"名称第 {number} 行：应写成 'sku,名称'（两列），实际有 {len(row)} 列。",
            )
        if number == 1 and [c.lower() for c in row] == ["sku", "name"]:
            continue
        names[check_sku(row[0])] = check_text(row[1], f"name of '{row[0]}'", max_chars=MAX_SKU_CHARS)
    return names


def references_from_zip(path: str | Path) -> tuple[dict[str, list[bytes]], dict[str, str]]:
    """Reference images and names from a zip: ``<sku>/<any>.png`` (the folder names the SKU), or
    ``<sku>-1.png`` at the top level, plus an optional ``names.csv`` (``sku,name`` lines) anywhere.

    Bounded: at most :data:`MAX_ZIP_ENTRIES` entries and :data:`MAX_ZIP_BYTES` uncompressed.
    """
    name = Path(path).name
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [e for e in archive.infolist() if not e.is_dir() and not _ignored(e.filename)]
            if len(entries) > MAX_ZIP_ENTRIES:
                raise InvalidInputError(
                    f"The zip holds {len(entries)} files; at most {MAX_ZIP_ENTRIES} are read.",
                    f"压缩包中有 {len(entries)} 个文件，最多读取 {MAX_ZIP_ENTRIES} 个。",
                )
            if sum(e.file_size for e in entries) > MAX_ZIP_BYTES:
                raise InvalidInputError(
                    f"The zip unpacks to more than {MAX_ZIP_BYTES // 2**20} MiB; send fewer or smaller images.",
                    f"压缩包解压后超过 {MAX_ZIP_BYTES // 2**20} MiB，请减少图片数量或缩小图片。",
                )
            references: dict[str, list[bytes]] = {}
            names: dict[str, str] = {}
            for entry in entries:
                inner = PurePosixPath(entry.filename.replace("\\", "/"))
                if inner.name.lower() == "names.csv":
                    names = parse_names(archive.read(entry).decode("utf-8-sig", errors="replace"))
                elif inner.suffix.lower() in IMAGE_SUFFIXES:
                    sku = check_sku(inner.parent.name) if inner.parent.name else sku_from_filename(inner.name)
                    references.setdefault(sku, []).append(archive.read(entry))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
        raise InvalidInputError(
            f"'{name}' cannot be read as a zip archive ({type(exc).__name__}). Upload a plain .zip of images.",
            f"无法将 '{name}' 读取为 zip 压缩包（{type(exc).__name__}），请上传普通的图片 .zip 文件。",
        ) from exc
    if not references:
        raise InvalidInputError(
            f"'{name}' holds no images ({', '.join(IMAGE_SUFFIXES)}).", f"'{name}' 中没有图片文件。"
        )
    return references, names


def references_from_folder(folder: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The zip layout on disk: ``<folder>/<sku>/<images>`` and an optional ``<folder>/names.csv``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"'{folder.name}' is not a folder.", f"'{folder.name}' 不是目录。")
    references = {
        check_sku(sub.name): sorted(str(p) for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for sub in sorted(folder.iterdir()) if sub.is_dir() and not _ignored(sub.name)
    }
    references = {sku: paths for sku, paths in references.items() if paths}
    if not references:
        raise InvalidInputError(
            f"'{folder.name}' has no <sku>/<image> subfolders.", f"'{folder.name}' 中没有 <SKU>/<图片> 形式的子目录。"
        )
    names_file = folder / "names.csv"
    names = parse_names(names_file.read_text(encoding="utf-8-sig")) if names_file.is_file() else {}
    return references, names


def _ignored(filename: str) -> bool:
    parts = PurePosixPath(filename.replace("\\", "/")).parts
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _csv_rows(text: Any, what: str) -> list[tuple[int, list[str]]]:
    text = check_text(text, what, allow_empty=True, max_chars=100_000)
    rows = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if any(cells):
            rows.append((number, cells))
    if len(rows) > MAX_PLANOGRAM_LINES:
        raise InvalidInputError(
            f"{what} has {len(rows)} lines; at most {MAX_PLANOGRAM_LINES}.",
            f"{what} 共 {len(rows)} 行，最多 {MAX_PLANOGRAM_LINES} 行。",
        )
    return rows


# ---- planogram ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanogramEntry:
    """How many facings of ``sku`` the shelf should hold, and on which row (1 = top), if it matters."""

    sku: str
    count: int
    row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sku": self.sku, "count": self.count, "row": self.row}


@dataclass(frozen=True)
class Planogram:
    entries: tuple[PlanogramEntry, ...]

    @classmethod
    def from_csv(cls, text: str) -> Planogram:
        """``sku,count[,row]`` per line; a header line (``sku,count,row``) is skipped; row 1 is the top shelf."""
        entries: list[PlanogramEntry] = []
        for number, row in _csv_rows(text, "planogram"):
            if number == 1 and row[0].lower() == "sku":
                continue
            if len(row) == 3 and not row[2]:  # "sku,count," : no row given
                row = row[:2]
            if len(row) not in (2, 3):
                raise InvalidInputError(
                    f"planogram line {number}: write 'sku,count' or 'sku,count,row'.",
                    f"陈列计划第 {number} 行：应写成 'sku,数量' 或 'sku,数量,层'。",
                )
            count = _whole(row[1], f"planogram line {number}: count", f"陈列计划第 {number} 行的数量", minimum=0)
            shelf = _whole(row[2], f"planogram line {number}: row", f"陈列计划第 {number} 行的层号", minimum=1) \
                if len(row) == 3 else None
            entries.append(PlanogramEntry(check_sku(row[0]), count, shelf))
        return cls.of(entries)

    @classmethod
    def of(cls, entries: Sequence[PlanogramEntry]) -> Planogram:
        skus = [e.sku for e in entries]
        duplicates = sorted({s for s in skus if skus.count(s) > 1})
        if duplicates:
            raise InvalidInputError(
                f"The planogram lists SKU '{duplicates[0]}' twice; give one line per SKU.",
                f"陈列计划中 SKU '{duplicates[0]}' 出现了两次，每个 SKU 只写一行。",
            )
        if not entries:
            raise InvalidInputError("The planogram is empty.", "陈列计划为空。")
        return cls(tuple(entries))

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries]}


def _whole(text: str, name: str, name_zh: str, *, minimum: int) -> int:
    if not re.fullmatch(r"\d{1,6}", text) or int(text) < minimum:
        raise InvalidInputError(
            f"{name} must be a whole number of at least {minimum}; got {text!r:.30}.",
            f"{name_zh}必须是不小于 {minimum} 的整数，收到的是 {text!r:.30}。",
        )
    return int(text)


# ---- shelf analysis ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShelfProduct:
    """One detected product: its box, shelf row (1 = top) and what it was recognised as."""

    box: Box
    row: int
    detection_score: float
    recognition: Recognition

    @property
    def sku(self) -> str:
        return self.recognition.sku

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    def to_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = self.box
        return {
            "row": self.row, "sku": self.sku, "name": self.recognition.name, "known": self.recognition.known,
            "similarity": self.recognition.similarity, "detection_score": self.detection_score,
            "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
        }


@dataclass(frozen=True)
class ShelfRow:
    """A shelf row: the band (y0..y1) its products occupy, 1 = top."""

    index: int
    y0: float
    y1: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.index, "ymin": self.y0, "ymax": self.y1, "count": self.count}


@dataclass(frozen=True)
class Gap:
    """Free horizontal span on a row, wider than the threshold; ``facings`` = how many median-width products fit."""

    row: int
    x0: float
    x1: float
    y0: float
    y1: float
    facings: int

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def box(self) -> Box:
        return (self.x0, self.y0, self.x1, self.y1)

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "xmin": self.x0, "xmax": self.x1, "ymin": self.y0, "ymax": self.y1,
                "width": self.width, "facings": self.facings}


@dataclass(frozen=True)
class SkuShare:
    """Share of shelf of one SKU: by number of facings and by facing width (pixels summed over its boxes)."""

    sku: str
    name: str
    count: int
    share_by_count: float
    facing_width: float
    share_by_width: float

    def to_dict(self) -> dict[str, Any]:
        return {"sku": self.sku, "name": self.name, "count": self.count, "share_by_count": self.share_by_count,
                "facing_width": self.facing_width, "share_by_width": self.share_by_width}


@dataclass(frozen=True)
class SkuCompliance:
    """Planogram check of one SKU. ``expected`` is 0 for a SKU found on the shelf but not in the planogram."""

    sku: str
    name: str
    expected: int
    found: int
    expected_row: int | None
    misplaced: int

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.found)

    @property
    def extra(self) -> int:
        return max(0, self.found - self.expected)

    @property
    def status(self) -> str:
        if self.missing:
            return "missing"
        if self.extra:
            return "unexpected" if self.expected == 0 else "extra"
        return "misplaced" if self.misplaced else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"sku": self.sku, "name": self.name, "expected": self.expected, "found": self.found,
                "missing": self.missing, "extra": self.extra, "expected_row": self.expected_row,
                "misplaced": self.misplaced, "status": self.status}


@dataclass(frozen=True)
class Misplaced:
    """A facing found on ``row`` although the planogram puts its SKU on ``expected_row``."""

    sku: str
    row: int
    expected_row: int
    box: Box

    def to_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = self.box
        return {"sku": self.sku, "row": self.row, "expected_row": self.expected_row,
                "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}}


@dataclass(frozen=True)
class Compliance:
    """Planogram compliance: per SKU (planogram order, then unexpected SKUs), misplaced facings, unknown products.

    Counts are shelf-wide; a misplaced facing still counts for its SKU. Unknown products are not assigned to any
    SKU, so a shelf with unknown products is never reported compliant.
    """

    skus: tuple[SkuCompliance, ...]
    misplaced: tuple[Misplaced, ...]
    unknown: int

    @property
    def missing(self) -> int:
        return sum(s.missing for s in self.skus)

    @property
    def extra(self) -> int:
        return sum(s.extra for s in self.skus)

    @property
    def compliant(self) -> bool:
        return not (self.missing or self.extra or self.misplaced or self.unknown)

    def to_dict(self) -> dict[str, Any]:
        return {"compliant": self.compliant, "missing": self.missing, "extra": self.extra,
                "misplaced_count": len(self.misplaced), "unknown": self.unknown,
                "skus": [s.to_dict() for s in self.skus], "misplaced": [m.to_dict() for m in self.misplaced]}


@dataclass(frozen=True)
class ShelfReport:
    """Everything :func:`analyze_shelf` found on one shelf photo. ``skipped`` counts boxes under 8 px a side."""

    image_size: tuple[int, int]
    queries: tuple[str, ...]
    products: tuple[ShelfProduct, ...]
    rows: tuple[ShelfRow, ...]
    gaps: tuple[Gap, ...]
    shares: tuple[SkuShare, ...]
    compliance: Compliance | None
    threshold: float
    skipped: int = 0

    def counts(self) -> dict[str, int]:
        """Facings per SKU (``unknown`` included), in the order of :attr:`shares`."""
        return {share.sku: share.count for share in self.shares}

    def to_dict(self) -> dict[str, Any]:
        width, height = self.image_size
        return {
            "width": width, "height": height, "queries": list(self.queries), "threshold": self.threshold,
            "total": len(self.products), "skipped_small_boxes": self.skipped, "counts": self.counts(),
            "shares": [s.to_dict() for s in self.shares], "rows": [r.to_dict() for r in self.rows],
            "gaps": [g.to_dict() for g in self.gaps], "products": [p.to_dict() for p in self.products],
            "compliance": self.compliance.to_dict() if self.compliance else None,
        }

    def products_csv(self) -> str:
        """One line per detected product, left to right on each row, top row first."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["row", "sku", "name", "similarity", "detection_score", "xmin", "ymin", "xmax", "ymax"])
        for p in self.products:
            writer.writerow([p.row, p.sku, p.recognition.name, _fmt(p.recognition.similarity),
                             _fmt(p.detection_score), *(_fmt(v) for v in p.box)])
        return out.getvalue()

    def summary_rows(self) -> list[list[Any]]:
        """One row per SKU found or planned, in :data:`SUMMARY_COLUMNS` order; planogram columns empty without one."""
        checks = {c.sku: c for c in self.compliance.skus} if self.compliance else {}
        shares = {s.sku: s for s in self.shares}
        rows = []
        for sku in [*shares, *(s for s in checks if s not in shares)]:
            share, check = shares.get(sku), checks.get(sku)
            name = share.name if share else check.name
            plan = [check.expected, check.missing, check.extra, check.misplaced, check.status] if check else [""] * 5
            rows.append([sku, name, share.count if share else 0, _fmt(share.share_by_count if share else 0.0),
                         _fmt(share.share_by_width if share else 0.0), *plan])
        return rows

    def summary_csv(self) -> str:
        """:meth:`summary_rows` with a header line."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(SUMMARY_COLUMNS)
        writer.writerows(self.summary_rows())
        return out.getvalue()


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def detect_products(
    image: ImageInput,
    *,
    detector: Detector | str = DEFAULT_DETECTOR,
    weights: str = "real",
    queries: str | Sequence[str] = DEFAULT_QUERY,
    threshold: float = 0.1,
    nms_threshold: float = 0.3,
    max_products: int = MAX_PRODUCTS,
) -> Detections:
    """Product boxes on a shelf photo: open-vocabulary detection, then one NMS across all queries (a product
    matched by two queries is one product), best ``max_products`` kept."""
    import torch

    from lmt.ops import nms

    picture = load_image(image)
    queries = check_labels(queries, what="query", max_count=10)
    threshold = check_probability(threshold, "threshold")
    nms_threshold = check_probability(nms_threshold, "nms_threshold")
    max_products = check_positive_int(max_products, "max_products", maximum=MAX_PRODUCTS)
    detect = _resolve_detector(detector, weights)
    found = [d for d in detect(picture, queries=queries, threshold=threshold) if d.score >= threshold]
    if len(found) > 1:
        keep = nms(torch.tensor([d.box for d in found], dtype=torch.float32),
                   torch.tensor([d.score for d in found], dtype=torch.float32), nms_threshold)
        found = [found[i] for i in keep.tolist()]
    found.sort(key=lambda d: -d.score)
    return Detections(tuple(found[:max_products]), picture.size)


def _resolve_detector(detector: Detector | str, weights: str) -> Detector:
    if isinstance(detector, str):
        from lmt.tasks import ZeroShotObjectDetection

        return ZeroShotObjectDetection(detector, weights=weights)
    return detector


def analyze_shelf(
    image: ImageInput,
    catalog: Catalog,
    *,
    detector: Detector | str = DEFAULT_DETECTOR,
    weights: str = "real",
    embedder: Embedder | None = None,
    queries: str | Sequence[str] = DEFAULT_QUERY,
    detection_threshold: float = 0.1,
    nms_threshold: float = 0.3,
    rows: Sequence[tuple[float, float]] | None = None,
    row_tolerance: float = 0.5,
    gap_factor: float = 1.0,
    shelf_extent: tuple[float, float] | None = None,
    planogram: Planogram | None = None,
) -> ShelfReport:
    """Detect, recognise and audit the products on a shelf photo.

    - ``detector``: a model name (built with ``weights``) or a callable like :class:`lmt.ZeroShotObjectDetection`;
      ``embedder`` defaults to the catalog's model.
    - Rows: ``rows`` gives shelf bands ``[(y0, y1), ...]`` (a product joins the band holding its centre, else the
      nearest); otherwise box centres sorted by height start a new row where two neighbours are more than
      ``row_tolerance`` × the median box height apart.
    - Gaps: on each row, a free span between neighbouring products, or between the shelf's ends and the outer
      products, wider than ``gap_factor`` × the row's median product width. The ends are ``shelf_extent``
      (x0, x1), by default the leftmost and rightmost product on the whole shelf: a row whose end is empty on
      *every* row is then not seen as a gap; pass ``shelf_extent=(0, width)`` when the shelf fills the photo.
    """
    picture = load_image(image)
    queries = check_labels(queries, what="query", max_count=10)
    row_tolerance = check_float_range(row_tolerance, "row_tolerance", 0.05, 10.0)
    gap_factor = check_float_range(gap_factor, "gap_factor", 0.1, 20.0)
    if planogram is not None and not isinstance(planogram, Planogram):
        raise InvalidInputError("planogram must be a Planogram (e.g. Planogram.from_csv(text)).",
                                "planogram 必须是 Planogram 对象（例如 Planogram.from_csv(text)）。")
    if planogram is not None:
        _check_planogram(planogram, catalog)  # before the models run: a typo should not cost a detection pass
    detections = detect_products(picture, detector=detector, weights=weights, queries=queries,
                                 threshold=detection_threshold, nms_threshold=nms_threshold)
    kept = [d for d in detections if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= MIN_BOX_SIDE]
    embed = embedder if embedder is not None else catalog_embedder(catalog)
    crops = [picture.crop(tuple(round(v) for v in d.box)) for d in kept]
    recognitions = catalog.recognize_embeddings(_embed_all(embed, crops)) if crops else []
    row_of, shelf_rows = _assign_rows(kept, rows, row_tolerance, picture.size)
    products = sorted(
        (ShelfProduct(d.box, row_of[i], d.score, recognitions[i]) for i, d in enumerate(kept)),
        key=lambda p: (p.row, p.box[0], p.box[1]),
    )
    extent = _check_extent(shelf_extent, picture.size) if shelf_extent is not None else (
        (min(p.box[0] for p in products), max(p.box[2] for p in products)) if products else (0.0, 0.0))
    gaps = tuple(g for row in shelf_rows for g in _row_gaps(row, [p for p in products if p.row == row.index],
                                                            extent, gap_factor))
    shares = _shares(products, catalog)
    compliance = _compliance(products, planogram, catalog) if planogram is not None else None
    return ShelfReport(picture.size, tuple(queries), tuple(products),
                       shelf_rows, gaps, shares, compliance, catalog.threshold, len(detections) - len(kept))


def _check_extent(extent: Any, size: tuple[int, int]) -> tuple[float, float]:
    if not isinstance(extent, Sequence) or len(extent) != 2:
        raise InvalidInputError("shelf_extent must be (x0, x1) in pixels.", "shelf_extent 必须是像素坐标 (x0, x1)。")
    x0 = check_float_range(extent[0], "shelf_extent x0", 0, size[0])
    x1 = check_float_range(extent[1], "shelf_extent x1", 0, size[0])
    if x0 >= x1:
        raise InvalidInputError("shelf_extent needs x0 < x1.", "shelf_extent 需要 x0 < x1。")
    return x0, x1


def _assign_rows(
    detections: Sequence[Detection], bands: Sequence[tuple[float, float]] | None, tolerance: float,
    size: tuple[int, int],
) -> tuple[list[int], tuple[ShelfRow, ...]]:
    """Row index (1 = top) of each detection, and the rows."""
    centres = [(d.box[1] + d.box[3]) / 2 for d in detections]
    if bands is not None:
        checked = sorted(_check_band(band, size) for band in bands)
        if not checked:
            raise InvalidInputError("rows is empty: give at least one (y0, y1) band.", "rows 为空：请至少给出一层 (y0, y1)。")
        row_of = [1 + min(range(len(checked)), key=lambda r: _band_distance(cy, checked[r])) for cy in centres]
    else:
        row_of = [0] * len(detections)
        if detections:
            order = sorted(range(len(detections)), key=lambda i: centres[i])
            split = tolerance * statistics.median(d.box[3] - d.box[1] for d in detections)
            current = 1
            for previous, index in zip([None, *order], order, strict=False):
                if previous is not None and centres[index] - centres[previous] > split:
                    current += 1
                row_of[index] = current
        checked = []
    count = max([len(checked), *row_of]) if row_of or checked else 0
    shelf_rows = []
    for index in range(1, count + 1):
        members = [d for d, r in zip(detections, row_of, strict=True) if r == index]
        if checked:
            y0, y1 = checked[index - 1]
        else:
            y0, y1 = min(d.box[1] for d in members), max(d.box[3] for d in members)
        shelf_rows.append(ShelfRow(index, y0, y1, len(members)))
    return row_of, tuple(shelf_rows)


def _check_band(band: Any, size: tuple[int, int]) -> tuple[float, float]:
    if not isinstance(band, Sequence) or len(band) != 2:
        raise InvalidInputError("Each row must be a (y0, y1) band in pixels.", "每一层都必须是像素坐标 (y0, y1)。")
    y0 = check_float_range(band[0], "row y0", 0, size[1])
    y1 = check_float_range(band[1], "row y1", 0, size[1])
    if y0 >= y1:
        raise InvalidInputError(f"Row band ({y0:g}, {y1:g}) needs y0 < y1.", f"层 ({y0:g}, {y1:g}) 需要 y0 < y1。")
    return y0, y1


def _band_distance(y: float, band: tuple[float, float]) -> float:
    return 0.0 if band[0] <= y <= band[1] else min(abs(y - band[0]), abs(y - band[1]))


def _row_gaps(
    row: ShelfRow, products: Sequence[ShelfProduct], extent: tuple[float, float], factor: float
) -> list[Gap]:
    if not products:
        return []
    median = statistics.median(p.width for p in products)
    gaps, cursor = [], extent[0]
    for product in sorted(products, key=lambda p: p.box[0]):
        if product.box[0] - cursor > factor * median:
            gaps.append(_gap(row, cursor, product.box[0], median))
        cursor = max(cursor, product.box[2])
    if extent[1] - cursor > factor * median:
        gaps.append(_gap(row, cursor, extent[1], median))
    return gaps


def _gap(row: ShelfRow, x0: float, x1: float, median: float) -> Gap:
    return Gap(row.index, x0, x1, row.y0, row.y1, int(math.floor((x1 - x0) / median)))


def _shares(products: Sequence[ShelfProduct], catalog: Catalog) -> tuple[SkuShare, ...]:
    total = len(products)
    total_width = sum(p.width for p in products)
    by_sku: dict[str, list[ShelfProduct]] = {}
    for product in products:
        by_sku.setdefault(product.sku, []).append(product)
    shares = []
    for sku, items in by_sku.items():
        width = sum(p.width for p in items)
        shares.append(SkuShare(sku, catalog.name_of(sku), len(items), len(items) / total, width,
                               width / total_width if total_width else 0.0))
    return tuple(sorted(shares, key=lambda s: (-s.count, s.sku == UNKNOWN, s.sku)))


def _check_planogram(planogram: Planogram, catalog: Catalog) -> None:
    known = set(catalog.skus)
    missing_from_catalog = [e.sku for e in planogram.entries if e.sku not in known]
    if missing_from_catalog:
        raise InvalidInputError(
            f"The planogram names SKU '{missing_from_catalog[0]}', which is not in the catalog "
            f"({', '.join(catalog.skus[:20])}). Fix the SKU id or add reference images for it.",
            f"陈列计划中的 SKU '{missing_from_catalog[0]}' 不在商品库中（{', '.join(catalog.skus[:20])}），"
            "请修正编号或为它添加参考图。",
        )


def _compliance(products: Sequence[ShelfProduct], planogram: Planogram, catalog: Catalog) -> Compliance:
    _check_planogram(planogram, catalog)
    found: dict[str, int] = {}
    for product in products:
        found[product.sku] = found.get(product.sku, 0) + 1
    expected = {e.sku: e for e in planogram.entries}
    misplaced = tuple(
        Misplaced(p.sku, p.row, expected[p.sku].row, p.box) for p in products
        if p.sku in expected and expected[p.sku].row is not None and p.row != expected[p.sku].row
    )
    checks = [
        SkuCompliance(e.sku, catalog.name_of(e.sku), e.count, found.get(e.sku, 0), e.row,
                      sum(m.sku == e.sku for m in misplaced))
        for e in planogram.entries
    ]
    checks += [
        SkuCompliance(sku, catalog.name_of(sku), 0, count, None, 0)
        for sku, count in sorted(found.items()) if sku not in expected and sku != UNKNOWN
    ]
    return Compliance(tuple(checks), misplaced, found.get(UNKNOWN, 0))


# ---- outputs -----------------------------------------------------------------------------------------------------
def sku_colour(sku: str) -> tuple[int, int, int]:
    """A stable, saturated colour per SKU (grey for unknown)."""
    if sku == UNKNOWN:
        return (128, 128, 128)
    import colorsys
    import zlib

    hue = (zlib.crc32(sku.encode("utf-8")) % 360) / 360
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.9)
    return (round(r * 255), round(g * 255), round(b * 255))


def annotate_shelf(image: ImageInput, report: ShelfReport) -> Image.Image:
    """The shelf photo with product boxes (one colour per SKU, labelled with the row-wise product number and an
    ASCII SKU id) and empty gaps (red, hatched). Chinese names are in the report, not drawn: PIL's default font
    has no CJK glyphs."""
    picture = load_image(image).copy()
    draw = ImageDraw.Draw(picture)
    line = max(1, round(max(picture.size) / 300))
    for gap in report.gaps:
        draw.rectangle(gap.box, outline=(230, 0, 0), width=line)
        for x in range(round(gap.x0), round(gap.x1), max(6, line * 6)):
            draw.line([(x, gap.y1), (min(x + (gap.y1 - gap.y0), gap.x1), gap.y0)], fill=(230, 0, 0), width=1)
    for number, product in enumerate(report.products, start=1):
        colour = sku_colour(product.sku)
        draw.rectangle(product.box, outline=colour, width=line)
        label = f"{number} {product.sku}" if product.sku.isascii() else str(number)
        draw.text((product.box[0] + line + 1, product.box[1] + line + 1), label, fill=colour)
    return picture


def write_report(report: ShelfReport, folder: str | Path, image: ImageInput | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``products.csv``, ``summary.csv`` (and ``annotated.png`` given the image)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "products_csv": folder / "products.csv",
             "summary_csv": folder / "summary.csv"}
    paths["json"].write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
    paths["products_csv"].write_text(report.products_csv(), encoding="utf-8")
    paths["summary_csv"].write_text(report.summary_csv(), encoding="utf-8")
    if image is not None:
        paths["annotated"] = folder / "annotated.png"
        annotate_shelf(image, report).save(paths["annotated"])
    return paths


__all__ = [
    "DEFAULT_DETECTOR", "DEFAULT_EMBEDDER", "DEFAULT_QUERY", "DEFAULT_THRESHOLD", "SUMMARY_COLUMNS", "UNKNOWN",
    "Calibration", "Catalog", "Compliance", "Gap", "Misplaced", "Planogram", "PlanogramEntry", "Recognition",
    "ShelfProduct", "ShelfReport", "ShelfRow", "SkuCompliance", "SkuHit", "SkuShare", "analyze_shelf",
    "annotate_shelf", "build_catalog", "calibrate_threshold", "can_calibrate", "catalog_embedder", "check_sku",
    "detect_products", "find_by_text", "parse_names", "recognize", "references_from_files", "references_from_folder",
    "references_from_zip", "sku_from_filename", "write_report",
]
