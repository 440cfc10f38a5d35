"""Draw the medical Space's example files: synthetic phantoms, no patient data.

    python spaces/medical/make_examples.py   # writes examples/phantom_chest_ct.dcm and examples/phantom_xray.png

The CT phantom is a 256x256 slice in Hounsfield units (air -1000, soft tissue 40, lungs -850, bone 700) with a
round 40 HU "nodule" of 12 mm diameter in the right lung at pixel (80, 110), 0.7 x 0.7 mm pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

EXAMPLES = Path(__file__).resolve().parent / "examples"
SIZE = 256
SPACING_MM = 0.7
NODULE_XY, NODULE_DIAMETER_MM = (80, 110), 12.0


def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    return ((cols + 0.5 - cx) / rx) ** 2 + ((rows + 0.5 - cy) / ry) ** 2 <= 1.0


def chest_hu() -> np.ndarray:
    noise = np.random.RandomState(0).normal(0, 12, (SIZE, SIZE))
    hu = np.full((SIZE, SIZE), -1000.0)
    hu[ellipse(128, 128, 118, 92)] = 40.0  # body
    hu[ellipse(82, 118, 42, 62) | ellipse(174, 118, 42, 62)] = -850.0  # lungs
    hu[ellipse(128, 200, 16, 14)] = 700.0  # vertebra
    radius_px = NODULE_DIAMETER_MM / 2 / SPACING_MM
    hu[ellipse(*NODULE_XY, radius_px, radius_px)] = 40.0
    return np.rint(hu + noise)


def write_ct(path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    uid = "1.2.826.0.1.3680043.8.498.1"  # fixed, so re-running gives the same bytes
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid + ".1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid + ".1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid + ".2", uid + ".3"
    ds.PatientName, ds.PatientID = "PHANTOM^SYNTHETIC", "LMT-PHANTOM"
    ds.Modality, ds.Rows, ds.Columns = "CT", SIZE, SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelSpacing, ds.SliceThickness = [SPACING_MM, SPACING_MM], 1.0
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [-89.6, -89.6, 0.0]
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = (chest_hu() + 1024).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_xray(path: Path) -> None:
    picture = Image.new("L", (SIZE, SIZE), 20)
    draw = ImageDraw.Draw(picture)
    draw.ellipse([20, 30, 236, 250], fill=150)  # chest
    draw.ellipse([45, 55, 120, 215], fill=60)  # lungs look dark on a radiograph
    draw.ellipse([136, 55, 211, 215], fill=60)
    draw.rectangle([120, 20, 136, 250], fill=200)  # spine
    for y in range(70, 210, 22):  # ribs
        draw.arc([30, y - 30, 226, y + 30], 200, 340, fill=190, width=5)
    draw.ellipse([150, 120, 172, 142], fill=120)  # an opacity
    picture.filter(ImageFilter.GaussianBlur(2)).save(path, format="PNG", optimize=True)


if __name__ == "__main__":
    EXAMPLES.mkdir(exist_ok=True)
    write_ct(EXAMPLES / "phantom_chest_ct.dcm")
    write_xray(EXAMPLES / "phantom_xray.png")
