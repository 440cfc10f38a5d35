"""The medical Space answers every api_name through gradio_client with tiny weights, carries the research-only
notice in every JSON result, exports masks that read back with their spacing, and refuses bad input bilingually."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from lmt.ui.spaces import load_space
from tests.apps.test_medical import phantom_hu, write_dicom
from tests.spaces.conftest import app_error

pytestmark = pytest.mark.parametrize("space_client", ["medical"], indirect=True)

CLIP = "clip-vit-b32 (tiny)"
SAM = "sam-vit-base (tiny)"
APP = load_space("medical")
CT = APP.CT_EXAMPLE  # 256 x 256, 0.7 mm pixels, a nodule near (80, 110)
XRAY = APP.XRAY_EXAMPLE
NOTICE = "not for clinical use"
CJK = re.compile(r"[\u4e00-\u9fff]")


def classify(client, file, window="lung", width=400, level=40, slice_index=None, model=CLIP,
             modalities="CT, MRI, X-ray", findings="no abnormality, a nodule"):
    return client.predict(handle_file(file), window, width, level, slice_index, modalities, findings, model,
                          api_name="/classify")


def segment(client, file, window="lung", points="", box="65,95,95,125", slice_index=None, model=SAM,
            width=400, level=40):
    return client.predict(handle_file(file), window, width, level, slice_index, points, box, model,
                          api_name="/segment")


def bilingual(call) -> str:
    message = app_error(call)
    assert CJK.search(message) and re.search(r"[A-Za-z]{3,}", message), message
    return message


def test_api_names(space_client):
    assert set(space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/preview", "/classify", "/segment",
    }


def test_classify_dicom_with_a_ct_window(space_client):
    seen, modality, findings, raw = classify(space_client, CT)
    assert Image.open(seen).size == (256, 256)
    assert {c["label"] for c in modality["confidences"]} == {"CT", "MRI", "X-ray"}
    assert {c["label"] for c in findings["confidences"]} == {"no abnormality", "a nodule"}
    assert NOTICE in raw["notice"] and "不可用于临床" in raw["notice"] and "not how likely" in raw["scores_are"]
    assert raw["window"]["name"] == "lung" and raw["image"]["spacing"]["row_mm"] == 0.7
    assert raw["findings_modality"] == {"label": "CT", "source": "dicom header"}
    assert sum(p["score"] for p in raw["modality"]["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_classify_png_uses_the_models_modality(space_client):
    _, _, _, raw = classify(space_client, XRAY, window="auto")
    assert raw["image"]["source"] == "image" and raw["image"]["spacing"] is None and raw["window"] is None
    assert raw["findings_modality"]["source"] == "model" and NOTICE in raw["notice"]


def test_segment_dicom_exports_png_and_nifti(space_client):
    import nibabel as nib

    overlay, raw, png, nifti = segment(space_client, CT)
    assert Image.open(overlay).size == (256, 256)
    assert NOTICE in raw["notice"] and raw["measurements"]["unit"] == "mm"
    m = raw["measurements"]
    assert m["area_mm2"] == pytest.approx(m["area_px"] * 0.7 * 0.7)
    assert isinstance(m["max_diameter_mm"], float) and raw["prompt"]["box"] == [65.0, 95.0, 95.0, 125.0]
    mask = np.asarray(Image.open(png)) == 255
    assert mask.shape == (256, 256) and int(mask.sum()) == m["area_px"]
    assert Path(nifti).name.endswith(".nii.gz")
    volume = nib.load(nifti)
    assert volume.header.get_zooms() == pytest.approx((0.7, 0.7, 1.0), abs=1e-6)
    assert np.array_equal(np.asarray(volume.dataobj)[:, :, 0].T.astype(bool), mask)
    assert volume.affine[0, 3] == pytest.approx(89.6) and volume.affine[0, 0] == pytest.approx(-0.7)  # LPS -> RAS


def test_segment_png_with_points_measures_pixels(space_client):
    _, raw, _, _ = segment(space_client, XRAY, window="auto", points="160,130,1; 20,20,0", box="")
    assert raw["measurements"]["unit"] == "px" and raw["measurements"]["area_mm2"] is None
    assert raw["prompt"]["points"] == [[160.0, 130.0, 1], [20.0, 20.0, 0]]


def test_preview_and_custom_window(space_client):
    image, raw = space_client.predict(handle_file(CT), "custom", 1000, -200, None, api_name="/preview")
    assert Image.open(image).size == (256, 256) and NOTICE in raw["notice"]
    assert (raw["window"]["lower"], raw["window"]["upper"]) == (-700, 300)


def test_multi_frame_dicom_needs_a_slice(space_client, tmp_path):
    volume = write_dicom(tmp_path / "volume.dcm", np.stack([phantom_hu()] * 3), frames=3)
    message = bilingual(lambda: classify(space_client, volume))
    assert "3 slices" in message and "3 层" in message
    _, raw = space_client.predict(handle_file(volume), "lung", 400, 40, 2, api_name="/preview")
    assert raw["image"]["slice_index"] == 2 and raw["image"]["num_slices"] == 3
    assert "out of range" in bilingual(lambda: classify(space_client, volume, slice_index=3))


def test_errors_are_bilingual_and_clean(space_client, tmp_path):
    assert "请先上传" in bilingual(lambda: space_client.predict(None, "auto", 400, 40, None, api_name="/preview"))
    assert "monochrome DICOM" in bilingual(lambda: classify(space_client, XRAY, window="lung"))
    mr = write_dicom(tmp_path / "mr.dcm", phantom_hu(), modality="MR")
    assert "CT only" in bilingual(lambda: classify(space_client, mr, window="brain"))
    assert "window must be" in bilingual(lambda: classify(space_client, CT, window="soft tissue"))
    assert "window_width" in bilingual(lambda: classify(space_client, CT, window="custom", width="NaN"))
    assert "box around the lesion" in bilingual(lambda: segment(space_client, CT, box=""))
    assert "one box" in bilingual(lambda: segment(space_client, CT, box="1,1,20,20; 30,30,60,60"))
    assert "x,y,label" in bilingual(lambda: segment(space_client, CT, points="1,two,1", box=""))
    assert "outside" in bilingual(lambda: segment(space_client, CT, box="0,0,900,20"))
    assert "不是本 Space" in bilingual(lambda: segment(space_client, CT, model="facebook/evil"))
    assert "不是本 Space" in bilingual(lambda: classify(space_client, CT, model="../../etc"))
    nopix = write_dicom(tmp_path / "nopix.dcm", phantom_hu(), pixel_data=False)
    assert "no pixel data" in bilingual(lambda: classify(space_client, nopix))


def test_hub_clip_checkpoints_need_the_operators_consent(space_client, monkeypatch):
    refused = bilingual(lambda: classify(space_client, CT, model="some-lab/medical-clip"))
    assert "LMT_SPACE_HUB_MODELS=1" in refused
    monkeypatch.setenv("LMT_SPACE_HUB_MODELS", "1")  # the Space runs in this process: the setting reaches it
    message = bilingual(lambda: classify(space_client, CT, model="some-lab/medical-clip"))
    assert "some-lab/medical-clip" in message and "LMT_SPACE_HUB_MODELS" not in message


def test_exports_are_written_into_gradios_cleaned_cache(space_client):
    from gradio.utils import get_upload_folder

    cache = Path(get_upload_folder())
    before = set(cache.glob("lmt-medical-*"))
    segment(space_client, CT)
    (folder,) = set(cache.glob("lmt-medical-*")) - before  # one folder per request, inside the cache
    assert sorted(p.name for p in folder.iterdir()) == ["lesion_mask.nii.gz", "lesion_mask.png"]
    assert not list(Path(tempfile.gettempdir()).glob("lmt-medical-*"))  # nothing outside the cache


def test_gradio_cache_is_cleaned(space_client):
    demo = APP.build_demo(tiny=True)
    assert demo.delete_cache == (APP.CACHE_CHECK_S, APP.CACHE_MAX_AGE_S) and APP.CACHE_MAX_AGE_S <= 600


def test_examples_are_synthetic_and_readable(space_client):
    import pydicom

    from lmt.apps import medical

    scan = medical.read_medical_image(CT)
    assert scan.modality == "CT" and scan.spacing.row_mm == 0.7
    assert "PHANTOM" in str(pydicom.dcmread(CT).PatientName)
    nodule = scan.values[100:121, 70:91]  # the example box around the nodule holds soft tissue inside lung
    assert nodule.max() > 0 and nodule.min() < -700


def test_bundle_pins_the_medical_dependencies(space_client, tmp_path):
    from lmt.bundle import bundle_space

    folder = bundle_space("medical", tmp_path / "medical-space")
    pins = (folder / "requirements.txt").read_text()
    for package in ("pydicom==", "nibabel==", "scipy==", "torch==2.13.0"):
        assert package in pins
    assert sorted(p.name for p in (folder / "examples").iterdir()) == ["phantom_chest_ct.dcm", "phantom_xray.png"]
    assert (folder / "lmt" / "apps" / "medical.py").is_file()


def test_clicks_write_the_prompts(space_client):
    import gradio as gr

    def click(x, y):
        return gr.SelectData(None, {"index": [x, y], "value": None})

    assert APP.add_click("", "", None, "include", click(80, 110)) == ("80,110,1", "", None)
    assert APP.add_click("80,110,1", "", None, "exclude", click(5, 6)) == ("80,110,1; 5,6,0", "", None)
    assert APP.add_click("", "1,2,3,4", None, "box", click(95, 125)) == ("", "1,2,3,4", [95, 125])
    assert APP.add_click("", "1,2,3,4", [95, 125], "box", click(65, 95)) == ("", "65,95,95,125", None)
