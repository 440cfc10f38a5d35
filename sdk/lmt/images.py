"""Validate and normalise every image once, on entry.

Every task call starts with :func:`load_image` (or :func:`load_images` for a batch). Whatever the caller
passes (a path, an http(s) URL, bytes, a PIL image or a numpy array), what comes out is a fully decoded
RGB ``PIL.Image.Image`` with its EXIF orientation applied, or an :class:`~lmt.errors.InvalidImageError`
that says what is wrong and how to fix it, in English and Chinese.

The pixel count is read from the header and checked *before* decoding, so a decompression bomb (an 18 KB
PNG that claims 12000×12000 pixels) is refused in milliseconds instead of taking seconds and gigabytes::

    from lmt.images import load_image

    image = load_image("photo.jpg")  # RGB, upright, at most 64 megapixels
    image = load_image(huge, max_pixels=200_000_000)
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import logging
import os
import re
import stat
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lmt.errors import InvalidImageError, InvalidInputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ImageInput",
    "image_fingerprint",
    "load_image",
    "load_images",
]

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image accepted, in pixels; ``LMT_MAX_IMAGE_PIXELS`` overrides it (read at call time)."""

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Largest encoded image accepted, in bytes; ``LMT_MAX_IMAGE_BYTES`` overrides it (read at call time)."""

_URL_TIMEOUT_S = 10  # per connect/read on the socket
_URL_TOTAL_TIMEOUT_S = 60  # for the whole download, so a server dripping bytes cannot hold a worker forever
_URL_CHUNK_BYTES = 256 * 1024

_SUPPORTED_FORMATS = "PNG, JPEG, WebP, GIF, BMP or TIFF"
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# What Pillow raises on a file it cannot read: UnidentifiedImageError and "image file is truncated" are
# OSErrors; broken PNG chunks raise SyntaxError; short reads EOFError or struct.error; bad zlib streams zlib.error.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")  # two letters or more, so "C:\..." stays a path


@dataclass(frozen=True)
class _Limits:
    max_pixels: int
    min_side: int
    max_bytes: int


def load_image(
    image: ImageInput,
    *,
    max_pixels: int | None = None,
    min_side: int = 8,
    max_bytes: int | None = None,
) -> Image.Image:
    """Check one image and return it as a decoded, upright RGB ``PIL.Image.Image``.

    ``image`` is a local path, an http(s) URL, encoded bytes, a PIL image (used as it is, current frame;
    never modified) or a numpy array (H×W, H×W×1, H×W×3 or H×W×4; uint8, uint16, bool or floats in [0, 1]).
    Transparent pixels are composited on white, 16-bit and float images are stretched from their own
    min..max to 0..255, and an animated image gives its first frame.

    ``max_pixels`` defaults to ``LMT_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`, ``max_bytes`` (the
    encoded size, for paths, URLs and bytes) to ``LMT_MAX_IMAGE_BYTES`` or :data:`DEFAULT_MAX_BYTES`.
    Raises :class:`~lmt.errors.InvalidImageError` for anything that is not a usable image.

        >>> load_image(numpy.zeros((32, 48), numpy.uint8)).size
        (48, 32)
    """
    return _load_one(image, _resolve_limits(max_pixels, min_side, max_bytes))


def load_images(
    images: ImageInput | Sequence[ImageInput],
    *,
    max_pixels: int | None = None,
    min_side: int = 8,
    max_bytes: int | None = None,
) -> list[Image.Image]:
    """:func:`load_image` for one image or a list/tuple of them; always returns a list.

    An error about one item says which one, e.g. ``image #3 (index 2): ...``.
    """
    limits = _resolve_limits(max_pixels, min_side, max_bytes)
    if not isinstance(images, (list, tuple)):
        return [_load_one(images, limits)]
    if not images:
        raise InvalidImageError(
            "At least one image is needed, but the list of images is empty. Pass one image or a non-empty list.",
            "至少需要一张图片，但传入的图片列表为空。请传入一张图片或非空的图片列表。",
        )
    loaded = []
    for index, image in enumerate(images):
        try:
            loaded.append(_load_one(image, limits))
        except InvalidImageError as err:
            raise InvalidImageError(
                f"image #{index + 1} (index {index}): {err.message}",
                f"第 {index + 1} 张图片（索引 {index}）：{err.message_zh}",
            ) from err
    return loaded


def image_fingerprint(image: Image.Image) -> str:
    """A stable hex key for an image's content: equal for equal mode, size and pixels.

    Cheap enough to key caches with (a 1024×1024 RGB image hashes in a few milliseconds)::

        key = image_fingerprint(load_image("photo.jpg"))
    """
    if not isinstance(image, Image.Image):
        raise InvalidImageError(
            f"image_fingerprint needs a PIL.Image.Image, got {type(image).__name__}. Call load_image() first.",
            f"image_fingerprint 需要 PIL.Image.Image，但收到的是 {type(image).__name__}。请先调用 load_image()。",
        )
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.mode};{image.width}x{image.height};".encode())
    if image.mode in ("P", "PA"):  # the same indices under another palette are another image
        digest.update(bytes(image.getpalette() or []))
    digest.update(image.tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- limits


def _resolve_limits(max_pixels: int | None, min_side: int, max_bytes: int | None) -> _Limits:
    return _Limits(
        max_pixels=_positive_limit(max_pixels, "max_pixels", "LMT_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS),
        min_side=_positive_int(min_side, "min_side"),
        max_bytes=_positive_limit(max_bytes, "max_bytes", "LMT_MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES),
    )


def _positive_limit(value: int | None, arg_name: str, env_name: str, default: int) -> int:
    if value is not None:
        return _positive_int(value, arg_name)
    raw = os.environ.get(env_name, "").strip()
    if not raw:
        return default
    try:
        parsed = int(raw)
    except ValueError:
        parsed = 0
    if parsed <= 0:
        shown = _shorten(raw, 40)
        raise InvalidInputError(
            f"The environment variable {env_name}={shown!r} is not a positive whole number. "
            f"Set it to one, such as {default}, or unset it to use the default.",
            f"环境变量 {env_name}={shown!r} 不是正整数。请设为正整数（例如 {default}），或删除它以使用默认值。",
        )
    return parsed


def _positive_int(value: object, arg_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(
            f"{arg_name} must be a positive whole number, got {_shorten(repr(value), 40)}. Pass e.g. {arg_name}=1024.",
            f"{arg_name} 必须是正整数，但收到 {_shorten(repr(value), 40)}。请传入例如 {arg_name}=1024。",
        )
    return value


# ------------------------------------------------------------------------------------------- dispatch


def _load_one(image: object, limits: _Limits) -> Image.Image:
    if isinstance(image, Image.Image):
        return _from_pil(image, limits)
    if isinstance(image, np.ndarray):
        return _from_array(image, limits)
    if isinstance(image, bytes):
        return _decode(image, None, limits)
    if isinstance(image, (str, os.PathLike)):
        text = os.fsdecode(image)
        match = _URL_SCHEME.match(text)
        scheme = match.group(1).lower() if match else ""
        if scheme in ("http", "https"):
            return _decode(_fetch_url(text, limits), _shorten(text, 100), limits)
        if scheme and not os.path.exists(text):
            raise _unsupported_scheme(text, scheme)
        return _decode(_read_file(text, limits), _basename(text), limits)
    raise InvalidImageError(
        f"Cannot read an image from a value of type {type(image).__name__}. Pass a file path, an http(s) URL, "
        "bytes, a PIL.Image.Image or a numpy array (H×W, H×W×1, H×W×3 or H×W×4).",
        f"无法从 {type(image).__name__} 类型的值读取图片。请传入文件路径、http(s) 网址、bytes、PIL.Image.Image "
        "或 numpy 数组（H×W、H×W×1、H×W×3 或 H×W×4）。",
    )


# ------------------------------------------------------------------------------------ paths, URLs, bytes


def _read_file(path: str, limits: _Limits) -> bytes:
    """The file's bytes, after checking that it is a readable, non-empty regular file within max_bytes."""
    name = _basename(path)
    if not path:
        raise InvalidImageError(
            "The image path is an empty string. Pass the path of an image file.",
            "图片路径为空字符串。请传入图片文件的路径。",
        )
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidImageError(
            f"Image file '{name}' does not exist. Check the path and the file name.",
            f"图片文件 '{name}' 不存在。请检查路径和文件名。",
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        raise _unreadable(name, exc) from None
    if stat.S_ISDIR(info.st_mode):
        raise InvalidImageError(
            f"'{name}' is a folder, not an image file. Pass the path of an image file inside it.",
            f"'{name}' 是文件夹，不是图片文件。请传入其中某个图片文件的路径。",
        )
    if not stat.S_ISREG(info.st_mode):
        raise InvalidImageError(
            f"'{name}' is not a regular file (a device, pipe or socket). Pass the path of an image file.",
            f"'{name}' 不是普通文件（而是设备、管道或套接字）。请传入图片文件的路径。",
        )
    _check_byte_count(info.st_size, name, limits)
    try:
        with open(path, "rb") as file:
            data = file.read(limits.max_bytes + 1)  # +1: a file that grew since stat() is still caught
    except OSError as exc:
        raise _unreadable(name, exc) from None
    _check_byte_count(len(data), name, limits)
    return data


def _fetch_url(url: str, limits: _Limits) -> bytes:
    """The body of an http(s) URL; never more than max_bytes + 1 bytes are read."""
    shown = _shorten(url, 100)
    try:
        return _download(url, shown, limits)
    except InvalidImageError:
        raise
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
    raise InvalidImageError(
        f"Could not fetch the image URL '{shown}' ({_shorten(reason, 200)}). "
        "Check the URL, or download the image first and pass the local file.",
        f"无法获取图片网址 '{shown}'（{_shorten(reason, 200)}）。请检查网址，或先下载图片再传入本地文件。",
    )


def _download(url: str, shown: str, limits: _Limits) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "lmt-image-loader"})
    deadline = time.monotonic() + _URL_TOTAL_TIMEOUT_S
    logger.debug("Fetching image %s", shown)
    with urllib.request.urlopen(request, timeout=_URL_TIMEOUT_S) as response:
        declared = (response.headers.get("Content-Length") or "").strip()
        if declared.isdigit():
            _check_byte_count(int(declared), shown, limits)
        chunks: list[bytes] = []
        received = 0
        while received <= limits.max_bytes:
            chunk = response.read(min(_URL_CHUNK_BYTES, limits.max_bytes + 1 - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the download took longer than {_URL_TOTAL_TIMEOUT_S} s")
    data = b"".join(chunks)
    _check_byte_count(len(data), shown, limits, at_least=True)
    return data


def _check_byte_count(size: int, name: str | None, limits: _Limits, *, at_least: bool = False) -> None:
    if size == 0:
        raise InvalidImageError(
            f"{_subject(name)} is empty (0 bytes). Pass a real image file.",
            f"{_subject_zh(name)}为空（0 字节）。请传入真实的图片文件。",
        )
    if size > limits.max_bytes:
        more = "more than " if at_least else ""
        more_zh = "超过 " if at_least else ""
        raise InvalidImageError(
            f"{_subject(name)} is {more}{_format_bytes(size)}, above the limit of {_format_bytes(limits.max_bytes)}. "
            "Compress or downscale it first, or raise the limit with max_bytes=... or the "
            "LMT_MAX_IMAGE_BYTES environment variable.",
            f"{_subject_zh(name)}大小为 {more_zh}{_format_bytes(size)}，超过上限 {_format_bytes(limits.max_bytes)}。"
            "请先压缩或缩小图片，或用 max_bytes=... 或环境变量 LMT_MAX_IMAGE_BYTES 提高上限。",
        )


# ------------------------------------------------------------------------------------------- decoding


def _decode(data: bytes, name: str | None, limits: _Limits) -> Image.Image:
    _check_byte_count(len(data), name, limits)
    with _pillow_errors(name, limits):
        opened = Image.open(io.BytesIO(data))  # lazy: reads the header only
    with opened:
        _check_dimensions(opened.size, name, limits)  # before a single pixel is decoded
        with _pillow_errors(name, limits):
            opened.load()
        return _normalise(opened, name)


def _from_pil(image: Image.Image, limits: _Limits) -> Image.Image:
    filename = getattr(image, "filename", None)
    name = _basename(os.fsdecode(filename)) if filename else None
    _check_dimensions(image.size, name, limits)
    with _pillow_errors(name, limits):
        image.load()  # a lazily opened image decodes here; a loaded one is left as it is
    return _normalise(image, name)


@contextlib.contextmanager
def _pillow_errors(name: str | None, limits: _Limits) -> Iterator[None]:
    """Turn what Pillow raises on a bad file into an InvalidImageError."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own limit (Image.MAX_IMAGE_PIXELS) refuses the image while opening it, before we see its size.
        raise _bomb_error(exc, name, limits) from exc
    except _DECODE_ERRORS as exc:
        raise _undecodable(name, exc) from exc


def _check_dimensions(size: tuple[int, int], name: str | None, limits: _Limits) -> None:
    width, height = size
    pixels = width * height
    if pixels > limits.max_pixels:
        raise _too_many_pixels(name, f"{width}×{height} = {_megapixels(pixels)} megapixels", limits)
    if min(width, height) < limits.min_side:
        raise InvalidImageError(
            f"{_subject(name)} is {width}×{height} pixels, too small: both sides must be at least "
            f"{limits.min_side} pixels. Pass a larger image, or lower the limit with min_side=...",
            f"{_subject_zh(name)}为 {width}×{height} 像素，太小：宽和高都至少需要 {limits.min_side} 像素。"
            "请传入更大的图片，或用 min_side=... 降低下限。",
        )


def _normalise(image: Image.Image, name: str | None) -> Image.Image:
    """An upright RGB copy of a decoded image; the input is never modified."""
    try:
        upright = ImageOps.exif_transpose(image)  # returns a copy even when there is nothing to turn
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error) as exc:
        # EXIF is metadata: a broken block should not reject pixels that decode fine.
        logger.warning("Ignoring the unreadable EXIF orientation of %s: %s", name or "an image", exc)
        upright = image.copy()
    return _to_rgb(upright, name)


def _to_rgb(image: Image.Image, name: str | None) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return Image.fromarray(_stretch_to_uint8(np.asarray(image), name)).convert("RGB")
    if _has_alpha(image):
        if image.mode == "La":  # Pillow converts premultiplied La only to LA
            image = image.convert("LA")
        return _on_white(image.convert("RGBA"))
    try:
        return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX ...
    except ValueError:
        raise InvalidImageError(
            f"{_subject(name)} has pixel mode {image.mode!r}, which cannot be converted to RGB. "
            "Convert it to RGB yourself first, or save it as PNG or JPEG.",
            f"{_subject_zh(name)}的像素模式为 {image.mode!r}，无法转换为 RGB。请先自行转换为 RGB，或另存为 PNG 或 JPEG。",
        ) from None


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _on_white(rgba: Image.Image) -> Image.Image:
    """Composite on white, not black: a transparent logo should look like it does in a browser."""
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _stretch_to_uint8(values: np.ndarray, name: str | None) -> np.ndarray:
    """Map values from their own min..max to 0..255 (a constant image maps to 0)."""
    work = values.astype(np.float32)
    if not np.isfinite(work).all():
        raise InvalidImageError(
            f"{_subject(name)} contains NaN or infinite values. Replace them first, e.g. with numpy.nan_to_num.",
            f"{_subject_zh(name)}包含 NaN 或无穷大的值。请先替换它们，例如使用 numpy.nan_to_num。",
        )
    low, high = float(work.min()), float(work.max())
    if high == low:
        return np.zeros(values.shape, np.uint8)
    work -= low
    work *= 255.0 / (high - low)
    np.rint(work, out=work)
    return np.clip(work, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- numpy arrays


def _from_array(array: np.ndarray, limits: _Limits) -> Image.Image:
    if not array.dtype.isnative:  # e.g. big-endian '>u2' read from a FITS or TIFF file
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        hint = hint_zh = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " For a channels-first C×H×W array, pass array.transpose(1, 2, 0)."
            hint_zh = "通道在前的 C×H×W 数组请传入 array.transpose(1, 2, 0)。"
        raise InvalidImageError(
            f"A numpy array of shape {array.shape} is not an image. Expected H×W (grayscale), H×W×1, "
            f"H×W×3 (RGB) or H×W×4 (RGBA).{hint}",
            f"形状为 {array.shape} 的 numpy 数组不是图片。应为 H×W（灰度）、H×W×1、H×W×3（RGB）或 H×W×4（RGBA）。{hint_zh}",
        )
    height, width = array.shape[:2]
    _check_dimensions((width, height), None, limits)
    _check_array_values(array)
    if array.ndim == 3 and array.shape[2] == 4:
        colour = _array_to_uint8(array[:, :, :3], alpha=False)
        alpha = _array_to_uint8(array[:, :, 3], alpha=True)
        return _on_white(Image.fromarray(np.ascontiguousarray(np.dstack([colour, alpha]))))
    return Image.fromarray(np.ascontiguousarray(_array_to_uint8(array, alpha=False))).convert("RGB")


def _check_array_values(array: np.ndarray) -> None:
    if array.dtype in (np.uint8, np.uint16, np.bool_):
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidImageError(
            f"A numpy array of dtype {array.dtype} is not supported as an image. Use uint8 (0..255), uint16, "
            "bool, or floats in [0, 1]; e.g. array.astype(numpy.uint8) for values already in 0..255.",
            f"不支持 dtype 为 {array.dtype} 的 numpy 数组作为图片。请使用 uint8（0..255）、uint16、bool 或 [0, 1] 内的浮点数；"
            "若数值已在 0..255 内，可用 array.astype(numpy.uint8)。",
        )
    if not np.isfinite(array).all():
        raise InvalidImageError(
            "The float array contains NaN or infinite values. Replace them first, e.g. with numpy.nan_to_num.",
            "浮点数组包含 NaN 或无穷大的值。请先替换它们，例如使用 numpy.nan_to_num。",
        )
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise InvalidImageError(
            f"The float array has values from {low:g} to {high:g}, outside [0, 1]. Scale it into [0, 1] "
            "(e.g. array / 255) or convert it to uint8.",
            f"浮点数组的取值范围为 {low:g} 到 {high:g}，超出 [0, 1]。请缩放到 [0, 1]（例如 array / 255）或转换为 uint8。",
        )


def _array_to_uint8(array: np.ndarray, *, alpha: bool) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        # Colour is stretched like a 16-bit image file; alpha keeps its meaning (65535 = opaque).
        return np.rint(array / 257.0).astype(np.uint8) if alpha else _stretch_to_uint8(array, None)
    return np.rint(array * 255.0).astype(np.uint8)  # floats, already checked to lie in [0, 1]


# ------------------------------------------------------------------------------------------- messages


def _too_many_pixels(name: str | None, size_text: str, limits: _Limits) -> InvalidImageError:
    limit = _megapixels(limits.max_pixels)
    return InvalidImageError(
        f"{_subject(name)} is {size_text}, above the limit of {limit} megapixels. Downscale it first, "
        "or raise the limit with max_pixels=... or the LMT_MAX_IMAGE_PIXELS environment variable.",
        f"{_subject_zh(name)}为 {size_text.replace('megapixels', '百万像素')}，超过上限 {limit} 百万像素。"
        "请先缩小图片，或用 max_pixels=... 或环境变量 LMT_MAX_IMAGE_PIXELS 提高上限。",
    )


def _bomb_error(exc: Exception, name: str | None, limits: _Limits) -> InvalidImageError:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(match.group(1)) if match else None
    if pixels is not None and pixels > limits.max_pixels:
        return _too_many_pixels(name, f"{_megapixels(pixels)} megapixels", limits)
    size_text = f"{_megapixels(pixels)} megapixels" if pixels is not None else "very large"
    return InvalidImageError(
        f"{_subject(name)} is {size_text}, above Pillow's own decompression-bomb limit "
        "(PIL.Image.MAX_IMAGE_PIXELS). Downscale it first, or raise PIL.Image.MAX_IMAGE_PIXELS in your program "
        "as well as max_pixels.",
        f"{_subject_zh(name)}为 {size_text.replace('megapixels', '百万像素')}，超过 Pillow 自身的解压炸弹上限"
        "（PIL.Image.MAX_IMAGE_PIXELS）。请先缩小图片，或在程序中同时提高 PIL.Image.MAX_IMAGE_PIXELS 和 max_pixels。",
    )


def _undecodable(name: str | None, exc: BaseException) -> InvalidImageError:
    if isinstance(exc, UnidentifiedImageError):
        # Pillow's own text names the file object, and for a path the full (server-side) path.
        detail, detail_zh = "not a recognised image format", "无法识别的图片格式"
    else:
        detail = detail_zh = _shorten(str(exc) or type(exc).__name__, 200)
    what, what_zh = (f"'{name}'", f"'{name}' ") if name else ("The data", "数据")
    return InvalidImageError(
        f"{what} cannot be decoded as an image (is it truncated or not an image?): {detail}. "
        f"Pass a complete image file in a supported format: {_SUPPORTED_FORMATS}.",
        f"{what_zh}无法解码为图片（文件是否被截断，或根本不是图片？）：{detail_zh}。"
        f"请传入完整的、受支持格式的图片文件：{_SUPPORTED_FORMATS}。",
    )


def _unreadable(name: str, exc: BaseException) -> InvalidImageError:
    reason = getattr(exc, "strerror", None) or type(exc).__name__  # strerror never holds the path
    return InvalidImageError(
        f"Image file '{name}' cannot be read ({reason}). Check the path and the file's permissions.",
        f"无法读取图片文件 '{name}'（{reason}）。请检查路径和文件权限。",
    )


def _unsupported_scheme(text: str, scheme: str) -> InvalidImageError:
    shown = _shorten(text, 60)
    return InvalidImageError(
        f"'{shown}' uses the {scheme}: scheme, which is not supported: only local paths and http(s) URLs are. "
        "Download the file first and pass its local path (for a file: URL, pass the path itself; "
        "for a data: URL, pass the decoded bytes).",
        f"'{shown}' 使用 {scheme}: 协议，不受支持：只支持本地路径和 http(s) 网址。请先下载文件并传入本地路径"
        "（file: 网址请直接传入路径；data: 网址请传入解码后的 bytes）。",
    )


def _subject(name: str | None) -> str:
    return f"Image '{name}'" if name else "Image"


def _subject_zh(name: str | None) -> str:
    return f"图片 '{name}' " if name else "图片"


def _basename(path: str) -> str:
    """Only the file name: a full server-side path (a Gradio temp folder) must never reach the user."""
    return _shorten(os.path.basename(os.path.normpath(path)) if path else "", 100)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f}".removesuffix(".0")


def _format_bytes(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size:,} bytes"
    return f"{size / (1024 * 1024):,.1f}".removesuffix(".0") + " MiB"
