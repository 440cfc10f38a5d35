"""Dataset validation: find what would quietly spoil a training run, report it, write a cleaned manifest.

Checks (thresholds are the keyword defaults of :func:`validate_dataset`):

- ``corrupt``: the file cannot be decoded, or is truncated (PIL fails to load every pixel).
- ``duplicate``: byte-identical files (SHA-256) within one split.
- ``near_duplicate``: perceptual hashes (a 64-bit pHash: DCT of a 32x32 grey image, 8x8 low frequencies
  against their median) within ``near_distance`` bits (default 8 of 64) that are not byte-identical. A
  resized, re-encoded or slightly brightened copy lands within a few bits; unrelated images near 32.
- ``leak``: the same image (exact or near) in two splits, e.g. train and val.
- ``tiny``: the shorter side is below ``min_side`` pixels (default 16).
- ``odd_mode``: a pixel mode other than RGB, L or RGBA (CMYK, I;16, P with or without transparency ...):
  these convert to RGB in ways that are easy to get wrong (inverted CMYK, clipped 16-bit).
- ``class_typo``: two class names that differ only in case/spacing/underscores, or by one edit
  (insertion, deletion, substitution or swap of neighbours) when both have at least 3 characters, or by two
  edits when both have at least 8. "cat" and "cta" are flagged; "0" and "1" are not.
- ``imbalance``: the largest class has more than ``imbalance_ratio`` (default 5.0) times the images of the
  smallest, within a split.

>>> from lmt.data.validate import validate_dataset, write_report
>>> # report = validate_dataset("data/digits", splits={"val": "data/digits-val"})
>>> # write_report(report, "validation/")   # report.md, class_counts.png, image_sizes.png
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError

logger = logging.getLogger(__name__)

KINDS = ("corrupt", "duplicate", "near_duplicate", "leak", "tiny", "odd_mode", "class_typo", "imbalance")
USUAL_MODES = ("RGB", "L", "RGBA")


@dataclass(frozen=True)
class ImageInfo:
    """What one image file is: where it is, its split and label, its hashes, size and mode (or its error)."""

    path: str
    split: str
    label: str
    sha256: str
    width: int = 0
    height: int = 0
    mode: str = ""
    phash: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "split": self.split, "label": self.label, "sha256": self.sha256,
                "width": self.width, "height": self.height, "mode": self.mode,
                "phash": None if self.phash is None else f"{self.phash:016x}", "error": self.error}


@dataclass(frozen=True)
class Finding:
    """One defect: its kind, the image paths (or class names) involved, and a short explanation."""

    kind: str
    items: tuple[str, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "items": list(self.items), "detail": self.detail}


@dataclass(frozen=True)
class ValidationReport:
    """Every image inspected, every finding, and the thresholds used."""

    images: tuple[ImageInfo, ...]
    findings: tuple[Finding, ...]
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def counts(self) -> dict[str, int]:
        """How many findings of each kind (every kind listed, zeros included)."""
        counter = Counter(f.kind for f in self.findings)
        return {kind: counter.get(kind, 0) for kind in KINDS}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts(), "thresholds": dict(self.thresholds),
                "findings": [f.to_dict() for f in self.findings], "images": [i.to_dict() for i in self.images]}


def _error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Dataset validation: {message}", f"数据校验：{message_zh}")


# ---- per-image inspection -----------------------------------------------------------------------------------------
def _dct_matrix(size: int) -> Any:
    import numpy as np

    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def perceptual_hash(image: Any) -> int:
    """64-bit pHash of a PIL image: grey 32x32, 2-D DCT, the 8x8 lowest frequencies above their median."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(image.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64)
    dct = _dct_matrix(32)
    low = (dct @ grey @ dct.T)[:8, :8].flatten()
    # The DC term only measures overall brightness; leaving it out of the median keeps brightened copies close.
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def inspect_image(path: str, split: str, label: str) -> ImageInfo:
    """Hash, decode fully (a truncated file fails here) and measure one image; never raises for a bad file."""
    from PIL import Image, UnidentifiedImageError

    data = Path(path).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "P" and "transparency" in image.info:
                mode = "P+transparency"
            return ImageInfo(path, split, label, sha, image.width, image.height, mode, perceptual_hash(image))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # PIL reports truncation as OSError and some broken headers as SyntaxError/ValueError.
        return ImageInfo(path, split, label, sha, error=f"{type(exc).__name__}: {exc}")


# ---- checks over the whole set ------------------------------------------------------------------------------------
def _duplicate_findings(images: Sequence[ImageInfo]) -> list[Finding]:
    by_hash: dict[str, list[ImageInfo]] = defaultdict(list)
    for info in images:
        by_hash[info.sha256].append(info)
    findings = []
    for group in by_hash.values():
        splits = sorted({i.split for i in group})
        for split in splits:
            same = [i.path for i in group if i.split == split]
            if len(same) > 1:
                findings.append(Finding("duplicate", tuple(same), f"{len(same)} byte-identical files in {split}"))
        if len(splits) > 1:
            findings.append(Finding("leak", tuple(i.path for i in group),
                                    f"the same file is in {' and '.join(splits)} (exact copy)"))
    return findings


def _hamming_pairs(hashes: Sequence[int], limit: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair i < j within ``limit`` bits."""
    import numpy as np

    values = np.array(hashes, dtype=np.uint64)
    pairs = []
    for i in range(len(values) - 1):
        distances = np.bitwise_count(values[i + 1:] ^ values[i])
        for offset in np.nonzero(distances <= limit)[0]:
            pairs.append((i, i + 1 + int(offset), int(distances[offset])))
    return pairs


def _near_duplicate_findings(images: Sequence[ImageInfo], near_distance: int) -> list[Finding]:
    decoded = [i for i in images if i.phash is not None]
    findings = []
    for i, j, distance in _hamming_pairs([i.phash for i in decoded], near_distance):
        a, b = decoded[i], decoded[j]
        if a.sha256 == b.sha256:
            continue  # exact copies are reported as duplicate/leak already
        if a.split == b.split:
            findings.append(Finding("near_duplicate", (a.path, b.path),
                                    f"perceptual hashes {distance} bits apart in {a.split}"))
        else:
            findings.append(Finding("leak", (a.path, b.path),
                                    f"near-identical images in {a.split} and {b.split} ({distance} bits apart)"))
    return findings


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions, swaps of neighbours."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[len(a)][len(b)]


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch not in " _-")


def similar_class_names(a: str, b: str) -> bool:
    """True when two distinct class names look like one name typed twice (see the module docstring)."""
    if a == b:
        return False
    na, nb = _normalise(a), _normalise(b)
    if na == nb:
        return True
    shorter = min(len(na), len(nb))
    distance = _edit_distance(na, nb)
    return (shorter >= 3 and distance <= 1) or (shorter >= 8 and distance <= 2)


def _class_findings(images: Sequence[ImageInfo], imbalance_ratio: float) -> list[Finding]:
    findings = []
    names = sorted({i.label for i in images})
    for index, a in enumerate(names):
        for b in names[index + 1:]:
            if similar_class_names(a, b):
                findings.append(Finding("class_typo", (a, b), f"class names '{a}' and '{b}' look like one name"))
    for split in sorted({i.split for i in images}):
        counts = Counter(i.label for i in images if i.split == split)
        if len(counts) < 2:
            continue
        (big, most), (small, least) = counts.most_common()[0], counts.most_common()[-1]
        if most > imbalance_ratio * least:
            findings.append(Finding("imbalance", (big, small),
                                    f"{split}: '{big}' has {most} images, '{small}' {least} "
                                    f"(ratio {most / least:.1f} > {imbalance_ratio:g})"))
    return findings


def _image_findings(images: Sequence[ImageInfo], min_side: int) -> list[Finding]:
    findings = []
    for info in images:
        if info.error is not None:
            findings.append(Finding("corrupt", (info.path,), info.error))
        elif min(info.width, info.height) < min_side:
            findings.append(Finding("tiny", (info.path,), f"{info.width}x{info.height} px (< {min_side} px)"))
        if info.error is None and info.mode not in USUAL_MODES:
            findings.append(Finding("odd_mode", (info.path,), f"mode {info.mode} (expected RGB, L or RGBA)"))
    return findings


# ---- the entry points ---------------------------------------------------------------------------------------------
def _sources(source: str | Path | None, splits: Mapping[str, str | Path] | None) -> dict[str, Path]:
    named: dict[str, Path] = {}
    if source is not None:
        named["train"] = Path(source)
    for name, path in (splits or {}).items():
        if name in named:
            raise _error(f"split '{name}' is given twice.", f"划分 '{name}' 被指定了两次。")
        named[str(name)] = Path(path)
    if not named:
        raise _error("give a dataset (a folder or a .csv/.jsonl file).", "请指定数据集（目录或 .csv/.jsonl 文件）。")
    for name, path in named.items():
        if not path.expanduser().exists():
            raise _error(f"{name} dataset '{path}' does not exist.", f"{name} 数据集 '{path}' 不存在。")
    return named


def validate_dataset(
    source: str | Path | None = None,
    *,
    splits: Mapping[str, str | Path] | None = None,
    near_distance: int = 8,
    min_side: int = 16,
    imbalance_ratio: float = 5.0,
) -> ValidationReport:
    """Inspect every image of ``source`` (the train split) and of each extra split (``{"val": ...}``).

    A source is an ImageFolder tree (``<class>/<image>``) or a .csv/.jsonl file with image and label columns.
    """
    from tqdm.auto import tqdm

    from lmt.train.data import read_records

    if not 0 <= near_distance <= 32 or min_side < 1 or imbalance_ratio < 1:
        raise _error("need 0 <= near_distance <= 32, min_side >= 1 and imbalance_ratio >= 1.",
                     "需要 0 <= near_distance <= 32、min_side >= 1 且 imbalance_ratio >= 1。")
    records = []
    for split, path in _sources(source, splits).items():
        records += [(split, r) for r in read_records(path, {"image": "image", "label": "label"})]
    images = tuple(inspect_image(str(r["image"]), split, str(r["label"]))
                   for split, r in tqdm(records, desc="validate", unit="image", leave=False))
    findings = (_image_findings(images, min_side) + _duplicate_findings(images)
                + _near_duplicate_findings(images, near_distance) + _class_findings(images, imbalance_ratio))
    logger.info("validated %d images: %d findings", len(images), len(findings))
    thresholds = {"near_distance": near_distance, "min_side": min_side, "imbalance_ratio": imbalance_ratio}
    return ValidationReport(images, tuple(findings), thresholds)


def clean_images(report: ValidationReport, split: str | None = None) -> list[ImageInfo]:
    """Images worth training on: no corrupt or tiny ones, the first of each byte-identical group only.

    Splits are taken in report order (train first), so an image leaked into val stays in train only.
    """
    bad = {f.items[0] for f in report.findings if f.kind in ("corrupt", "tiny")}
    seen: set[str] = set()
    kept = []
    for info in report.images:
        if info.path in bad or info.sha256 in seen:
            continue
        seen.add(info.sha256)
        if split is None or info.split == split:
            kept.append(info)
    return kept


def write_clean_manifest(report: ValidationReport, out_csv: str | Path, split: str = "train") -> Path:
    """A CSV (image, label; absolute paths) of ``split``'s clean images. Source files are never touched."""
    out = Path(out_csv)
    rows = clean_images(report, split)
    if not rows:
        raise _error(f"no clean images left in split '{split}'.", f"划分 '{split}' 中没有剩下合格的图片。")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        writer.writerows([str(Path(info.path).resolve()), info.label] for info in rows)
    return out


# ---- the report ---------------------------------------------------------------------------------------------------
def report_markdown(report: ValidationReport, figures: Sequence[str] = ()) -> str:
    """The report as markdown: a summary table, then every finding, then the figures (file names)."""
    per_split = Counter(i.split for i in report.images)
    lines = ["# Dataset validation report", "",
             "Images: " + ", ".join(f"{split} {count}" for split, count in per_split.items()), "",
             "Thresholds: " + ", ".join(f"{k} = {v:g}" for k, v in report.thresholds.items()), "",
             "| check | findings |", "|---|---|"]
    lines += [f"| {kind} | {count} |" for kind, count in report.counts().items()]
    lines.append("")
    if report.ok:
        lines.append("No defects found.")
    for kind in KINDS:
        found = report.of_kind(kind)
        if found:
            lines += ["", f"## {kind} ({len(found)})", ""]
            lines += [f"- {f.detail}: " + ", ".join(f"`{item}`" for item in f.items) for f in found]
    for figure in figures:
        lines += ["", f"![{Path(figure).stem}]({figure})"]
    return "\n".join(lines) + "\n"


def _plot_figures(report: ValidationReport, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # no display: runs on servers and in CI
    import matplotlib.pyplot as plt

    names = []
    labels = sorted({i.label for i in report.images})
    splits = list(dict.fromkeys(i.split for i in report.images))
    figure, axes = plt.subplots(figsize=(max(4.0, 0.5 * len(labels) + 2), 3.5))
    width = 0.8 / max(1, len(splits))
    for index, split in enumerate(splits):
        counts = Counter(i.label for i in report.images if i.split == split)
        axes.bar([x + index * width for x in range(len(labels))], [counts.get(lb, 0) for lb in labels],
                 width=width, label=split)
    axes.set_xticks([x + width * (len(splits) - 1) / 2 for x in range(len(labels))], labels, rotation=45)
    axes.set_ylabel("images")
    axes.set_title("class counts")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "class_counts.png", dpi=100)
    plt.close(figure)
    names.append("class_counts.png")

    decoded = [i for i in report.images if i.error is None]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.hist([min(i.width, i.height) for i in decoded] or [0], bins=20)
    axes.set_xlabel("shorter side (px)")
    axes.set_ylabel("images")
    axes.set_title("image sizes")
    figure.tight_layout()
    figure.savefig(out / "image_sizes.png", dpi=100)
    plt.close(figure)
    names.append("image_sizes.png")
    return names


def write_report(report: ValidationReport, out_dir: str | Path) -> Path:
    """Write ``report.md``, ``report.json``, ``class_counts.png`` and ``image_sizes.png``; return report.md."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = _plot_figures(report, out) if report.images else []
    (out / "report.json").write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
    path = out / "report.md"
    path.write_text(report_markdown(report, figures), encoding="utf-8")
    return path
