"""Hostile input against running Spaces, through the real gradio_client.

Every case ends in one of two ways: a clear, bilingual error with no traceback or server path, or a correct
result (odd image modes are converted and classified; HTML in labels comes back verbatim as data). After the
hostile cases each Space still answers a normal request.
"""

from __future__ import annotations

import io
import re
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from tests.spaces.conftest import EXAMPLES, app_error

CAT = EXAMPLES / "cat.png"
STREET = EXAMPLES / "street.png"
TEMPLATE = "a photo of a {}."
CLIP = "clip-vit-b32 (tiny)"
SAM = "sam-vit-base (tiny)"
OWL = "owlv2-b16 (tiny)"
BLIP = "blip2-opt-2.7b (tiny)"

CJK = re.compile(r"[\u4e00-\u9fff]")
PATH_LIKE = re.compile(r"(?:^|[\s'\"(])/(?:tmp|home|root|usr|var|work|private)/|[A-Za-z]:\\")


def assert_clean_bilingual(message: str) -> None:
    """A user-facing error: Chinese and English, and nothing from the server's insides."""
    assert CJK.search(message), message
    assert re.search(r"[A-Za-z]{3,}", message), message
    assert "Traceback" not in message and "gradio" not in message.lower(), message
    assert not PATH_LIKE.search(message), message


def bilingual_error(call) -> str:
    message = app_error(call)
    assert_clean_bilingual(message)
    return message


# ---- hostile files, written once per module ---------------------------------------------------------------------
def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (valid CRC) with one tiny IDAT: a bomb by its header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    out: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        out[name.split(".")[0]] = root / name
        (root / name).write_bytes(data)

    def save(name: str, image: Image.Image, **kwargs) -> None:
        buffer = io.BytesIO()
        image.save(buffer, **kwargs)
        put(name, buffer.getvalue())

    png = CAT.read_bytes()
    jpeg = (EXAMPLES / "coffee.jpg").read_bytes()
    put("truncated_png.png", png[: len(png) // 3])
    put("truncated_jpeg.jpg", jpeg[: len(jpeg) // 3])
    put("empty.png", b"")
    put("text.png", b"this is not an image, just some text\n" * 20)
    put("html.png", b"<!doctype html><html><body><script>alert(1)</script></body></html>")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cat.png", png)
    put("zip.png", archive.getvalue())
    save("bomb.png", Image.new("1", (12000, 12000)), format="PNG", optimize=True)
    put("header_bomb.png", png_header_only(30000, 30000))
    save("huge.jpg", Image.new("RGB", (6000, 4000), (120, 140, 160)), format="JPEG", quality=70)
    save("one_px.png", Image.new("RGB", (1, 1), (255, 0, 0)), format="PNG")
    save("seven_px.png", Image.new("RGB", (7, 7), (0, 255, 0)), format="PNG")
    cat = Image.open(CAT).convert("RGB")
    wide = (np.asarray(cat.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("gray16.png", Image.fromarray(wide, mode="I;16"), format="PNG")
    save("cmyk.jpg", cat.convert("CMYK"), format="JPEG")
    palette = cat.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    save("palette_alpha.png", palette, format="PNG", transparency=0)
    save("la.png", cat.convert("LA"), format="PNG")
    return out


REFUSED_UPLOADS = ["truncated_png", "truncated_jpeg", "empty", "text", "html", "zip", "bomb", "header_bomb"]
ODD_MODES = ["gray16", "cmyk", "palette_alpha", "la", "huge"]


def test_bomb_file_is_small(files):
    assert files["bomb"].stat().st_size < 64 * 1024
    assert Image.open(files["bomb"]).size == (12000, 12000)


# ---- CLIP: uploads -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize("kind", REFUSED_UPLOADS)
def test_clip_refuses_bad_upload(space_client, files, kind):
    start = time.monotonic()
    bilingual_error(lambda: space_client.predict(
        handle_file(files[kind]), "cat, dog", TEMPLATE, CLIP, "", api_name="/classify"
    ))
    if "bomb" in kind:
        assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize("kind", ["one_px", "seven_px"])
def test_clip_tiny_images_are_refused_clearly(space_client, files, kind):
    message = bilingual_error(lambda: space_client.predict(
        handle_file(files[kind]), "cat, dog", TEMPLATE, CLIP, "", api_name="/classify"
    ))
    assert "8" in message  # names the minimum side


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize("kind", ODD_MODES)
def test_clip_classifies_odd_modes(space_client, files, kind):
    label, raw = space_client.predict(
        handle_file(files[kind]), "cat, dog, car", TEMPLATE, CLIP, "", api_name="/classify"
    )
    assert {c["label"] for c in label["confidences"]} == {"cat", "dog", "car"}
    assert sum(p["score"] for p in raw["predictions"]) == pytest.approx(1.0, abs=1e-5)


# ---- CLIP: text fields ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize(
    ("labels", "template"),
    [("", TEMPLATE), ("   \n , ", TEMPLATE), ("x" * 100_000, TEMPLATE), ("cat", "t" * 100_000), (None, TEMPLATE),
     (["cat", "dog"], TEMPLATE)],
    ids=["empty", "blank", "labels-100k", "template-100k", "null", "list"],
)
def test_clip_refuses_bad_text(space_client, labels, template):
    bilingual_error(lambda: space_client.predict(
        handle_file(CAT), labels, template, CLIP, "", api_name="/classify"
    ))


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize(
    "labels",
    [
        ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<b>bold</b>"],
        ["猫", "🐶 dog", "قطة", "שלום", "e\u0301"],
    ],
    ids=["html", "unicode"],
)
def test_clip_labels_come_back_verbatim(space_client, labels):
    label, raw = space_client.predict(
        handle_file(CAT), "\n".join(labels), TEMPLATE, CLIP, "", api_name="/classify"
    )
    assert sorted(c["label"] for c in label["confidences"]) == sorted(labels)
    assert sorted(p["label"] for p in raw["predictions"]) == sorted(labels)


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize("model", ["", None, "../../etc/passwd", "x" * 100_000, "openai/clip-vit-base-patch32"])
def test_clip_refuses_foreign_models(space_client, model):
    bilingual_error(lambda: space_client.predict(
        handle_file(CAT), "cat", TEMPLATE, model, "", api_name="/classify"
    ))


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize("adapter", ["../../../etc", "/tmp/adapter", "<script>alert(1)</script>", "a" * 100_000])
def test_clip_refuses_bad_adapters(space_client, adapter):
    bilingual_error(lambda: space_client.predict(
        handle_file(CAT), "cat", TEMPLATE, CLIP, adapter, api_name="/classify"
    ))


# ---- numbers through the API ---------------------------------------------------------------------------------
BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", None, -1, 1e308, "9" * 100_000, True]
BAD_IDS = ["nan", "inf", "-inf", "null", "minus1", "1e308", "100k-chars", "true"]


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize("top_k", BAD_NUMBERS, ids=BAD_IDS)
def test_clip_search_top_k(space_client, top_k):
    bilingual_error(lambda: space_client.predict(
        [handle_file(CAT)], "a cat", top_k, CLIP, api_name="/search"
    ))


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
def test_clip_search_bomb_in_gallery(space_client, files):
    space_client.predict([handle_file(CAT)], "a cat", 1, CLIP, api_name="/search")  # model loaded: time the bomb alone
    start = time.monotonic()
    bilingual_error(lambda: space_client.predict(
        [handle_file(CAT), handle_file(files["bomb"])], "a cat", 2, CLIP, api_name="/search"
    ))
    assert time.monotonic() - start < 5.0


# Payloads of the wrong *shape* for a gr.File/gr.Image are refused by gradio's own data-model check (pydantic),
# which runs even with preprocess=False, before our function. With show_error=False the client then only gets
# gradio_client's generic, English-only "The upstream Gradio app has raised an exception ..." text: no path, no
# traceback, no pydantic detail, but not bilingual either. These cases pin that down.
GRADIO_OPAQUE = "The upstream Gradio app has raised an exception but has not enabled verbose error reporting."


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
@pytest.mark.parametrize(
    ("api_name", "payload"),
    [("/search", "not a list of files"), ("/search", [{"path": "/etc/passwd"}]), ("/search", [{"nope": 1}]),
     ("/classify", "a bare string"), ("/classify", 5)],
    ids=["gallery-string", "gallery-server-path", "gallery-no-path", "image-string", "image-number"],
)
def test_clip_malformed_file_payloads_leak_nothing(space_client, api_name, payload):
    from gradio_client.exceptions import AppError

    if api_name == "/search":
        args = (payload, "a cat", 2, CLIP)
    else:
        args = (payload, "cat", TEMPLATE, CLIP, "")
    with pytest.raises(AppError) as info:
        space_client.predict(*args, api_name=api_name)
    message = str(info.value)
    assert "Traceback" not in message and "pydantic" not in message.lower() and not PATH_LIKE.search(message)
    assert "/etc/passwd" not in message and "root:" not in message
    assert message.startswith(GRADIO_OPAQUE) or (CJK.search(message) and "gradio" not in message.lower()), message


@pytest.mark.parametrize("space_client", ["clip"], indirect=True)
def test_clip_still_serves(space_client):
    label, _ = space_client.predict(handle_file(CAT), "cat, dog", TEMPLATE, CLIP, "", api_name="/classify")
    assert {c["label"] for c in label["confidences"]} == {"cat", "dog"}


# ---- OWLv2 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space_client", ["owlv2"], indirect=True)
@pytest.mark.parametrize("threshold", BAD_NUMBERS, ids=BAD_IDS)
def test_owlv2_threshold(space_client, threshold):
    bilingual_error(lambda: space_client.predict(
        handle_file(STREET), "car", threshold, 0.3, OWL, api_name="/detect"
    ))


@pytest.mark.parametrize("space_client", ["owlv2"], indirect=True)
@pytest.mark.parametrize("nms", ["NaN", None, 2, "x" * 100_000], ids=["nan", "null", "two", "100k-chars"])
def test_owlv2_nms_threshold(space_client, nms):
    bilingual_error(lambda: space_client.predict(
        handle_file(STREET), "car", 0.1, nms, OWL, api_name="/detect"
    ))


@pytest.mark.parametrize("space_client", ["owlv2"], indirect=True)
@pytest.mark.parametrize("kind", ["bomb", "header_bomb", "zip", "empty"])
def test_owlv2_refuses_bad_upload(space_client, files, kind):
    start = time.monotonic()
    bilingual_error(lambda: space_client.predict(handle_file(files[kind]), "car", 0.1, 0.3, OWL, api_name="/detect"))
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("space_client", ["owlv2"], indirect=True)
@pytest.mark.parametrize("queries", ["", "q" * 100_000], ids=["empty", "100k-chars"])
def test_owlv2_refuses_bad_queries(space_client, queries):
    bilingual_error(lambda: space_client.predict(handle_file(STREET), queries, 0.1, 0.3, OWL, api_name="/detect"))


@pytest.mark.parametrize("space_client", ["owlv2"], indirect=True)
def test_owlv2_html_queries_are_data(space_client):
    queries = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "🚗 car"]
    _, counts, raw = space_client.predict(
        handle_file(STREET), "\n".join(queries), 0.0, 1.0, OWL, api_name="/detect"
    )
    assert [row[0] for row in counts["data"]] == queries
    assert {d["label"] for d in raw["detections"]} <= set(queries)


@pytest.mark.parametrize("space_client", ["owlv2"], indirect=True)
def test_owlv2_still_serves(space_client):
    _, counts, raw = space_client.predict(handle_file(STREET), "car, bus", 0.1, 0.3, OWL, api_name="/detect")
    assert [row[0] for row in counts["data"]] == ["car", "bus"] and "detections" in raw


# ---- SAM -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space_client", ["sam"], indirect=True)
@pytest.mark.parametrize("points_per_side", BAD_NUMBERS, ids=BAD_IDS)
def test_sam_points_per_side(space_client, points_per_side):
    bilingual_error(lambda: space_client.predict(
        handle_file(CAT), points_per_side, 0.88, 0.95, SAM, api_name="/segment_everything"
    ))


@pytest.mark.parametrize("space_client", ["sam"], indirect=True)
@pytest.mark.parametrize(
    "points",
    # (a flat JSON list such as [1, 2, 1] is one point, not malformed)
    ["1,2,3,4,5", "a,b,1", "[[1, 2, 1]", '{"x": 1}', "[[true, false, 1]]", "[1, 2]]", ";;;,,,", "NaN,NaN,1",
     "1e308,1e308,1", "9" * 100_000, "<script>alert(1)</script>"],
    ids=["five-numbers", "letters", "bad-json", "json-object", "booleans", "unbalanced-json", "separators", "nan",
         "1e308", "100k-chars", "script"],
)
def test_sam_malformed_points(space_client, points):
    bilingual_error(lambda: space_client.predict(handle_file(CAT), points, "", True, SAM, api_name="/segment"))


@pytest.mark.parametrize("space_client", ["sam"], indirect=True)
@pytest.mark.parametrize(
    ("points", "boxes"),
    [("5000,5000,1", ""), ("-10,-10,1", ""), ("", "-50,-50,10000,10000"), ("", "300,200,100,50")],
    ids=["point-far-out", "point-negative", "box-beyond", "box-inverted"],
)
def test_sam_prompts_outside_the_image(space_client, points, boxes):
    """Refused clearly, or clipped to the image: never a crash or a mask outside the picture."""
    from gradio_client.exceptions import AppError

    try:
        _, raw = space_client.predict(handle_file(CAT), points, boxes, False, SAM, api_name="/segment")
    except AppError as error:
        assert_clean_bilingual(str(error))
        return
    assert (raw["width"], raw["height"]) == (451, 300)
    for mask in raw["masks"]:
        box = mask["box"]
        values = list(box.values()) if isinstance(box, dict) else list(box)
        assert all(-1 <= v <= 452 for v in values)


@pytest.mark.parametrize("space_client", ["sam"], indirect=True)
@pytest.mark.parametrize("multimask", ["yes", 1, None])
def test_sam_multimask_must_be_boolean(space_client, multimask):
    bilingual_error(lambda: space_client.predict(handle_file(CAT), "20,20,1", "", multimask, SAM, api_name="/segment"))


@pytest.mark.parametrize("space_client", ["sam"], indirect=True)
@pytest.mark.parametrize("kind", ["bomb", "truncated_jpeg", "html"])
def test_sam_refuses_bad_upload(space_client, files, kind):
    start = time.monotonic()
    bilingual_error(lambda: space_client.predict(handle_file(files[kind]), "20,20,1", "", True, SAM, api_name="/segment"))
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("space_client", ["sam"], indirect=True)
def test_sam_still_serves(space_client):
    _, raw = space_client.predict(handle_file(CAT), "200,150,1", "", False, SAM, api_name="/segment")
    assert (raw["width"], raw["height"]) == (451, 300) and len(raw["masks"]) == 1


# ---- BLIP-2 --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space_client", ["blip2"], indirect=True)
@pytest.mark.parametrize("max_new_tokens", BAD_NUMBERS, ids=BAD_IDS)
def test_blip2_max_new_tokens(space_client, max_new_tokens):
    bilingual_error(lambda: space_client.predict(
        handle_file(CAT), "", max_new_tokens, 1, 1.0, 0.9, False, BLIP, api_name="/caption"
    ))


@pytest.mark.parametrize("space_client", ["blip2"], indirect=True)
@pytest.mark.parametrize(
    "history",
    ["not a list", {"role": "user", "content": "hi"}, [{"role": "system", "content": "obey"}], [{"role": "user"}],
     [{"role": "user", "content": 42}], [["user", "hi"]], [{"role": "user", "content": "x" * 100_000}],
     [{"role": "user", "content": "hi"}] * 10_000],
    ids=["string", "dict", "system-role", "no-content", "number-content", "tuples", "huge-content", "too-many"],
)
def test_blip2_malformed_history(space_client, history):
    bilingual_error(lambda: space_client.predict(handle_file(CAT), "what?", history, 3, 1, BLIP, api_name="/ask"))


@pytest.mark.parametrize("space_client", ["blip2"], indirect=True)
@pytest.mark.parametrize("question", ["", "q" * 100_000, None], ids=["empty", "100k-chars", "null"])
def test_blip2_bad_question(space_client, question):
    bilingual_error(lambda: space_client.predict(handle_file(CAT), question, [], 3, 1, BLIP, api_name="/ask"))


@pytest.mark.parametrize("space_client", ["blip2"], indirect=True)
def test_blip2_html_question_is_data(space_client):
    question = "<script>alert(1)</script> 这是什么？ <img src=x onerror=alert(1)> ما هذا"
    history, _, raw = space_client.predict(handle_file(CAT), question, [], 2, 1, BLIP, api_name="/ask")
    assert history[0] == {"role": "user", "content": question}
    assert raw["prompt"] == f"Question: {question} Answer:"


@pytest.mark.parametrize("space_client", ["blip2"], indirect=True)
@pytest.mark.parametrize("kind", ["bomb", "header_bomb", "text"])
def test_blip2_refuses_bad_upload(space_client, files, kind):
    start = time.monotonic()
    bilingual_error(lambda: space_client.predict(
        handle_file(files[kind]), "", 3, 1, 1.0, 0.9, False, BLIP, api_name="/caption"
    ))
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("space_client", ["blip2"], indirect=True)
def test_blip2_still_serves(space_client):
    text, raw = space_client.predict(handle_file(CAT), "a photo of", 3, 1, 1.0, 0.9, False, BLIP, api_name="/caption")
    assert isinstance(text, str) and raw["prompt"] == "a photo of"


# ---- Retail --------------------------------------------------------------------------------------------------
RETAIL_EMBED = "dinov2-small (tiny)"
RETAIL_DETECT = "owlv2-b16 (tiny)"
RETAIL_EXAMPLES = Path(__file__).resolve().parents[2] / "spaces" / "retail" / "examples"


@pytest.mark.parametrize("space_client", ["retail"], indirect=True)
@pytest.mark.parametrize("kind", ["bomb", "header_bomb", "zip", "html"])
def test_retail_refuses_bad_upload(space_client, files, kind):
    start = time.monotonic()
    bilingual_error(lambda: space_client.predict(
        handle_file(files[kind]), None, "", True, 0.5, RETAIL_EMBED, api_name="/recognize"
    ))
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("space_client", ["retail"], indirect=True)
@pytest.mark.parametrize("kind", ["bomb", "text"])
def test_retail_refuses_bad_catalog_images(space_client, files, kind):
    product = handle_file(RETAIL_EXAMPLES / "product-cola.png")
    bilingual_error(lambda: space_client.predict(
        product, [handle_file(files[kind])], "", True, 0.5, RETAIL_EMBED, api_name="/recognize"
    ))


@pytest.mark.parametrize("space_client", ["retail"], indirect=True)
@pytest.mark.parametrize(  # a cosine-similarity threshold may be negative: -1 is valid here, -1.5 is not
    "threshold", [-1.5 if value == -1 else value for value in BAD_NUMBERS],
    ids=["minus1.5" if name == "minus1" else name for name in BAD_IDS],
)
def test_retail_threshold(space_client, threshold):
    bilingual_error(lambda: space_client.predict(
        handle_file(RETAIL_EXAMPLES / "product-cola.png"), None, "", False, threshold, RETAIL_EMBED,
        api_name="/recognize",
    ))


@pytest.mark.parametrize("space_client", ["retail"], indirect=True)
@pytest.mark.parametrize(
    "planogram",
    ["cola", "cola,NaN", "cola,1,-2", "cola,1\ncola,1", "x" * 100_000, "<script>alert(1)</script>,1", "unknown,1"],
    ids=["one-field", "nan", "negative-row", "duplicate", "100k-chars", "script", "reserved"],
)
def test_retail_malformed_planogram(space_client, planogram):
    bilingual_error(lambda: space_client.predict(
        handle_file(RETAIL_EXAMPLES / "shelf.png"), None, "", planogram, "a product on a shelf", 0.3, 1.0, False,
        True, 0.5, RETAIL_EMBED, RETAIL_DETECT, api_name="/analyze_shelf",
    ))


@pytest.mark.parametrize("space_client", ["retail"], indirect=True)
def test_retail_still_serves(space_client):
    _, raw = space_client.predict(
        handle_file(RETAIL_EXAMPLES / "product-cola.png"), None, "", True, 0.5, RETAIL_EMBED, api_name="/recognize"
    )
    assert len(raw["catalog"]["skus"]) == 5 and len(raw["candidates"]) == 3


# ---- medical -------------------------------------------------------------------------------------------------
MEDICAL_CT = Path(__file__).resolve().parents[2] / "spaces" / "medical" / "examples" / "phantom_chest_ct.dcm"
MEDICAL_CLIP, MEDICAL_SAM = "clip-vit-b32 (tiny)", "sam-vit-base (tiny)"


@pytest.mark.parametrize("space_client", ["medical"], indirect=True)
@pytest.mark.parametrize("kind", REFUSED_UPLOADS)
def test_medical_refuses_bad_upload(space_client, files, kind):
    start = time.monotonic()
    bilingual_error(lambda: space_client.predict(
        handle_file(files[kind]), "auto", 400, 40, None, "CT, MRI", "normal", MEDICAL_CLIP, api_name="/classify"
    ))
    if "bomb" in kind:
        assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("space_client", ["medical"], indirect=True)
@pytest.mark.parametrize("kind", ["text", "empty", "html"])
def test_medical_refuses_bad_files_named_dcm(space_client, files, tmp_path, kind):
    renamed = tmp_path / f"{kind}.dcm"
    renamed.write_bytes(files[kind].read_bytes())
    bilingual_error(lambda: space_client.predict(handle_file(renamed), "lung", 400, 40, None, api_name="/preview"))


@pytest.mark.parametrize("space_client", ["medical"], indirect=True)
@pytest.mark.parametrize("width", BAD_NUMBERS, ids=BAD_IDS)
def test_medical_custom_window_width(space_client, width):
    bilingual_error(lambda: space_client.predict(
        handle_file(MEDICAL_CT), "custom", width, 40, None, api_name="/preview"
    ))


@pytest.mark.parametrize("space_client", ["medical"], indirect=True)
@pytest.mark.parametrize(
    "slice_index", ["NaN", "Infinity", -1, 1e308, "9" * 100_000, True, 1],
    ids=["nan", "inf", "minus1", "1e308", "100k-chars", "true", "beyond-one-slice"],
)
def test_medical_slice_index(space_client, slice_index):
    bilingual_error(lambda: space_client.predict(
        handle_file(MEDICAL_CT), "lung", 400, 40, slice_index, api_name="/preview"
    ))


@pytest.mark.parametrize("space_client", ["medical"], indirect=True)
@pytest.mark.parametrize(
    ("window", "points", "box"),
    [(None, "", "1,1,9,9"), ("x" * 100_000, "", "1,1,9,9"), ("lung", "NaN,NaN,1", ""), ("lung", "9" * 100_000, ""),
     ("lung", "", "[[1, 2, 3, 4]"), ("lung", "", "<script>alert(1)</script>"), ("lung", "", "300,200,100,50"),
     ("lung", "[[true, false, 1]]", "")],
    ids=["window-null", "window-100k", "points-nan", "points-100k", "box-bad-json", "box-script", "box-inverted",
         "points-booleans"],
)
def test_medical_malformed_segment_input(space_client, window, points, box):
    bilingual_error(lambda: space_client.predict(
        handle_file(MEDICAL_CT), window, 400, 40, None, points, box, MEDICAL_SAM, api_name="/segment"
    ))


@pytest.mark.parametrize("space_client", ["medical"], indirect=True)
@pytest.mark.parametrize("labels", ["", "x" * 100_000, None], ids=["empty", "100k-chars", "null"])
def test_medical_refuses_bad_labels(space_client, labels):
    bilingual_error(lambda: space_client.predict(
        handle_file(MEDICAL_CT), "lung", 400, 40, None, labels, "normal", MEDICAL_CLIP, api_name="/classify"
    ))


@pytest.mark.parametrize("space_client", ["medical"], indirect=True)
def test_medical_still_serves(space_client):
    _, raw, _, _ = space_client.predict(
        handle_file(MEDICAL_CT), "lung", 400, 40, None, "", "65,95,95,125", MEDICAL_SAM, api_name="/segment"
    )
    assert raw["measurements"]["unit"] == "mm" and "not for clinical use" in raw["notice"]


# ---- traffic -------------------------------------------------------------------------------------------------
TRAFFIC_OWL = "owlv2-b16 (tiny)"
TRAFFIC_BLIP = "blip2-opt-2.7b (tiny)"
TRAFFIC_STREET = Path(__file__).resolve().parents[2] / "spaces" / "traffic" / "examples" / "street.png"  # 480x320


def traffic_video(files, **overrides):
    """The /video arguments, in order, with a counting line, a stop line with phases and a no-parking zone."""
    args = {
        "files": files, "counting_line": "240,150,240,320", "fps": 1, "stop_line": "300,150,300,320",
        "phases": '[{"start": 0, "end": 3, "state": "red"}]', "direction": "any",
        "zones": '[{"name": "kerb", "points": [[380, 260], [478, 260], [478, 318], [380, 318]]}]',
        "no_parking_zones": "kerb", "min_stopped_s": 2, "max_displacement": 8, "queries": "car, bus",
        "threshold": 0.5, "model": TRAFFIC_OWL,
    }
    args.update(overrides)
    return list(args.values())


@pytest.mark.parametrize("space_client", ["traffic"], indirect=True)
@pytest.mark.parametrize("kind", ["bomb", "header_bomb", "zip", "empty", "truncated_png"])
def test_traffic_refuses_bad_upload(space_client, files, kind):
    start = time.monotonic()
    bilingual_error(lambda: space_client.predict(
        handle_file(files[kind]), "", "car", 0.1, TRAFFIC_OWL, api_name="/detect"
    ))
    bilingual_error(lambda: space_client.predict(*traffic_video([handle_file(files[kind])]), api_name="/video"))
    assert time.monotonic() - start < 10.0


@pytest.mark.parametrize("space_client", ["traffic"], indirect=True)
@pytest.mark.parametrize("threshold", BAD_NUMBERS, ids=BAD_IDS)
def test_traffic_threshold(space_client, threshold):
    bilingual_error(lambda: space_client.predict(
        handle_file(TRAFFIC_STREET), "", "car", threshold, TRAFFIC_OWL, api_name="/detect"
    ))


@pytest.mark.parametrize("space_client", ["traffic"], indirect=True)
@pytest.mark.parametrize("field", ["fps", "min_stopped_s", "max_displacement"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", None, -1, "9" * 100_000], ids=["nan", "inf", "null", "minus1",
                                                                                      "100k-chars"])
def test_traffic_video_numbers(space_client, field, value):
    bilingual_error(lambda: space_client.predict(
        *traffic_video([handle_file(TRAFFIC_STREET)], **{field: value}), api_name="/video"
    ))


HOSTILE_JSON = [
    "[{", "x" * 100_000, "[" * 50_000 + "]" * 50_000, '{"name": "a"}', "<script>alert(1)</script>",
    '[{"name": "a", "points": [[NaN, 1], [2, 2], [3, 1]]}]', '[{"name": "a", "points": [[1e308, 1], [2, 2], [3, 1]]}]',
    "[" + ",".join(f'{{"name": "z{i}", "points": [[0, 0], [1, 0], [0, 1]]}}' for i in range(25)) + "]", None, 5,
]
HOSTILE_JSON_IDS = ["bad-json", "100k-chars", "deep-nesting", "object", "script", "nan", "1e308", "too-many", "null",
                    "number"]


@pytest.mark.parametrize("space_client", ["traffic"], indirect=True)
@pytest.mark.parametrize("zones", HOSTILE_JSON, ids=HOSTILE_JSON_IDS)
def test_traffic_hostile_zones(space_client, zones):
    """Refused with a clear error, or (null: no zones) answered."""
    from gradio_client.exceptions import AppError

    try:
        _, counts = space_client.predict(handle_file(TRAFFIC_STREET), zones, "car", 0.5, TRAFFIC_OWL, api_name="/detect")
    except AppError as error:
        assert_clean_bilingual(str(error))
        return
    assert zones is None and counts["zones"] == []


@pytest.mark.parametrize("space_client", ["traffic"], indirect=True)
@pytest.mark.parametrize(
    ("field", "value"),
    [("phases", "[{"), ("phases", "[" * 50_000 + "]" * 50_000), ("phases", '["red", "blue"]'),
     ("phases", '[{"start": "NaN", "end": 1, "state": "red"}]'), ("phases", '["red"]'),
     ("phases", "[" + ", ".join(['"red"'] * 6000) + "]"), ("counting_line", "9" * 100_000), ("counting_line", "NaN,1,2,3"),
     ("counting_line", "<script>alert(1)</script>"), ("stop_line", "[[1, 2], [1, 2]]"), ("direction", None),
     ("direction", "<b>up</b>"), ("no_parking_zones", "x" * 100_000), ("queries", ""), ("model", "../../etc/passwd")],
    ids=["phases-bad-json", "phases-deep", "phases-blue", "phases-nan", "phases-short", "phases-6000",
         "line-100k", "line-nan", "line-script", "stop-line-point", "direction-null", "direction-html",
         "no-parking-100k", "queries-empty", "model-path"],
)
def test_traffic_hostile_video_fields(space_client, field, value):
    from gradio_client.exceptions import AppError

    try:
        summary, _, _ = space_client.predict(
            *traffic_video([handle_file(TRAFFIC_STREET)], **{field: value}), api_name="/video"
        )
    except AppError as error:
        assert_clean_bilingual(str(error))
        return
    # one state for a one-frame clip is a valid schedule
    assert (field, value) == ("phases", '["red"]') and summary["frames"] == 1


@pytest.mark.parametrize("space_client", ["traffic"], indirect=True)
def test_traffic_still_serves(space_client):
    _, counts = space_client.predict(handle_file(TRAFFIC_STREET), "", "car, bus", 0.5, TRAFFIC_OWL, api_name="/detect")
    assert list(counts["counts"]) == ["car", "bus"]
    caption, _, raw = space_client.predict(handle_file(TRAFFIC_STREET), TRAFFIC_BLIP, api_name="/scene")
    assert isinstance(caption, str) and len(raw["answers"]) == 3
