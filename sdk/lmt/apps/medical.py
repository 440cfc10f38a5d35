"""Medical imaging for research and teaching: read DICOM/PNG/JPEG, window CT values, score modality and findings
with a CLIP-style model, segment a lesion with SAM from a box or points, measure it, export the mask.

**For research and education only, not for clinical use** (:data:`NOTICE`, also in every ``to_dict()``). Scores are
zero-shot model scores over the labels given, never a diagnosis.

The model calls are injected: ``classifier`` is anything called like :class:`lmt.ZeroShotImageClassification`
(``classifier(image, labels=..., template=...) -> Classification``) and ``segmenter`` anything called like
:class:`lmt.MaskGeneration` (``segmenter(image, points=..., boxes=...) -> Segmentation``). Without them the real
task classes are built from ``model`` and ``weights``::

    from lmt.apps import medical

    scan = medical.read_medical_image("ct.dcm")                 # HU, pixel spacing from the header
    lesion = medical.segment_lesion(scan, box=(120, 80, 200, 150), window="mediastinum", weights="tiny")
    lesion.measurements.area_mm2, lesion.measurements.max_diameter_mm
    medical.save_mask_nifti(lesion.mask, "lesion.nii.gz", scan.spacing)
"""

from __future__ import annotations

import io
import logging
import math
import os
import stat
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lmt.errors import InvalidImageError, InvalidInputError, LmtError, missing_dependency
from lmt.images import DEFAULT_MAX_PIXELS, load_image
from lmt.results import Classification, LabelScore, Segmentation
from lmt.validate import check_boxes, check_labels, check_points

logger = logging.getLogger(__name__)

NOTICE_ZH = "仅供科研与教学，不可用于临床；模型分数不是诊断。"
NOTICE_EN = "For research and education only, not for clinical use. Model scores are not a diagnosis."
#: Shown in the Space and carried by every result's ``to_dict()``.
NOTICE = f"{NOTICE_ZH} / {NOTICE_EN}"
SCORES_NOTE = (
    "Zero-shot model scores: a softmax over the labels given, averaged over the prompt templates. They say which "
    "label text the model finds closest to the image, not how likely a disease is."
)

#: Largest DICOM file read, in bytes; ``LMT_MAX_DICOM_BYTES`` overrides it (read at call time).
DEFAULT_MAX_DICOM_BYTES = 256 * 1024 * 1024
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
MAX_SPACING_MM = 1000.0  # a larger "pixel spacing" is a broken header, not a pixel
MIN_SIDE = 8

Classifier = Callable[..., Classification]
Segmenter = Callable[..., Segmentation]


# ================================================================================================ windowing
@dataclass(frozen=True)
class Window:
    """A display window: values from ``level - width/2`` to ``level + width/2`` map to black .. white."""

    width: float
    level: float
    name: str = "custom"
    source: str = "custom"  # preset | custom | dicom header | min-max

    @property
    def lower(self) -> float:
        return self.level - self.width / 2

    @property
    def upper(self) -> float:
        return self.level + self.width / 2

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "level": self.level, "lower": self.lower,
                "upper": self.upper, "source": self.source}


#: CT presets in Hounsfield units (width, level).
WINDOW_PRESETS: dict[str, Window] = {
    "lung": Window(1500.0, -600.0, "lung", "preset"),
    "mediastinum": Window(350.0, 50.0, "mediastinum", "preset"),
    "bone": Window(1800.0, 400.0, "bone", "preset"),
    "brain": Window(80.0, 40.0, "brain", "preset"),
}
WINDOW_CHOICES = ("auto", *WINDOW_PRESETS, "custom")
MAX_WINDOW_VALUE = 1e6

WindowSpec = str | Window | tuple[float, float] | None


def custom_window(width: Any, level: Any) -> Window:
    """A checked custom window: width > 0, both finite and within ±1e6."""
    values = (width, level)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise InvalidInputError(
            f"A window needs a numeric width and level; got width={width!r:.30}, level={level!r:.30}.",
            f"窗宽和窗位必须是数字，收到的是窗宽={width!r:.30}、窗位={level!r:.30}。",
        )
    if not 0 < width <= MAX_WINDOW_VALUE or abs(level) > MAX_WINDOW_VALUE:
        raise InvalidInputError(
            f"Window width must be in (0, {MAX_WINDOW_VALUE:g}] and level within ±{MAX_WINDOW_VALUE:g}; "
            f"got width={width:g}, level={level:g}.",
            f"窗宽必须在 (0, {MAX_WINDOW_VALUE:g}] 内，窗位必须在 ±{MAX_WINDOW_VALUE:g} 内；"
            f"收到窗宽={width:g}、窗位={level:g}。",
        )
    return Window(float(width), float(level), "custom", "custom")


def resolve_window(window: WindowSpec) -> Window | None:
    """``None``/``"auto"`` -> None (the image's own window); else a preset name, a Window or ``(width, level)``."""
    if window is None or (isinstance(window, str) and window.strip().lower() == "auto"):
        return None
    if isinstance(window, Window):
        custom_window(window.width, window.level)  # the same checks as a typed-in window
        return window
    if isinstance(window, str):
        preset = WINDOW_PRESETS.get(window.strip().lower())
        if preset is None:
            raise InvalidInputError(
                f"Unknown window '{window[:40]}'. Use 'auto', one of {', '.join(WINDOW_PRESETS)}, "
                "or a (width, level) pair.",
                f"未知的窗 '{window[:40]}'。请用 'auto'、{', '.join(WINDOW_PRESETS)} 之一，或 (窗宽, 窗位)。",
            )
        return preset
    if isinstance(window, (tuple, list)) and len(window) == 2:
        return custom_window(window[0], window[1])
    raise InvalidInputError(
        f"window must be 'auto', a preset name, a Window or (width, level); got {type(window).__name__}.",
        f"window 必须是 'auto'、预设名、Window 或 (窗宽, 窗位)，收到的是 {type(window).__name__}。",
    )


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """``rint(clip((v - (level - width/2)) / width, 0, 1) * 255)`` as uint8: the linear window, nothing hidden."""
    scaled = (np.asarray(values, dtype=np.float64) - window.lower) / window.width
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


# ================================================================================================ the image
@dataclass(frozen=True)
class PixelSpacing:
    """Physical size of one pixel: ``row_mm`` between rows (vertical), ``col_mm`` between columns (horizontal)."""

    row_mm: float
    col_mm: float
    source: str  # PixelSpacing | ImagerPixelSpacing | given

    def to_dict(self) -> dict[str, Any]:
        return {"row_mm": self.row_mm, "col_mm": self.col_mm, "source": self.source}


@dataclass(frozen=True, eq=False)
class MedicalImage:
    """One 2-D image, ready to window and display.

    ``values`` is (H, W) float64 for a monochrome DICOM (HU for CT: ``pixel * RescaleSlope + RescaleIntercept``),
    or (H, W, 3) uint8 for a colour DICOM and for PNG/JPEG, which are shown as they are.
    """

    values: np.ndarray = field(repr=False)
    source: str  # dicom | image
    spacing: PixelSpacing | None = None
    modality: str | None = None  # the DICOM Modality tag (CT, MR, CR, DX, US ...)
    photometric: str | None = None
    header_window: Window | None = None
    slice_index: int | None = None
    num_slices: int = 1
    #: DICOM ImageOrientationPatient (6 cosines), ImagePositionPatient (mm), SliceThickness (mm), when present.
    orientation: tuple[float, ...] | None = None
    position: tuple[float, float, float] | None = None
    slice_thickness: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), like PIL."""
        return int(self.values.shape[1]), int(self.values.shape[0])

    @property
    def is_colour(self) -> bool:
        return self.values.ndim == 3

    @property
    def is_ct(self) -> bool:
        return self.source == "dicom" and self.modality == "CT" and not self.is_colour

    def window_for(self, window: WindowSpec) -> Window | None:
        """The window actually used: the one asked for, else the header's, else the values' min..max."""
        chosen = resolve_window(window)
        if chosen is not None and (self.source != "dicom" or self.is_colour):
            raise InvalidInputError(
                "Windowing applies to monochrome DICOM images (values in HU or scanner units); a PNG/JPEG or "
                "colour image is already windowed for display. Choose 'auto', or upload the DICOM file.",
                "窗宽窗位只适用于单色 DICOM 图像（HU 或设备原始单位）；PNG/JPEG 或彩色图像已经是显示用的灰度，"
                "请选择 'auto'，或上传 DICOM 文件。",
            )
        if chosen is not None and chosen.source == "preset" and not self.is_ct:
            raise InvalidInputError(
                f"The '{chosen.name}' preset is in Hounsfield units and applies to CT only; this DICOM's modality "
                f"is {self.modality or 'not given'}. Use 'auto' or a custom width/level in its own units.",
                f"'{chosen.name}' 预设以 HU 为单位，只适用于 CT；该 DICOM 的模态为 {self.modality or '未注明'}。"
                "请用 'auto'，或按其自身单位自定义窗宽窗位。",
            )
        if chosen is not None or self.is_colour or self.source != "dicom":
            return chosen
        if self.header_window is not None:
            return self.header_window
        low, high = float(self.values.min()), float(self.values.max())
        return Window(max(high - low, 1.0), (high + low) / 2, "min-max", "min-max")

    def display(self, window: WindowSpec = "auto") -> Image.Image:
        """An RGB picture of the image under ``window`` (what the models see and the Space shows)."""
        used = self.window_for(window)
        if used is None:
            return Image.fromarray(np.ascontiguousarray(self.values, dtype=np.uint8)).convert("RGB")
        gray = apply_window(self.values, used)
        if self.photometric == "MONOCHROME1":  # MONOCHROME1: the highest value is black
            gray = 255 - gray
        return Image.fromarray(gray).convert("RGB")

    def info(self) -> dict[str, Any]:
        width, height = self.size
        return {
            "source": self.source, "width": width, "height": height, "modality": self.modality,
            "spacing": self.spacing.to_dict() if self.spacing else None,
            "slice_index": self.slice_index, "num_slices": self.num_slices,
            "value_range": [float(self.values.min()), float(self.values.max())],
            "units": "HU" if self.is_ct else ("scanner units" if self.source == "dicom" and not self.is_colour
                                              else "display 0-255"),
        }


MedicalInput = str | os.PathLike | bytes | Image.Image | np.ndarray | MedicalImage | Any


def read_medical_image(
    image: MedicalInput,
    *,
    slice_index: int | None = None,
    spacing: tuple[float, float] | None = None,
    max_bytes: int | None = None,
) -> MedicalImage:
    """Read a DICOM file (path, bytes or ``pydicom.Dataset``), or a PNG/JPEG/any image :func:`lmt.load_image` takes.

    A file is read as DICOM when it has the 'DICM' preamble or ends in .dcm/.dicom/.ima. For a multi-frame DICOM,
    ``slice_index`` (0-based) picks the frame; without it such a file is refused. ``spacing=(row_mm, col_mm)``
    states the pixel size of a PNG/JPEG; a DICOM's comes from PixelSpacing, else ImagerPixelSpacing, else it is
    unknown (never guessed).
    """
    if isinstance(image, MedicalImage):
        if slice_index is not None or spacing is not None:
            raise InvalidInputError(
                "This image is already read: pass slice_index/spacing when reading the file, not afterwards.",
                "该图像已经读取完毕：slice_index/spacing 请在读取文件时传入。",
            )
        return image
    if _is_dataset(image):
        return _from_dataset(image, slice_index, name=None)
    name = None
    data = None
    if isinstance(image, (str, os.PathLike)):
        name = _basename(os.fsdecode(image))
        if os.fsdecode(image).lower().endswith(DICOM_SUFFIXES) or _has_dicom_preamble_file(image):
            data = _read_bytes(os.fsdecode(image), _max_dicom_bytes(max_bytes))
    elif isinstance(image, bytes) and image[128:132] == b"DICM":
        data = image
        _check_size(len(data), None, _max_dicom_bytes(max_bytes))
    if data is not None:
        if spacing is not None:
            raise InvalidInputError(
                "A DICOM file carries its own pixel spacing; spacing=... is only for PNG/JPEG images.",
                "DICOM 文件自带像素间距；spacing=... 只用于 PNG/JPEG 图像。",
            )
        return _from_dataset(_parse_dicom(data, name), slice_index, name)
    if slice_index not in (None, 0):
        raise InvalidInputError(
            "slice_index applies to multi-frame DICOM files; a PNG/JPEG image has one slice.",
            "slice_index 只适用于多帧 DICOM 文件；PNG/JPEG 图像只有一层。",
        )
    given = _given_spacing(spacing)
    picture = load_image(image)
    return MedicalImage(np.asarray(picture, dtype=np.uint8), "image", given)


def _is_dataset(value: Any) -> bool:
    return type(value).__module__.startswith("pydicom") and hasattr(value, "dir")


def _basename(path: str) -> str:
    """Only the file name: a server-side folder (a Gradio temp dir) must never reach the user."""
    name = os.path.basename(os.path.normpath(path)) if path else ""
    return name if len(name) <= 100 else name[:97] + "..."


def _given_spacing(spacing: Any) -> PixelSpacing | None:
    if spacing is None:
        return None
    if (
        not isinstance(spacing, (tuple, list)) or len(spacing) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_SPACING_MM
                   for v in spacing)
    ):
        raise InvalidInputError(
            f"spacing must be (row_mm, col_mm), two numbers in (0, {MAX_SPACING_MM:g}] mm; got {spacing!r:.60}.",
            f"spacing 必须是 (行间距mm, 列间距mm)，两个 (0, {MAX_SPACING_MM:g}] 内的数，收到的是 {spacing!r:.60}。",
        )
    return PixelSpacing(float(spacing[0]), float(spacing[1]), "given")


def _max_dicom_bytes(max_bytes: int | None) -> int:
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise InvalidInputError("max_bytes must be a positive whole number.", "max_bytes 必须是正整数。")
        return max_bytes
    raw = os.environ.get("LMT_MAX_DICOM_BYTES", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_DICOM_BYTES


def _has_dicom_preamble_file(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as file:
            head = file.read(132)
    except (OSError, ValueError):
        return False  # load_image reports a missing or unreadable file with its own clear message
    return head[128:132] == b"DICM"


def _check_size(size: int, name: str | None, limit: int) -> None:
    subject = f"'{name}'" if name else "The DICOM data"
    if size == 0:
        raise InvalidImageError(f"{subject} is empty (0 bytes).", f"{subject} 为空（0 字节）。")
    if size > limit:
        raise InvalidImageError(
            f"{subject} is {size / 2**20:.1f} MiB, above the limit of {limit / 2**20:.0f} MiB for a DICOM file. "
            "Export the slice you need, or raise LMT_MAX_DICOM_BYTES.",
            f"{subject} 大小为 {size / 2**20:.1f} MiB，超过 DICOM 文件上限 {limit / 2**20:.0f} MiB。"
            "请只导出需要的切片，或提高 LMT_MAX_DICOM_BYTES。",
        )


def _read_bytes(path: str, limit: int) -> bytes:
    name = _basename(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidImageError(
            f"DICOM file '{name}' does not exist. Check the path (in the Space: upload the file again).",
            f"DICOM 文件 '{name}' 不存在。请检查路径（在 Space 中请重新上传）。",
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidImageError(
            f"DICOM file '{name}' cannot be read ({type(exc).__name__}).", f"无法读取 DICOM 文件 '{name}'。"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidImageError(f"'{name}' is not a regular file.", f"'{name}' 不是普通文件。")
    _check_size(info.st_size, name, limit)
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    _check_size(len(data), name, limit)
    return data


def _require_pydicom() -> Any:
    try:
        import pydicom
    except ImportError as err:
        raise missing_dependency("pydicom", "apps", "Reading DICOM files", "读取 DICOM 文件") from err
    return pydicom


def _parse_dicom(data: bytes, name: str | None) -> Any:
    pydicom = _require_pydicom()
    subject = f"'{name}'" if name else "The DICOM data"
    try:
        # force: a .dcm file without the 128-byte preamble (older, raw DICOM) is still DICOM
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except (pydicom.errors.InvalidDicomError, ValueError, TypeError, KeyError, EOFError, OSError,
            OverflowError, IndexError) as exc:
        raise InvalidImageError(
            f"{subject} cannot be read as DICOM ({type(exc).__name__}); it may be truncated or not DICOM at all.",
            f"{subject} 无法按 DICOM 读取（{type(exc).__name__}），文件可能被截断或根本不是 DICOM。",
        ) from None


def _header_number(ds: Any, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _header_numbers(ds: Any, keyword: str, count: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    try:
        numbers = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def dicom_spacing(ds: Any) -> PixelSpacing | None:
    """PixelSpacing (patient plane), else ImagerPixelSpacing (detector plane), else None: never guessed."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        numbers = _header_numbers(ds, keyword, 2)
        if numbers is not None and all(0 < v <= MAX_SPACING_MM for v in numbers):
            return PixelSpacing(numbers[0], numbers[1], keyword)
        if keyword in ds:
            logger.warning("Ignoring the unusable %s value %r", keyword, ds.get(keyword))
    return None


def _from_dataset(ds: Any, slice_index: int | None, name: str | None) -> MedicalImage:
    subject = f"'{name}'" if name else "The DICOM dataset"
    try:
        return _decode_dataset(ds, slice_index, subject)
    except LmtError:
        raise
    # pydicom converts header values lazily, so a damaged element only fails when it is read
    except (ValueError, NotImplementedError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            EOFError, OSError, RuntimeError, struct.error) as exc:
        raise InvalidImageError(
            f"{subject} has a damaged DICOM header or pixel data ({type(exc).__name__}: {str(exc)[:120]}).",
            f"{subject} 的 DICOM 头或像素数据已损坏（{type(exc).__name__}）。",
        ) from None


def _decode_dataset(ds: Any, slice_index: int | None, subject: str) -> MedicalImage:
    from pydicom.pixels import pixel_array

    if not any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InvalidImageError(
            f"{subject} has no pixel data (a report, a DICOMDIR or not an image). Upload a DICOM image file.",
            f"{subject} 不含像素数据（可能是报告、DICOMDIR 或并非图像）。请上传 DICOM 图像文件。",
        )
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = int(_header_number(ds, "NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    if min(rows, cols) < MIN_SIDE or rows * cols > DEFAULT_MAX_PIXELS:
        raise InvalidImageError(
            f"{subject} is {cols}×{rows} pixels; sides of at least {MIN_SIDE} and at most "
            f"{DEFAULT_MAX_PIXELS // 1_000_000} megapixels are supported.",
            f"{subject} 为 {cols}×{rows} 像素；支持边长不小于 {MIN_SIDE}、总像素不超过 "
            f"{DEFAULT_MAX_PIXELS // 1_000_000} 百万的图像。",
        )
    index = _check_slice(slice_index, frames, subject)
    try:
        pixels = pixel_array(ds, index=index) if frames > 1 else pixel_array(ds)
    except (RuntimeError, NotImplementedError, ValueError, AttributeError, TypeError, KeyError, IndexError,
            EOFError, OSError) as exc:
        raise _undecodable(ds, subject, exc) from None
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and samples == 1:  # a volume that did not declare its frames
        raise InvalidImageError(
            f"{subject} holds a {pixels.shape[0]}-slice volume without NumberOfFrames; export one slice.",
            f"{subject} 是 {pixels.shape[0]} 层的体数据但未声明 NumberOfFrames；请导出单层。",
        )
    photometric = str(ds.get("PhotometricInterpretation") or "") or None
    modality = str(ds.get("Modality") or "").strip().upper() or None
    if samples == 3 and pixels.ndim == 3:
        values = pixels if pixels.dtype == np.uint8 else apply_window(
            pixels, Window(max(float(pixels.max() - pixels.min()), 1.0), float(pixels.max() + pixels.min()) / 2)
        )
        header_window = None
    else:
        slope = _header_number(ds, "RescaleSlope")
        intercept = _header_number(ds, "RescaleIntercept")
        values = pixels.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
        header_window = _header_window(ds)
    if not np.isfinite(values).all():
        raise InvalidImageError(
            f"{subject} has NaN or infinite pixel values.", f"{subject} 的像素值中含有 NaN 或无穷大。"
        )
    orientation = _header_numbers(ds, "ImageOrientationPatient", 6)
    position = _header_numbers(ds, "ImagePositionPatient", 3)
    thickness = _header_number(ds, "SliceThickness")
    return MedicalImage(
        values, "dicom", dicom_spacing(ds), modality, photometric, header_window,
        index if frames > 1 else None, frames, orientation, position,
        thickness if thickness and thickness > 0 else None,
    )


def _check_slice(slice_index: Any, frames: int, subject: str) -> int | None:
    if frames > 1 and slice_index is None:
        raise InvalidInputError(
            f"{subject} is a volume of {frames} slices. Choose one with slice_index (0 to {frames - 1}); "
            "this tool works on one 2-D slice at a time.",
            f"{subject} 是含 {frames} 层的体数据。请用 slice_index 选择一层（0 到 {frames - 1}）；本工具一次只处理一层二维图像。",
        )
    if slice_index is None:
        return None
    if isinstance(slice_index, bool) or not isinstance(slice_index, int) or not 0 <= slice_index < frames:
        raise InvalidInputError(
            f"slice_index {slice_index!r:.20} is out of range: {subject} has {frames} slice(s), 0 to {frames - 1}.",
            f"slice_index {slice_index!r:.20} 超出范围：该文件共 {frames} 层（0 到 {frames - 1}）。",
        )
    return slice_index


def _header_window(ds: Any) -> Window | None:
    level, width = _header_number(ds, "WindowCenter"), _header_number(ds, "WindowWidth")
    if level is None or width is None or width <= 0:
        return None
    return Window(width, level, "dicom header", "dicom header")


def _undecodable(ds: Any, subject: str, exc: BaseException) -> InvalidImageError:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        from pydicom.pixels import get_decoder

        try:
            available = get_decoder(syntax).is_available
        except (ValueError, NotImplementedError):  # a syntax pydicom has no decoder class for at all
            available = False
        why = "the decoder failed on it" if available else "no decoder for it is installed"
        why_zh = "解码失败" if available else "本机没有安装相应的解码器"
        return InvalidImageError(
            f"{subject} holds compressed pixel data ({syntax.name}) and {why}. Decompress it first "
            "(e.g. `gdcmconv --raw in.dcm out.dcm`), or install a decoder such as pylibjpeg with its plugins.",
            f"{subject} 的像素数据经过压缩（{syntax.name}），{why_zh}。请先解压（例如 `gdcmconv --raw in.dcm out.dcm`），"
            "或安装 pylibjpeg 等解码插件。",
        )
    detail = str(exc)[:160] or type(exc).__name__
    return InvalidImageError(
        f"{subject}'s pixel data cannot be decoded: {detail}. The file may be truncated or its image tags wrong.",
        f"{subject} 的像素数据无法解码：{detail}。文件可能被截断，或图像相关标签有误。",
    )


# ================================================================================================ classification===
#: Prompt text for each modality label CLIP is asked about; unknown labels are used as written.
MODALITY_PROMPTS: dict[str, str] = {
    "CT": "a CT scan",
    "MRI": "an MRI scan",
    "X-ray": "an X-ray radiograph",
    "ultrasound": "an ultrasound image",
    "PET": "a PET scan",
    "mammography": "a mammogram",
    "endoscopy": "an endoscopy image",
    "histopathology": "a histopathology slide",
    "fundus photo": "a retinal fundus photograph",
}
DEFAULT_MODALITIES = ("CT", "MRI", "X-ray", "ultrasound", "PET", "endoscopy", "histopathology", "fundus photo")
DEFAULT_FINDINGS = ("no abnormality", "a tumor", "a fracture", "pneumonia", "a hemorrhage")
#: Modality templates; scores are averaged over them (prompt ensembling, as in the CLIP paper).
MODALITY_TEMPLATES = ("{}.", "a medical image: {}.", "{} of a patient.")
#: Finding templates; ``{modality}`` is the modality's prompt text, ``{}`` the finding.
FINDING_TEMPLATES = ("{modality} showing {{}}.", "{modality} with {{}}.")
#: DICOM Modality tag -> our modality label, to condition the finding prompts on what the header says.
DICOM_MODALITIES = {
    "CT": "CT", "MR": "MRI", "CR": "X-ray", "DX": "X-ray", "RF": "X-ray", "XA": "X-ray", "MG": "mammography",
    "US": "ultrasound", "PT": "PET", "ES": "endoscopy", "SM": "histopathology", "OP": "fundus photo",
}


def modality_prompt(label: str) -> str:
    return MODALITY_PROMPTS.get(label, label)


def finding_templates(modality: str) -> list[str]:
    """The finding templates naming ``modality``, e.g. 'a CT scan showing {}.'."""
    phrase = modality_prompt(modality).replace("{", "").replace("}", "")  # braces would break str.format
    return [template.format(modality=phrase) for template in FINDING_TEMPLATES]


def ensemble_classify(
    classifier: Classifier, image: Image.Image, labels: Sequence[str], prompts: Sequence[str],
    templates: Sequence[str],
) -> Classification:
    """Score ``labels`` through their ``prompts`` under each template; the mean score per label, best first."""
    if len(set(prompts)) != len(prompts):
        raise InvalidInputError(
            "Two labels map to the same prompt text; give each label once.", "有两个标签对应同一句提示文本，请每个标签只写一次。"
        )
    totals = dict.fromkeys(prompts, 0.0)
    for template in templates:
        result = classifier(image, labels=list(prompts), template=template)
        for prediction in result.predictions:
            totals[prediction.label] += prediction.score / len(templates)
    scored = [LabelScore(label, totals[prompt]) for label, prompt in zip(labels, prompts, strict=True)]
    return Classification(tuple(sorted(scored, key=lambda p: -p.score)))


@dataclass(frozen=True)
class MedicalClassification:
    """Model scores for the modality and for findings; never a diagnosis (see :data:`NOTICE`)."""

    modality: Classification
    findings: Classification
    findings_modality: str  # the modality the finding prompts name
    findings_modality_source: str  # dicom header | model | given
    window: Window | None
    image: dict[str, Any]
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "notice": NOTICE,
            "scores_are": SCORES_NOTE,
            "model": self.model,
            "modality": self.modality.to_dict(),
            "findings": self.findings.to_dict(),
            "findings_prompts": finding_templates(self.findings_modality),
            "findings_modality": {"label": self.findings_modality, "source": self.findings_modality_source},
            "window": self.window.to_dict() if self.window else None,
            "image": self.image,
        }


def _default_classifier(model: str, weights: str) -> Classifier:
    from lmt.tasks import ZeroShotImageClassification

    return ZeroShotImageClassification(model, weights=weights)


def classify_image(
    image: MedicalInput,
    *,
    modalities: str | Sequence[str] = DEFAULT_MODALITIES,
    findings: str | Sequence[str] = DEFAULT_FINDINGS,
    modality: str | None = None,
    window: WindowSpec = "auto",
    slice_index: int | None = None,
    classifier: Classifier | None = None,
    model: str = "clip-vit-b32",
    weights: str = "real",
) -> MedicalClassification:
    """Zero-shot modality and finding scores with a CLIP-style model (any CLIP checkpoint: registry name, Hub id
    or local folder, e.g. a medical CLIP fine-tune saved as ``CLIPModel``).

    The finding prompts name a modality: ``modality`` if given, else the DICOM header's, else the model's top one.
    """
    scan = read_medical_image(image, slice_index=slice_index)
    used_window = scan.window_for(window)
    picture = scan.display(window)
    modality_labels = check_labels(modalities, max_count=50)
    finding_labels = check_labels(findings, max_count=50)
    model_name = _model_name(classifier, model)
    classifier = classifier or _default_classifier(model, weights)
    modality_scores = ensemble_classify(
        classifier, picture, modality_labels, [modality_prompt(m) for m in modality_labels], MODALITY_TEMPLATES
    )
    if modality is not None:
        condition, source = check_labels([modality], max_count=1)[0], "given"
    elif scan.modality in DICOM_MODALITIES:
        condition, source = DICOM_MODALITIES[scan.modality], "dicom header"
    else:
        condition, source = modality_scores.label, "model"
    finding_scores = ensemble_classify(
        classifier, picture, finding_labels, finding_labels, finding_templates(condition)
    )
    return MedicalClassification(
        modality_scores, finding_scores, condition, source, used_window, scan.info(), model_name
    )


def _model_name(call: Any, model: str) -> str:
    """The model that scores: the one named, or the injected task's (a stand-in is named by its type)."""
    if call is None:
        return model
    loaded = getattr(call, "loaded", None)
    return getattr(loaded, "name", None) or type(call).__name__


# ================================================================================================ segmentation===
def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a binary mask (empty stays empty)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background regions not connected to the image border become foreground."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def max_feret_diameter(
    mask: np.ndarray, row_mm: float = 1.0, col_mm: float = 1.0
) -> tuple[float, tuple[tuple[float, float], tuple[float, float]] | None]:
    """Largest distance between two points of the mask, pixels taken as ``row_mm`` × ``col_mm`` rectangles.

    Returns the diameter and its end points as (x, y) pixel-edge coordinates (pixel (r, c) covers x in [c, c+1],
    y in [r, r+1], like the boxes elsewhere in the SDK). The distance is measured in mm before the maximum is taken,
    so anisotropic spacing picks the right pair. Computed over the convex hull of the boundary pixels' corners.
    """
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0, None
    boundary = mask & ~ndimage.binary_erosion(mask)
    rows, cols = np.nonzero(boundary)
    corners = np.concatenate([
        np.stack([cols + dx, rows + dy], axis=1) for dx in (0, 1) for dy in (0, 1)
    ]).astype(np.float64)
    corners = np.unique(corners, axis=0)
    scaled = corners * np.array([col_mm, row_mm])
    hull = scaled[ConvexHull(scaled).vertices]  # corners of one pixel already span an area: never degenerate
    distances = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(distances)), distances.shape)
    ends = tuple((float(p[0] / col_mm), float(p[1] / row_mm)) for p in (hull[i], hull[j]))
    return float(distances[i, j]), ends  # type: ignore[return-value]


@dataclass(frozen=True)
class LesionMeasurements:
    """Area and maximum (Feret) diameter, in pixels always and in mm when the pixel spacing is known."""

    area_px: int
    max_diameter_px: float
    area_mm2: float | None
    max_diameter_mm: float | None
    diameter_ends: tuple[tuple[float, float], tuple[float, float]] | None  # (x, y) pixel coordinates
    spacing: PixelSpacing | None

    @property
    def unit(self) -> str:
        return "mm" if self.spacing is not None else "px"

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "area_px": self.area_px,
            "max_diameter_px": self.max_diameter_px,
            "area_mm2": self.area_mm2,
            "max_diameter_mm": self.max_diameter_mm,
            "diameter_ends_xy": [list(p) for p in self.diameter_ends] if self.diameter_ends else None,
            "spacing": self.spacing.to_dict() if self.spacing else None,
            "spacing_note": None if self.spacing else "pixel spacing unknown: sizes are in pixels, not mm",
        }


def measure_mask(mask: np.ndarray, spacing: PixelSpacing | None) -> LesionMeasurements:
    """Area (pixel count × row_mm × col_mm) and max Feret diameter of a binary mask."""
    mask = np.asarray(mask, dtype=bool)
    area_px = int(mask.sum())
    diameter_px, ends_px = max_feret_diameter(mask)
    if spacing is None:
        return LesionMeasurements(area_px, diameter_px, None, None, ends_px, None)
    diameter_mm, ends_mm = max_feret_diameter(mask, spacing.row_mm, spacing.col_mm)
    return LesionMeasurements(
        area_px, diameter_px, area_px * spacing.row_mm * spacing.col_mm, diameter_mm, ends_mm, spacing
    )


@dataclass(frozen=True, eq=False)
class LesionSegmentation:
    """A post-processed lesion mask with its measurements; ``raw_mask`` is what the segmenter returned."""

    mask: np.ndarray = field(repr=False)
    raw_mask: np.ndarray = field(repr=False)
    score: float
    measurements: LesionMeasurements
    image: MedicalImage = field(repr=False)
    window: Window | None
    box: tuple[float, float, float, float] | None
    points: tuple[tuple[float, float, int], ...]
    postprocessing: dict[str, Any]

    def overlay(self, window: WindowSpec = None) -> Image.Image:
        """The displayed image with the mask (red), its outline (yellow), the diameter (cyan) and the prompts."""
        base = self.image.display(self.window if window is None else window)
        return draw_overlay(base, self.mask, self.measurements.diameter_ends, self.box, self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "notice": NOTICE,
            "score": self.score,
            "score_is": "the segmenter's own quality estimate for the mask (SAM's predicted IoU), not a diagnosis",
            "measurements": self.measurements.to_dict(),
            "postprocessing": self.postprocessing,
            "prompt": {"box": list(self.box) if self.box else None, "points": [list(p) for p in self.points]},
            "window": self.window.to_dict() if self.window else None,
            "image": self.image.info(),
        }


def _default_segmenter(model: str, weights: str) -> Segmenter:
    from lmt.tasks import MaskGeneration

    return MaskGeneration(model, weights=weights)


def postprocess_mask(mask: np.ndarray, *, keep_largest: bool = True, fill: bool = True) -> tuple[np.ndarray, dict]:
    """Keep the largest connected component, then fill holes; returns the mask and what changed (in pixels)."""
    mask = np.asarray(mask, dtype=bool)
    kept = largest_component(mask) if keep_largest else mask
    filled = fill_holes(kept) if fill else kept
    report = {
        "largest_component": keep_largest,
        "fill_holes": fill,
        "pixels_removed": int(mask.sum() - kept.sum()),
        "pixels_filled": int(filled.sum() - kept.sum()),
        "empty": not bool(filled.any()),
    }
    return filled, report


def segment_lesion(
    image: MedicalInput,
    *,
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    window: WindowSpec = "auto",
    slice_index: int | None = None,
    segmenter: Segmenter | None = None,
    model: str = "sam-vit-base",
    weights: str = "real",
    keep_largest: bool = True,
    fill: bool = True,
) -> LesionSegmentation:
    """Segment one lesion from a box ``(x0, y0, x1, y1)`` and/or points ``[(x, y, 1|0), ...]`` (pixels, top-left
    origin) on the windowed image; keep its largest component, fill its holes, measure it."""
    scan = read_medical_image(image, slice_index=slice_index)
    used_window = scan.window_for(window)
    picture = scan.display(window)
    if box is None and not points:
        raise InvalidInputError(
            "Give a box around the lesion, or at least one point on it.", "请给出包围病灶的框，或至少在病灶上点一个点。"
        )
    checked_box = tuple(check_boxes([box], picture.size)[0]) if box is not None else None
    checked_points = tuple(check_points(points, picture.size)) if points else ()
    segmenter = segmenter or _default_segmenter(model, weights)
    result = segmenter(picture, points=list(checked_points) or None, boxes=[checked_box] if checked_box else None)
    if not isinstance(result, Segmentation) or not result.masks:
        raise LmtError(
            "The segmenter returned no mask for this prompt.", "分割模型没有为该提示返回掩码。"
        )
    best = max(result.masks, key=lambda m: m.score)
    raw = np.asarray(best.mask, dtype=bool)
    if raw.shape != (picture.height, picture.width):
        raise LmtError(
            f"The segmenter returned a {raw.shape} mask for a {picture.height}×{picture.width} image.",
            f"分割模型返回的掩码尺寸 {raw.shape} 与图像 {picture.height}×{picture.width} 不一致。",
        )
    mask, report = postprocess_mask(raw, keep_largest=keep_largest, fill=fill)
    return LesionSegmentation(
        mask, raw, float(best.score), measure_mask(mask, scan.spacing), scan, used_window, checked_box,
        checked_points, report,
    )


def draw_overlay(
    image: Image.Image,
    mask: np.ndarray,
    diameter_ends: tuple[tuple[float, float], tuple[float, float]] | None = None,
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] = (),
) -> Image.Image:
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    pixels[mask] = pixels[mask] * 0.55 + np.array([255, 0, 0], np.float32) * 0.45
    outline = mask & ~ndimage.binary_erosion(mask)
    pixels[outline] = (255, 220, 0)
    picture = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    if box is not None:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(0, 200, 0))
    for x, y, *label in points:
        colour = (0, 200, 0) if not label or label[0] == 1 else (255, 0, 255)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=colour, width=2)
    if diameter_ends is not None:
        draw.line([diameter_ends[0], diameter_ends[1]], fill=(0, 255, 255), width=1)
    return picture


# ================================================================================================ export
def save_mask_png(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """The mask as an 8-bit grayscale PNG, 255 inside and 0 outside, at the image's own size."""
    path = Path(path)
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L").save(path, format="PNG")
    return path


def nifti_affine(image: MedicalImage | None, spacing: PixelSpacing | None) -> np.ndarray:
    """Voxel (i = column, j = row, k) -> RAS+ mm: from the DICOM orientation and position when the header has
    them, else a plain scaling by the pixel spacing (1 mm when unknown)."""
    col_mm, row_mm = (spacing.col_mm, spacing.row_mm) if spacing else (1.0, 1.0)
    thickness = (image.slice_thickness if image else None) or 1.0
    affine = np.diag([col_mm, row_mm, thickness, 1.0])
    if image is not None and spacing is not None and image.orientation and image.position:
        along_row = np.array(image.orientation[:3])  # direction of increasing column index
        along_col = np.array(image.orientation[3:])  # direction of increasing row index
        normal = np.cross(along_row, along_col)
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2] = along_row * col_mm, along_col * row_mm, normal * thickness
        lps[:3, 3] = image.position
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM is LPS+, NIfTI RAS+
    return affine


def save_mask_nifti(
    mask: np.ndarray, path: str | os.PathLike, spacing: PixelSpacing | None, image: MedicalImage | None = None
) -> Path:
    """The mask as a one-slice NIfTI-1 volume (uint8 0/1, shape (W, H, 1)) whose zooms are (col_mm, row_mm, slice).

    Units are mm when the spacing is known, 'unknown' (1 per pixel) otherwise. With ``image`` from a DICOM that has
    ImageOrientationPatient/ImagePositionPatient, the affine also places the slice in patient space.
    """
    try:
        import nibabel as nib
    except ImportError as err:
        raise missing_dependency("nibabel", "apps", "Writing NIfTI files", "写出 NIfTI 文件") from err
    path = Path(path)
    data = np.asarray(mask, dtype=bool).T[:, :, None].astype(np.uint8)  # NIfTI's first axis runs along a row
    nifti = nib.Nifti1Image(data, nifti_affine(image, spacing))
    nifti.header.set_xyzt_units("mm" if spacing else "unknown")
    nifti.header["descrip"] = b"lmt lesion mask; research only, not for clinical use"
    nib.save(nifti, str(path))
    return path


def export_mask(
    result: LesionSegmentation, folder: str | os.PathLike, stem: str = "lesion_mask"
) -> tuple[Path, Path]:
    """Write ``<stem>.png`` and ``<stem>.nii.gz`` into ``folder``; returns both paths."""
    folder = Path(folder)
    png = save_mask_png(result.mask, folder / f"{stem}.png")
    nifti = save_mask_nifti(result.mask, folder / f"{stem}.nii.gz", result.measurements.spacing, result.image)
    return png, nifti
