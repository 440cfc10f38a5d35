"""lmt.apps.medical on synthetic scans with known ground truth: DICOM written here with a known spacing and a drawn
lesion; windowing against the formula; a ground-truth segmenter through the MaskGeneration interface; exact area and
diameter; PNG and NIfTI round trips. Then the same pipelines end to end with tiny CLIP and tiny SAM."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmt.apps import medical
from lmt.errors import InvalidImageError, InvalidInputError, LmtError
from lmt.results import Classification, LabelScore, Mask, Segmentation
from lmt.tasks.segment import mask_box

ROW_MM, COL_MM = 0.5, 0.8
HEIGHT, WIDTH = 200, 160
# the lesion, in mm: an ellipse 60 mm wide (horizontal) and 36 mm tall, centred at (64, 50) mm
CX_MM, CY_MM, A_MM, B_MM = 64.0, 50.0, 30.0, 18.0
HOLE_R_MM = 4.0
BLOB = (slice(4, 10), slice(4, 10))  # a separate 6x6-pixel blob, far from the lesion


# ---- drawing the scene -------------------------------------------------------------------------------------
def pixel_centres_mm() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    return (cols + 0.5) * COL_MM, (rows + 0.5) * ROW_MM


def solid_lesion() -> np.ndarray:
    x, y = pixel_centres_mm()
    return ((x - CX_MM) / A_MM) ** 2 + ((y - CY_MM) / B_MM) ** 2 <= 1.0


def hole() -> np.ndarray:
    x, y = pixel_centres_mm()
    return (x - CX_MM) ** 2 + (y - CY_MM) ** 2 <= HOLE_R_MM**2


def model_mask() -> np.ndarray:
    """What a segmenter might return: the lesion with a hole in it, plus a stray blob."""
    mask = solid_lesion() & ~hole()
    mask[BLOB] = True
    return mask


def phantom_hu() -> np.ndarray:
    """Air around a soft-tissue body (40 HU) holding a denser lesion (80 HU)."""
    hu = np.full((HEIGHT, WIDTH), -1000, dtype=np.int32)
    hu[10:190, 10:150] = 40
    hu[solid_lesion()] = 80
    return hu


def write_dicom(
    path: Path,
    hu: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    spacing_tag: str | None = "PixelSpacing",
    spacing: tuple[float, float] = (ROW_MM, COL_MM),
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    frames: int | None = None,
    transfer_syntax: str | None = None,
    pixel_data: bool = True,
    **tags,
) -> Path:
    """A CT-like DICOM file storing ``(hu - intercept) / slope`` as int16, written by pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = hu.shape[-2:]
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if spacing_tag:
        setattr(ds, spacing_tag, list(spacing))
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if pixel_data and transfer_syntax is None:
        ds.PixelData = np.rint((hu - intercept) / slope).astype(np.int16).tobytes()
    elif pixel_data:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])  # a stream nothing here decodes
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def ct(tmp_path) -> Path:
    return write_dicom(tmp_path / "phantom.dcm", phantom_hu())


# ---- stand-ins through the same interfaces as the real models ----------------------------------------------
class GroundTruthSegmenter:
    """Called like lmt.MaskGeneration; returns the drawn mask whatever the prompt, and records what it was given."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask
        self.calls: list[dict] = []

    def __call__(self, image, *, points=None, boxes=None, **kwargs) -> Segmentation:
        self.calls.append({"image": image, "points": points, "boxes": boxes})
        return Segmentation((Mask(self.mask, 0.97, mask_box(self.mask)),), image.size)


class KeywordClassifier:
    """Called like lmt.ZeroShotImageClassification; scores each label text by a fixed rule, records every call."""

    def __init__(self, favourite: str) -> None:
        self.favourite = favourite
        self.calls: list[tuple[list[str], str, Image.Image]] = []

    def __call__(self, image, labels, *, template="{}", top_k=None) -> Classification:
        self.calls.append((list(labels), template, image))
        weights = np.array([3.0 if self.favourite in label else 1.0 for label in labels])
        if "patient" in template:  # a template that changes the scores, so that averaging is checked
            weights = weights[::-1]
        scores = weights / weights.sum()
        order = np.argsort(-scores, kind="stable")
        return Classification(tuple(LabelScore(labels[i], float(scores[i])) for i in order))


# ---- reading and windowing ---------------------------------------------------------------------------------
def test_hu_and_spacing_come_from_the_header(tmp_path):
    hu = phantom_hu()
    path = write_dicom(tmp_path / "slope.dcm", hu, slope=2.0, intercept=-1024.0)
    scan = medical.read_medical_image(path)
    expected = np.rint((hu + 1024.0) / 2.0) * 2.0 - 1024.0  # stored values through the formula
    assert scan.values.dtype == np.float64 and np.array_equal(scan.values, expected)
    assert scan.spacing == medical.PixelSpacing(ROW_MM, COL_MM, "PixelSpacing")
    assert scan.is_ct and scan.size == (WIDTH, HEIGHT) and scan.source == "dicom"
    assert scan.info()["units"] == "HU"


def test_imager_pixel_spacing_is_the_fallback_and_none_is_unknown(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", phantom_hu(), spacing_tag="ImagerPixelSpacing", spacing=(0.7, 0.3))
    imager = medical.read_medical_image(path)
    assert imager.spacing == medical.PixelSpacing(0.7, 0.3, "ImagerPixelSpacing")
    unknown = write_dicom(tmp_path / "b.dcm", phantom_hu(), spacing_tag=None)
    assert medical.read_medical_image(unknown).spacing is None
    zero = write_dicom(tmp_path / "c.dcm", phantom_hu(), spacing=(0.0, 0.5))
    assert medical.read_medical_image(zero).spacing is None  # invalid: unknown, never guessed


@pytest.mark.parametrize("name", sorted(medical.WINDOW_PRESETS))
def test_presets_follow_the_formula_exactly(ct, name):
    window = medical.WINDOW_PRESETS[name]
    hu = np.arange(-1500, 1501, dtype=np.float64)
    formula = np.rint(np.clip((hu - (window.level - window.width / 2)) / window.width, 0, 1) * 255)
    assert np.array_equal(medical.apply_window(hu, window), formula.astype(np.uint8))
    scan = medical.read_medical_image(ct)
    shown = np.asarray(scan.display(name))
    assert shown.shape == (HEIGHT, WIDTH, 3)
    assert np.array_equal(shown[:, :, 0], medical.apply_window(scan.values, window))


def test_preset_values_by_hand():
    lung, brain = medical.WINDOW_PRESETS["lung"], medical.WINDOW_PRESETS["brain"]
    assert (lung.width, lung.level, lung.lower, lung.upper) == (1500, -600, -1350, 150)
    values = medical.apply_window(np.array([-2000, -1350, -1000, -600, 150, 3000.0]), lung)
    assert values.tolist() == [0, 0, 60, 128, 255, 255]  # -1000: 350/1500*255 = 59.5 -> 60; -600: 127.5 -> 128
    assert medical.apply_window(np.array([0.0, 40, 80]), brain).tolist() == [0, 128, 255]
    assert medical.WINDOW_PRESETS["mediastinum"].lower == -125 and medical.WINDOW_PRESETS["bone"].upper == 1300


def test_auto_and_custom_windows(tmp_path, ct):
    scan = medical.read_medical_image(ct)
    auto = scan.window_for("auto")
    assert auto.source == "min-max" and (auto.lower, auto.upper) == (-1000, 80)
    headed = medical.read_medical_image(
        write_dicom(tmp_path / "h.dcm", phantom_hu(), WindowCenter=40, WindowWidth=400)
    )
    assert headed.window_for(None) == medical.Window(400.0, 40.0, "dicom header", "dicom header")
    custom = scan.window_for((100, 60))
    assert (custom.lower, custom.upper, custom.name) == (10, 110, "custom")
    for bad in [(0, 40), (-5, 40), (math.nan, 40), (100, math.inf), ("100", 40), (True, 4), "soft", 3]:
        with pytest.raises(InvalidInputError):
            scan.window_for(bad)


def test_monochrome1_is_inverted(tmp_path):
    scan = medical.read_medical_image(write_dicom(tmp_path / "m1.dcm", phantom_hu(), photometric="MONOCHROME1"))
    lung = medical.WINDOW_PRESETS["lung"]
    assert np.array_equal(np.asarray(scan.display("lung"))[:, :, 0], 255 - medical.apply_window(scan.values, lung))


def test_presets_need_ct_and_windows_need_dicom(tmp_path):
    mr = medical.read_medical_image(write_dicom(tmp_path / "mr.dcm", phantom_hu(), modality="MR"))
    with pytest.raises(InvalidInputError, match="applies to CT only") as info:
        mr.display("lung")
    assert "只适用于 CT" in info.value.message_zh
    assert np.asarray(mr.display((500, 0))).shape == (HEIGHT, WIDTH, 3)  # custom W/L in its own units is fine
    png = tmp_path / "slice.png"
    Image.fromarray(medical.apply_window(phantom_hu(), medical.WINDOW_PRESETS["lung"])).save(png)
    picture = medical.read_medical_image(png)
    assert picture.source == "image" and picture.spacing is None and picture.values.shape == (HEIGHT, WIDTH, 3)
    with pytest.raises(InvalidInputError, match="monochrome DICOM"):
        picture.display("bone")
    assert medical.read_medical_image(png, spacing=(0.5, 0.8)).spacing == medical.PixelSpacing(0.5, 0.8, "given")
    with pytest.raises(InvalidInputError):
        medical.read_medical_image(png, spacing=(0, 1))


def test_volumes_need_a_chosen_slice(tmp_path):
    volume = np.stack([phantom_hu() + 100 * i for i in range(3)])
    path = write_dicom(tmp_path / "volume.dcm", volume, frames=3)
    with pytest.raises(InvalidInputError, match="volume of 3 slices") as info:
        medical.read_medical_image(path)
    assert "slice_index" in info.value.message_zh
    scan = medical.read_medical_image(path, slice_index=2)
    assert np.array_equal(scan.values, volume[2]) and (scan.slice_index, scan.num_slices) == (2, 3)
    for bad in (3, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="out of range"):
            medical.read_medical_image(path, slice_index=bad)


def test_bad_dicom_files_get_clear_bilingual_errors(tmp_path):
    cases = {
        "no pixel data": write_dicom(tmp_path / "nopix.dcm", phantom_hu(), pixel_data=False),
        "compressed": write_dicom(tmp_path / "jls.dcm", phantom_hu(), transfer_syntax="1.2.840.10008.1.2.4.80"),
    }
    full = write_dicom(tmp_path / "full.dcm", phantom_hu()).read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(full[: len(full) - 5000])
    cases["cannot be decoded"] = tmp_path / "truncated.dcm"
    (tmp_path / "text.dcm").write_bytes(b"not a dicom file at all\n" * 20)
    cases["no pixel data|cannot be read"] = tmp_path / "text.dcm"
    (tmp_path / "empty.dcm").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.dcm"
    cases["does not exist"] = tmp_path / "missing.dcm"
    for expected, path in cases.items():
        with pytest.raises(InvalidImageError, match=expected) as info:
            medical.read_medical_image(path)
        assert info.value.message_zh != info.value.message and str(tmp_path) not in info.value.bilingual()


def test_dicom_is_recognised_by_content_and_from_bytes(tmp_path, ct):
    renamed = tmp_path / "scan.bin"
    renamed.write_bytes(ct.read_bytes())
    assert medical.read_medical_image(renamed).source == "dicom"
    assert medical.read_medical_image(ct.read_bytes()).spacing.row_mm == ROW_MM
    import pydicom

    assert medical.read_medical_image(pydicom.dcmread(ct)).modality == "CT"


# ---- post-processing and measurements ----------------------------------------------------------------------
def brute_force_feret_mm(mask: np.ndarray) -> float:
    """Max distance between corners of boundary pixels, by brute force (an independent check of the hull)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    rows, cols = np.nonzero(mask & ~inner)
    corners = [(c + dx, r + dy) for r, c in zip(rows, cols, strict=True) for dx in (0, 1) for dy in (0, 1)]
    points = np.array(corners, float)
    points *= (COL_MM, ROW_MM)
    best = 0.0
    for start in range(0, len(points), 512):
        chunk = points[start : start + 512]
        best = max(best, float(np.sqrt(((chunk[:, None] - points[None]) ** 2).sum(-1)).max()))
    return best


def test_rectangle_and_single_pixel_are_exact():
    spacing = medical.PixelSpacing(ROW_MM, COL_MM, "given")
    mask = np.zeros((40, 60), bool)
    mask[10:20, 20:50] = True  # 10 rows x 30 columns
    m = medical.measure_mask(mask, spacing)
    assert m.area_px == 300 and m.area_mm2 == pytest.approx(300 * ROW_MM * COL_MM, abs=1e-12)
    assert m.max_diameter_mm == pytest.approx(math.hypot(10 * ROW_MM, 30 * COL_MM), abs=1e-12)
    assert m.max_diameter_px == pytest.approx(math.hypot(10, 30), abs=1e-12)
    assert sorted(m.diameter_ends) in ([(20.0, 10.0), (50.0, 20.0)], [(20.0, 20.0), (50.0, 10.0)])
    dot = np.zeros((9, 9), bool)
    dot[4, 4] = True
    m = medical.measure_mask(dot, spacing)
    assert m.area_mm2 == pytest.approx(0.4) and m.max_diameter_mm == pytest.approx(math.hypot(ROW_MM, COL_MM))
    empty = medical.measure_mask(np.zeros((9, 9), bool), spacing)
    assert (empty.area_px, empty.max_diameter_mm, empty.diameter_ends) == (0, 0.0, None)


def test_anisotropic_spacing_picks_the_longest_pair_in_mm():
    # a plus sign: a 30-column horizontal bar and a 40-row vertical bar. In pixels the vertical bar is longer;
    # with 0.5 mm rows and 2 mm columns the horizontal one is (60 mm against 20 mm).
    mask = np.zeros((50, 50), bool)
    mask[20, 5:35] = True
    mask[0:40, 20] = True
    m = medical.measure_mask(mask, medical.PixelSpacing(0.5, 2.0, "given"))
    assert m.max_diameter_px == pytest.approx(math.hypot(1, 40), abs=1e-12)
    assert m.max_diameter_mm == pytest.approx(math.hypot(30 * 2.0, 1 * 0.5), abs=1e-12)
    (x0, y0), (x1, y1) = m.diameter_ends
    assert (abs(x1 - x0), abs(y1 - y0)) == (30, 1)  # the ends lie on the horizontal bar


def test_largest_component_and_fill_holes():
    mask = model_mask()
    cleaned, report = medical.postprocess_mask(mask)
    assert np.array_equal(cleaned, solid_lesion())
    assert report["pixels_removed"] == 36 and report["pixels_filled"] == int((hole() & solid_lesion()).sum())
    untouched, _ = medical.postprocess_mask(mask, keep_largest=False, fill=False)
    assert np.array_equal(untouched, mask)


def test_segment_lesion_with_a_ground_truth_segmenter(ct):
    segmenter = GroundTruthSegmenter(model_mask())
    box = (70, 60, 100, 140)
    result = medical.segment_lesion(ct, box=box, window="mediastinum", segmenter=segmenter)
    (call,) = segmenter.calls
    assert call["boxes"] == [tuple(float(v) for v in box)] and call["points"] is None
    scan = medical.read_medical_image(ct)
    assert np.array_equal(np.asarray(call["image"]), np.asarray(scan.display("mediastinum")))  # SAM sees the window
    solid = solid_lesion()
    assert np.array_equal(result.mask, solid) and np.array_equal(result.raw_mask, model_mask())
    m = result.measurements
    assert m.area_px == int(solid.sum()) and m.area_mm2 == pytest.approx(solid.sum() * ROW_MM * COL_MM, abs=1e-9)
    assert m.area_mm2 == pytest.approx(math.pi * A_MM * B_MM, rel=0.01)
    assert m.max_diameter_mm == pytest.approx(brute_force_feret_mm(solid), abs=1e-9)
    assert abs(m.max_diameter_mm - 2 * A_MM) <= math.hypot(ROW_MM, COL_MM)
    (x0, y0), (x1, y1) = m.diameter_ends
    # along the long (horizontal) axis; the flat tips of the pixelated ellipse allow a slight slant
    assert abs(x0 - x1) * COL_MM > 58 and abs(y0 - y1) * ROW_MM < 10
    data = result.to_dict()
    assert "not for clinical use" in data["notice"] and "不可用于临床" in data["notice"]
    assert data["measurements"]["unit"] == "mm" and data["postprocessing"]["pixels_removed"] == 36
    assert data["window"]["name"] == "mediastinum" and data["prompt"]["box"] == [70.0, 60.0, 100.0, 140.0]
    overlay = result.overlay()
    assert overlay.size == (WIDTH, HEIGHT) and overlay.mode == "RGB"
    pixels = np.asarray(overlay)
    inside = pixels[int(CY_MM / ROW_MM) + 20, int(CX_MM / COL_MM) + 25]
    assert inside[0] > inside[1]  # tinted red inside the lesion


def test_without_spacing_sizes_are_pixels(tmp_path):
    path = write_dicom(tmp_path / "nospacing.dcm", phantom_hu(), spacing_tag=None)
    result = medical.segment_lesion(path, points=[(80, 100, 1)], segmenter=GroundTruthSegmenter(model_mask()))
    m = result.measurements
    assert m.unit == "px" and m.area_mm2 is None and m.max_diameter_mm is None
    assert m.area_px == int(solid_lesion().sum()) and m.max_diameter_px > 0
    assert "pixels, not mm" in result.to_dict()["measurements"]["spacing_note"]


def test_prompts_are_checked(ct):
    segmenter = GroundTruthSegmenter(model_mask())
    with pytest.raises(InvalidInputError, match="box around the lesion"):
        medical.segment_lesion(ct, segmenter=segmenter)
    with pytest.raises(InvalidInputError, match="outside"):
        medical.segment_lesion(ct, box=(0, 0, 500, 10), segmenter=segmenter)
    with pytest.raises(InvalidInputError, match="outside"):
        medical.segment_lesion(ct, points=[(-3, 4, 1)], segmenter=segmenter)
    assert not segmenter.calls
    wrong = GroundTruthSegmenter(np.zeros((10, 10), bool))
    with pytest.raises(LmtError, match="mask for a 200×160 image"):
        medical.segment_lesion(ct, box=(1, 1, 50, 50), segmenter=wrong)


# ---- export round trips ------------------------------------------------------------------------------------
def test_png_and_nifti_round_trips(tmp_path, ct):
    import nibabel as nib

    result = medical.segment_lesion(ct, box=(70, 60, 100, 140), segmenter=GroundTruthSegmenter(model_mask()))
    png, nifti = medical.export_mask(result, tmp_path)
    assert (png.name, nifti.name) == ("lesion_mask.png", "lesion_mask.nii.gz")
    with Image.open(png) as read:
        assert read.mode == "L" and read.size == (WIDTH, HEIGHT)
        assert np.array_equal(np.asarray(read) == 255, result.mask) and set(np.unique(np.asarray(read))) == {0, 255}
    volume = nib.load(str(nifti))
    assert volume.shape == (WIDTH, HEIGHT, 1)
    assert np.array_equal(np.asarray(volume.dataobj)[:, :, 0].T.astype(bool), result.mask)
    assert volume.header.get_zooms() == pytest.approx((COL_MM, ROW_MM, 1.0), abs=1e-6)
    assert volume.header.get_xyzt_units()[0] == "mm"
    assert np.allclose(volume.affine, np.diag([COL_MM, ROW_MM, 1.0, 1.0]))


def test_nifti_affine_places_the_slice_in_patient_space(tmp_path):
    import nibabel as nib

    path = write_dicom(tmp_path / "placed.dcm", phantom_hu(), ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                       ImagePositionPatient=[-100.0, -50.0, 20.0], SliceThickness=2.5)
    scan = medical.read_medical_image(path)
    out = medical.save_mask_nifti(solid_lesion(), tmp_path / "placed.nii.gz", scan.spacing, scan)
    volume = nib.load(str(out))
    expected = np.array([[-COL_MM, 0, 0, 100.0], [0, -ROW_MM, 0, 50.0], [0, 0, 2.5, 20.0], [0, 0, 0, 1]])
    assert np.allclose(volume.affine, expected)
    assert volume.header.get_zooms() == pytest.approx((COL_MM, ROW_MM, 2.5), abs=1e-6)


def test_nifti_without_spacing_says_unknown_units(tmp_path):
    import nibabel as nib

    out = medical.save_mask_nifti(solid_lesion(), tmp_path / "px.nii.gz", None)
    volume = nib.load(str(out))
    assert volume.header.get_zooms() == pytest.approx((1.0, 1.0, 1.0))
    assert volume.header.get_xyzt_units()[0] == "unknown"


# ---- classification with a stand-in ------------------------------------------------------------------------
def test_classify_conditions_findings_on_the_dicom_modality(ct):
    classifier = KeywordClassifier("CT")
    result = medical.classify_image(ct, window="lung", classifier=classifier)
    templates = [template for _, template, _ in classifier.calls]
    assert templates == [*medical.MODALITY_TEMPLATES, "a CT scan showing {}.", "a CT scan with {}."]
    assert classifier.calls[0][0] == [medical.modality_prompt(m) for m in medical.DEFAULT_MODALITIES]
    assert classifier.calls[-1][0] == list(medical.DEFAULT_FINDINGS)
    scan = medical.read_medical_image(ct)
    lung = np.asarray(scan.display("lung"))
    assert all(np.array_equal(np.asarray(image), lung) for *_, image in classifier.calls)
    # mean over three templates, one of which reverses the rule: (3/10 + 3/10 + 1/10) / 3 for "a CT scan"
    n = len(medical.DEFAULT_MODALITIES)
    assert result.modality.label == "CT"
    assert result.modality.score == pytest.approx((2 * 3 / (n + 2) + 1 / (n + 2)) / 3)
    assert sum(p.score for p in result.modality.predictions) == pytest.approx(1.0)
    assert (result.findings_modality, result.findings_modality_source) == ("CT", "dicom header")
    data = result.to_dict()
    assert "not for clinical use" in data["notice"] and "not a diagnosis" in data["notice"]
    assert "not how likely a disease is" in data["scores_are"]
    assert data["window"]["name"] == "lung" and data["image"]["spacing"]["col_mm"] == COL_MM
    assert data["findings_prompts"] == ["a CT scan showing {}.", "a CT scan with {}."]
    assert data["model"] == "KeywordClassifier"


def test_classify_png_uses_the_models_top_modality(tmp_path):
    png = tmp_path / "xray.png"
    Image.fromarray((np.random.RandomState(0).rand(64, 64) * 255).astype(np.uint8)).save(png)
    classifier = KeywordClassifier("MRI")
    result = medical.classify_image(png, modalities="CT, MRI, X-ray", findings=["normal", "a nodule"],
                                    classifier=classifier)
    assert result.findings_modality == "MRI" and result.findings_modality_source == "model"
    assert classifier.calls[-1][1] == "an MRI scan with {}."
    assert [(p.label, p.score) for p in result.findings.predictions] == [("normal", 0.5), ("a nodule", 0.5)]
    given = medical.classify_image(png, modalities="CT, MRI", findings="a {weird} label", modality="ultra{}sound",
                                   classifier=KeywordClassifier("CT"))
    assert given.findings_modality_source == "given" and given.findings_modality == "ultra{}sound"
    with pytest.raises(InvalidInputError):
        medical.classify_image(png, modalities="", classifier=classifier)


# ---- end to end with the tiny models -----------------------------------------------------------------------
def test_tiny_clip_and_tiny_sam_end_to_end(tmp_path, ct):
    classified = medical.classify_image(ct, window="lung", model="clip-vit-b32", weights="tiny")
    assert isinstance(classified.modality, Classification) and len(classified.modality.predictions) == 8
    assert sum(p.score for p in classified.findings.predictions) == pytest.approx(1.0, abs=1e-5)
    assert classified.model == "clip-vit-b32"
    lesion = medical.segment_lesion(ct, box=(70, 60, 100, 140), points=[(80, 100, 1)], window="mediastinum",
                                    model="sam-vit-base", weights="tiny")
    assert lesion.mask.shape == (HEIGHT, WIDTH) and lesion.mask.dtype == bool
    m = lesion.measurements
    assert isinstance(m.area_mm2, float) and isinstance(m.max_diameter_mm, float)
    assert lesion.measurements.area_px == int(lesion.mask.sum())
    png, nifti = medical.export_mask(lesion, tmp_path)
    assert png.stat().st_size > 0 and nifti.stat().st_size > 0
    assert lesion.overlay().size == (WIDTH, HEIGHT)
