"""lmt.images: every hostile or odd input gives a clear bilingual error; every odd mode becomes sane RGB."""

from __future__ import annotations

import functools
import http.server
import io
import socket
import struct
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from lmt.errors import InvalidImageError, InvalidInputError
from lmt.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    image_fingerprint,
    load_image,
    load_images,
)

# ----------------------------------------------------------------------------------------------- helpers


def expect_error(call, *facts: str, cls: type[Exception] = InvalidImageError) -> Exception:
    """Run call(); check the exact error class, that each fact is in the message, and the Chinese message."""
    with pytest.raises(cls) as info:
        call()
    err = info.value
    assert type(err) is cls
    for fact in facts:
        assert fact.lower() in err.message.lower(), (fact, err.message)
    assert err.message_zh and err.message_zh != err.message
    return err


def png_bytes(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save_args)
    return buffer.getvalue()


def noise(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width×height pixels (8-bit RGB); the pixel data is a stub."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def png_bomb(tmp_path_factory) -> Path:
    """12000×12000 1-bit PNG, all zeros: about 18 KB on disk, 144 megapixels decoded."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (12000, 12000)).save(path, "PNG", optimize=True)
    assert path.stat().st_size < 100_000
    return path


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """Serve tmp_path on 127.0.0.1 from a thread; yields the base URL."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------------------ bad paths


def test_missing_file_names_basename_only(tmp_path):
    path = tmp_path / "deep" / "missing.png"
    err = expect_error(lambda: load_image(path), "missing.png", "does not exist")
    assert str(tmp_path) not in err.message and str(tmp_path) not in err.message_zh


def test_directory(tmp_path):
    (tmp_path / "photos").mkdir()
    expect_error(lambda: load_image(str(tmp_path / "photos")), "photos", "folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    expect_error(lambda: load_image(path), "empty.png", "empty")


def test_text_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 10)
    err = expect_error(lambda: load_image(path), "notes.png", "cannot be decoded", "PNG, JPEG")
    assert str(tmp_path) not in err.message and str(tmp_path) not in err.message_zh


def test_random_bytes():
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    expect_error(lambda: load_image(data), "cannot be decoded")


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    noise((128, 128)).save(buffer, "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    expect_error(lambda: load_image(path), "cut.jpg", "cannot be decoded", "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png():
    data = png_bytes(noise((128, 128)))
    expect_error(lambda: load_image(data[: len(data) // 2]), "cannot be decoded")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_unreadable_pil_image_from_truncated_file(tmp_path):
    path = tmp_path / "lazy.png"
    data = png_bytes(noise((128, 128)))
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as lazy:
        expect_error(lambda: load_image(lazy), "lazy.png", "cannot be decoded")


# ------------------------------------------------------------------------------------- sizes and bombs


def test_header_claiming_30000_square_is_refused_fast():
    data = png_with_header_size(30000, 30000)
    assert len(data) < 200
    start = time.perf_counter()
    expect_error(lambda: load_image(data), "900 megapixels", "limit of 64 megapixels", "max_pixels")
    assert time.perf_counter() - start < 0.5


def test_header_above_pillows_own_limit_even_when_max_pixels_allows_it():
    data = png_with_header_size(30000, 30000)
    expect_error(lambda: load_image(data, max_pixels=10**12), "900 megapixels", "MAX_IMAGE_PIXELS")


def test_png_bomb_refused_without_decoding(png_bomb):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        err = expect_error(lambda: load_image(png_bomb), "bomb.png", "12000×12000", "144 megapixels")
    assert time.perf_counter() - start < 1.0
    assert "LMT_MAX_IMAGE_PIXELS" in err.message


def test_png_bomb_refused_when_pillow_warnings_are_errors(png_bomb):
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        expect_error(lambda: load_image(png_bomb.read_bytes()), "144 megapixels")


def test_max_pixels_from_environment_at_call_time(monkeypatch):
    image = noise((20, 20))
    monkeypatch.setenv("LMT_MAX_IMAGE_PIXELS", "100")
    expect_error(lambda: load_image(image), "20×20", "max_pixels")
    monkeypatch.setenv("LMT_MAX_IMAGE_PIXELS", "lots")
    expect_error(lambda: load_image(image), "LMT_MAX_IMAGE_PIXELS", cls=InvalidInputError)
    monkeypatch.delenv("LMT_MAX_IMAGE_PIXELS")
    assert load_image(image).size == (20, 20)
    assert DEFAULT_MAX_PIXELS == 64_000_000 and DEFAULT_MAX_BYTES == 50 * 1024 * 1024


def test_bad_limit_argument():
    expect_error(lambda: load_image(noise(), max_pixels=-1), "max_pixels", cls=InvalidInputError)


def test_one_pixel_image():
    expect_error(lambda: load_image(Image.new("RGB", (1, 1))), "1×1", "at least 8", "min_side")


def test_seven_by_hundred_image(tmp_path):
    path = tmp_path / "thin.png"
    Image.new("RGB", (7, 100)).save(path)
    expect_error(lambda: load_image(path), "thin.png", "7×100", "at least 8")
    assert load_image(path, min_side=4).size == (7, 100)


def test_bytes_over_max_bytes():
    data = png_bytes(noise())
    expect_error(
        lambda: load_image(data, max_bytes=100), f"{len(data):,} bytes", "limit of 100 bytes", "max_bytes"
    )


def test_file_over_max_bytes_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(noise()))
    monkeypatch.setenv("LMT_MAX_IMAGE_BYTES", "1000")
    expect_error(lambda: load_image(path), "big.png", "limit of 1,000 bytes", "LMT_MAX_IMAGE_BYTES")


# ------------------------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("ftp://example.com/cat.png", "ftp"),
        ("file:///tmp/cat.png", "file"),
        ("data:image/png;base64,AAAA", "data"),
    ],
)
def test_unsupported_url_schemes(url, scheme):
    expect_error(lambda: load_image(url), f"the {scheme}: scheme", "not supported", "download")


def test_unreachable_url():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cat.png"
    expect_error(lambda: load_image(url), "could not fetch", url, "download the image first")


def test_url_from_local_server(http_root, tmp_path):
    (tmp_path / "cat.png").write_bytes(png_bytes(Image.new("RGB", (16, 12), (10, 20, 30))))
    image = load_image(f"{http_root}/cat.png")
    assert image.mode == "RGB" and image.size == (16, 12)
    assert image.getpixel((0, 0)) == (10, 20, 30)


def test_url_not_found_and_too_large(http_root, tmp_path):
    expect_error(lambda: load_image(f"{http_root}/nope.png"), "could not fetch", "404")
    (tmp_path / "cat.png").write_bytes(png_bytes(noise()))
    expect_error(lambda: load_image(f"{http_root}/cat.png", max_bytes=500), "limit of 500 bytes")


# ---------------------------------------------------------------------------------------- numpy and types


@pytest.mark.parametrize("shape", [(16, 16, 2), (16, 16, 5), (2, 16, 16, 3), (16,)])
def test_numpy_bad_shape(shape):
    expect_error(lambda: load_image(np.zeros(shape, np.uint8)), str(shape), "H×W×3")


def test_numpy_channels_first_hint():
    expect_error(lambda: load_image(np.zeros((3, 16, 16), np.uint8)), "transpose(1, 2, 0)")


def test_numpy_float_nan_and_out_of_range():
    array = np.full((16, 16), 0.5)
    array[3, 3] = np.nan
    expect_error(lambda: load_image(array), "NaN")
    expect_error(lambda: load_image(np.full((16, 16, 3), 255.0)), "outside [0, 1]")


def test_numpy_bad_dtype():
    expect_error(lambda: load_image(np.zeros((16, 16), np.int64)), "int64", "uint8")


@pytest.mark.parametrize("value", [None, 42, {"image": "cat.png"}])
def test_wrong_type(value):
    expect_error(lambda: load_image(value), type(value).__name__, "PIL.Image.Image", "numpy")


def test_numpy_inputs():
    gray = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    image = load_image(gray)
    assert image.mode == "RGB" and image.size == (16, 16)
    assert image.getpixel((5, 1)) == (21, 21, 21)
    assert load_image(gray[:, :, None]).getpixel((5, 1)) == (21, 21, 21)

    floats = np.zeros((8, 10, 3))
    floats[0, 0] = (1.0, 0.5, 0.0)
    assert load_image(floats).getpixel((0, 0)) == (255, 128, 0)

    wide = np.zeros((8, 8), np.uint16)
    wide[0, 0], wide[0, 1] = 65535, 32768
    assert load_image(wide).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(wide).getpixel((1, 0)) == (128, 128, 128)
    assert load_image(np.full((8, 8), 700, np.uint16)).getpixel((0, 0)) == (0, 0, 0)

    mask = np.zeros((8, 8), bool)
    mask[2, 2] = True
    assert load_image(mask).getpixel((2, 2)) == (255, 255, 255)

    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)


# ----------------------------------------------------------------------------------------- conversions


def test_rgba_transparent_pixel_becomes_white():
    image = Image.new("RGBA", (8, 8), (0, 0, 255, 255))
    image.putpixel((0, 0), (255, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 128))
    result = load_image(png_bytes(image))
    assert result.mode == "RGB"
    assert result.getpixel((0, 0)) == (255, 255, 255)
    assert result.getpixel((2, 0)) == (0, 0, 255)
    assert all(126 <= channel <= 128 for channel in result.getpixel((1, 0)))


def test_la_becomes_white_where_transparent():
    image = Image.new("LA", (8, 8), (0, 0))
    assert load_image(image).getpixel((0, 0)) == (255, 255, 255)


def test_palette_transparency_becomes_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.putpixel((3, 3), 1)
    image.info["transparency"] = 0
    for candidate in (image, png_bytes(image, transparency=0)):
        result = load_image(candidate)
        assert result.getpixel((0, 0)) == (255, 255, 255)
        assert result.getpixel((3, 3)) == (0, 255, 0)


def test_cmyk_to_rgb():
    image = Image.new("CMYK", (8, 8), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 0))
    image.putpixel((2, 0), (0, 0, 0, 255))
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    result = load_image(buffer.getvalue())
    assert result.getpixel((0, 0)) == (255, 255, 255)
    assert result.getpixel((1, 0)) == (0, 255, 255)
    assert result.getpixel((2, 0)) == (0, 0, 0)


def test_sixteen_bit_gray_is_stretched(tmp_path):
    values = np.tile(np.array([0, 600, 1200, 2040], np.uint16), (8, 2))
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    path = tmp_path / "depth.png"
    image.save(path)
    for candidate in (image, path):
        result = load_image(candidate)
        assert [result.getpixel((x, 0)) for x in range(4)] == [(v, v, v) for v in (0, 75, 150, 255)]
    assert load_image(Image.new("I;16", (8, 8), 1234)).getpixel((0, 0)) == (0, 0, 0)


def test_float_mode_image():
    image = Image.fromarray(np.linspace(-1.0, 1.0, 64, dtype=np.float32).reshape(8, 8))
    assert image.mode == "F"
    result = load_image(image)
    assert result.getpixel((0, 0)) == (0, 0, 0) and result.getpixel((7, 7)) == (255, 255, 255)


def test_gray_and_bilevel_to_rgb():
    gray = Image.new("L", (8, 8), 77)
    assert load_image(gray).getpixel((4, 4)) == (77, 77, 77)
    assert load_image(Image.new("1", (8, 8), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    with Image.open(path) as stored:
        assert stored.size == (40, 20)
    assert load_image(path).size == (20, 40)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = load_image(buffer.getvalue())
    assert result.mode == "RGB" and result.getpixel((8, 8)) == (255, 0, 0)


def test_input_pil_image_is_not_modified():
    image = Image.new("RGBA", (12, 12), (10, 20, 30, 0))
    before = (image.mode, image.size, image.tobytes(), dict(image.info))
    result = load_image(image)
    assert result is not image and result.mode == "RGB"
    assert (image.mode, image.size, image.tobytes(), dict(image.info)) == before
    rgb = noise((16, 16))
    assert load_image(rgb) is not rgb


# ------------------------------------------------------------------------------------ lists, fingerprint


def test_load_images_single_and_list(tmp_path):
    path = tmp_path / "a.png"
    noise().save(path)
    assert [im.size for im in load_images(path)] == [(64, 48)]
    assert len(load_images((path, noise(), np.zeros((8, 8), np.uint8)))) == 3


def test_load_images_names_the_bad_index(tmp_path):
    good = noise()
    err = expect_error(lambda: load_images([good, good, tmp_path / "gone.jpg", good]), "image #3", "index 2")
    assert "gone.jpg" in err.message and "第 3 张" in err.message_zh


def test_load_images_empty_list():
    expect_error(lambda: load_images([]), "at least one image")


def test_fingerprint_equal_and_different():
    first, second = noise((1024, 1024)), noise((1024, 1024))
    assert image_fingerprint(first) == image_fingerprint(second)
    second.putpixel((500, 500), tuple(255 - c for c in second.getpixel((500, 500))))
    assert image_fingerprint(first) != image_fingerprint(second)
    assert image_fingerprint(first) != image_fingerprint(first.convert("L"))
    start = time.perf_counter()
    image_fingerprint(first)
    assert time.perf_counter() - start < 0.1
