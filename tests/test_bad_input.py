"""Bad images and bad arguments reach the task calls and raise the right LmtError, with the fix in the message."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import lmt


@pytest.fixture(scope="module")
def zero_shot():
    return lmt.pipeline("zero-shot-image-classification", model="clip-vit-b32", weights="tiny")


@pytest.fixture(scope="module")
def segment():
    return lmt.pipeline("mask-generation", model="sam-vit-base", weights="tiny")


@pytest.fixture(scope="module")
def detect():
    return lmt.pipeline("zero-shot-object-detection", model="owlv2-b16", weights="tiny")


@pytest.fixture(scope="module")
def vqa():
    return lmt.pipeline("visual-question-answering", model="blip2-opt-2.7b", weights="tiny")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (invalid) body: a decompression-bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _assert_clear(error: lmt.LmtError, *fragments: str) -> None:
    message = str(error)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    assert error.message_zh and error.message_zh != error.message
    assert "/tmp/" not in message and "Traceback" not in message


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---- bad images -------------------------------------------------------------------------------------------------
def test_truncated_file(zero_shot, tmp_path):
    path = tmp_path / "truncated.png"
    path.write_bytes(_png_bytes(Image.new("RGB", (64, 64), "red"))[:60])
    with pytest.raises(lmt.InvalidImageError) as info:
        zero_shot(str(path), labels=["a", "b"])
    _assert_clear(info.value, "truncated.png", "decode")


def test_zero_byte_file(zero_shot, tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(lmt.InvalidImageError) as info:
        zero_shot(str(path), labels=["a", "b"])
    _assert_clear(info.value, "empty")


def test_text_file(zero_shot, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 10)
    with pytest.raises(lmt.InvalidImageError) as info:
        zero_shot(str(path), labels=["a", "b"])
    _assert_clear(info.value, "notes.png", "decode")


def test_huge_png_header_is_refused_before_decoding(zero_shot, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(30000, 30000))
    with pytest.raises(lmt.InvalidImageError) as info:
        zero_shot(str(path), labels=["a", "b"])
    _assert_clear(info.value, "megapixels")


def test_one_pixel_image(zero_shot):
    with pytest.raises(lmt.InvalidImageError) as info:
        zero_shot(Image.new("RGB", (1, 1)), labels=["a", "b"])
    _assert_clear(info.value, "1")


def test_missing_file_and_bad_array(zero_shot):
    with pytest.raises(lmt.InvalidImageError) as info:
        zero_shot("does-not-exist.png", labels=["a", "b"])
    _assert_clear(info.value, "does-not-exist.png")
    with pytest.raises(lmt.InvalidImageError) as info:
        zero_shot(np.zeros((4, 4, 4, 4), dtype=np.uint8), labels=["a", "b"])
    _assert_clear(info.value, "shape")
    with pytest.raises(lmt.InvalidImageError):
        zero_shot(None, labels=["a", "b"])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Image.fromarray(np.linspace(0, 65535, 64 * 48, dtype=np.uint16).reshape(48, 64)), id="16-bit"),
        pytest.param(lambda: Image.new("CMYK", (64, 48), (0, 255, 255, 0)), id="cmyk"),
        pytest.param(lambda: _palette_with_transparency(), id="palette-transparency"),
        pytest.param(lambda: Image.new("LA", (64, 48), (128, 0)), id="gray-alpha"),
        pytest.param(lambda: Image.new("1", (64, 48), 1), id="1-bit"),
    ],
)
def test_odd_modes_are_converted_and_classified(zero_shot, make):
    image = make()
    result = zero_shot(image, labels=["a", "b"])
    assert sum(p.score for p in result.predictions) == pytest.approx(1.0, abs=1e-5)
    # the same result as the explicitly converted RGB image: the SDK's conversion is what reaches the model
    assert result.as_label_dict() == pytest.approx(
        zero_shot(lmt.load_image(image), labels=["a", "b"]).as_label_dict(), abs=1e-6
    )


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (64, 48), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.info["transparency"] = 0
    return image


def test_cmyk_becomes_the_right_rgb():
    assert lmt.load_image(Image.new("CMYK", (16, 16), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)
    transparent = lmt.load_image(_palette_with_transparency())
    assert transparent.getpixel((0, 0)) == (255, 255, 255), "transparent pixels become white, not black"


# ---- bad arguments ----------------------------------------------------------------------------------------------
def test_empty_labels(zero_shot, rgb_image):
    for labels in ([], "", " , ,", ["  "]):
        with pytest.raises(lmt.InvalidInputError) as info:
            zero_shot(rgb_image, labels=labels)
        _assert_clear(info.value, "at least one")


def test_too_many_labels(zero_shot, rgb_image):
    with pytest.raises(lmt.InvalidInputError) as info:
        zero_shot(rgb_image, labels=[f"label {i}" for i in range(2000)])
    _assert_clear(info.value, "2000", "at most 1000")


def test_duplicate_and_non_string_labels(zero_shot, rgb_image):
    with pytest.raises(lmt.InvalidInputError) as info:
        zero_shot(rgb_image, labels=["cat", "dog", "cat"])
    _assert_clear(info.value, "duplicate", "cat")
    with pytest.raises(lmt.InvalidInputError) as info:
        zero_shot(rgb_image, labels=["cat", 3])
    _assert_clear(info.value, "string")
    with pytest.raises(lmt.InvalidInputError):
        zero_shot(rgb_image, labels=42)


def test_template_without_placeholder(zero_shot, rgb_image):
    with pytest.raises(lmt.InvalidInputError) as info:
        zero_shot(rgb_image, labels=["cat"], template="a photo")
    _assert_clear(info.value, "{}")


def test_unknown_model_and_task():
    with pytest.raises(lmt.UnknownModelError) as info:
        lmt.pipeline("zero-shot-image-classification", model="clipp-vit-b32", weights="tiny")
    _assert_clear(info.value, "clip-vit-b32", "lmt models")
    with pytest.raises(lmt.UnsupportedTaskError) as info:
        lmt.pipeline("image-segmentation-3d")
    _assert_clear(info.value, "mask-generation")
    with pytest.raises(lmt.UnsupportedTaskError) as info:
        lmt.pipeline("zero-shot-object-detection", model="clip-vit-b32", weights="tiny")
    _assert_clear(info.value, "lmt models --task")


def test_points_outside_the_image(segment, rgb_image):
    with pytest.raises(lmt.InvalidInputError) as info:
        segment(rgb_image, points=[(10, 10, 1), (500, 20, 1)])
    _assert_clear(info.value, "outside", "60x50")
    with pytest.raises(lmt.InvalidInputError) as info:
        segment(rgb_image, points=[(-1, 10, 1)])
    _assert_clear(info.value, "outside")


def test_bad_point_labels_and_boxes(segment, rgb_image):
    with pytest.raises(lmt.InvalidInputError) as info:
        segment(rgb_image, points=[(10, 10, 2)])
    _assert_clear(info.value, "label")
    with pytest.raises(lmt.InvalidInputError) as info:
        segment(rgb_image, boxes=[(40, 10, 20, 30)])
    _assert_clear(info.value, "x0 < x1")
    with pytest.raises(lmt.InvalidInputError) as info:
        segment(rgb_image, points=[(float("nan"), 10, 1)])
    _assert_clear(info.value, "outside")
    with pytest.raises(lmt.InvalidInputError):
        segment(rgb_image, points=[(1, 1, 1)], boxes=[(0, 0, 10, 10), (5, 5, 20, 20)])
    with pytest.raises(lmt.InvalidInputError):
        segment(rgb_image, points="10,10")


def test_negative_and_nan_thresholds(detect, rgb_image):
    for value in (-0.1, float("nan"), float("inf"), 1.5, "0.5"):
        with pytest.raises(lmt.InvalidInputError) as info:
            detect(rgb_image, queries=["car"], threshold=value)
        _assert_clear(info.value, "threshold", "between 0 and 1")


def test_bad_top_k(zero_shot, detect, rgb_image):
    for value in (0, -3, 2.5, float("nan"), True):
        with pytest.raises(lmt.InvalidInputError) as info:
            zero_shot(rgb_image, labels=["a", "b"], top_k=value)
        _assert_clear(info.value, "top_k")
    with pytest.raises(lmt.InvalidInputError):
        detect(rgb_image, queries=[f"thing {i}" for i in range(101)])


def test_empty_and_oversized_questions(vqa, rgb_image):
    with pytest.raises(lmt.InvalidInputError) as info:
        vqa(rgb_image, question="")
    _assert_clear(info.value, "empty")
    with pytest.raises(lmt.InvalidInputError) as info:
        vqa(rgb_image, question="why? " * 1000)
    _assert_clear(info.value, "limit")


def test_list_with_one_bad_image_names_it(zero_shot, rgb_image, tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(lmt.InvalidImageError) as info:
        zero_shot([rgb_image, str(path)], labels=["a", "b"])
    _assert_clear(info.value, "#2", "broken.jpg")


def test_fractional_point_label_is_refused(segment, rgb_image):
    with pytest.raises(lmt.InvalidInputError) as info:
        segment(rgb_image, points=[(10, 10, 0.5)])
    _assert_clear(info.value, "label")


def test_prompt_longer_than_the_language_model_is_refused(vqa, rgb_image):
    limit = vqa.model.config.text_config.max_position_embeddings
    with pytest.raises(lmt.InvalidInputError) as info:
        vqa(rgb_image, question="cat " * (limit + 10), max_new_tokens=4)
    _assert_clear(info.value, "tokens", "max_new_tokens")
