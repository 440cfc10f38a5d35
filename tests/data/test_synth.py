"""lmt.data.synth: tiny Stable Diffusion pipelines (text-to-image, inpainting) built from configs, saved and loaded
through from_pretrained; images of the requested size with manifests lmt reads; inpainting keeps the pixels outside
the mask (the diffusers pipeline alone does not); SAM masks from boxes; real weights offline fail clearly; the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmt.cli import main
from lmt.data import synth
from lmt.errors import InvalidInputError, UnknownModelError, UnsupportedTaskError, WeightsUnavailableError


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # sub-million-parameter pipelines: a second thread only adds synchronisation (~10x slower on a busy 2-core box)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def source_image(tmp_path_factory) -> Path:
    """A 64x48 noise image with a flat grey square in it."""
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    pixels[12:36, 20:44] = 128
    path = tmp_path_factory.mktemp("synth-src") / "scene.png"
    Image.fromarray(pixels).save(path)
    return path


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_tiny_pipelines_are_real_diffusers_pipelines_loaded_from_disk():
    import diffusers

    for kind, cls_name in synth.PIPELINE_CLASSES.items():
        folder = synth.tiny_pipeline_path(kind)
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        assert index["_class_name"] == cls_name
        assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        assert synth.tiny_pipeline_path(kind) == folder  # built once
    generate = synth.TextToImage(weights="tiny")
    assert isinstance(generate.pipeline, diffusers.StableDiffusionPipeline)
    assert generate.pipeline.unet.config.in_channels == 4
    assert synth.Inpainting(weights="tiny").pipeline.unet.config.in_channels == 9
    assert generate.resolved.name == "sd-v1-5" and generate.resolved.weights == "tiny"


def test_text_to_image_is_seeded_and_sized():
    generate = synth.TextToImage(weights="tiny")
    first = generate(["a photo of a cat", "a photo of a dog"], seed=4, size=(48, 32))
    assert [item.image.size for item in first] == [(48, 32)] * 2
    assert [item.seed for item in first] == [4, 5]
    again = generate(["a photo of a dog"], seed=5, size=(48, 32))[0]  # image 2 redrawn alone
    assert np.array_equal(np.asarray(again.image), np.asarray(first[1].image))
    assert not np.array_equal(np.asarray(first[0].image), np.asarray(first[1].image))
    for bad in ({"size": 30}, {"size": (48, 0)}, {"steps": 0}, {"guidance": float("nan")}):
        with pytest.raises(InvalidInputError):
            generate("a cat", **bad)
    with pytest.raises(InvalidInputError):
        generate("   ")


def test_synthesize_writes_a_dataset_lmt_reads(tmp_path):
    from lmt.data.validate import validate_dataset
    from lmt.train.data import read_records

    result = synth.synthesize({"zebra": 2, "okapi": 1}, tmp_path / "out", size=(40, 32), seed=10, weights="tiny",
                              prompts={"okapi": "an okapi in a forest"})
    assert result.written == 3 and result.per_label == {"zebra": 2, "okapi": 1}
    rows = read_rows(result.manifest)
    assert [r["prompt"] for r in rows] == ["a photo of a zebra", "a photo of a zebra", "an okapi in a forest"]
    assert [r["seed"] for r in rows] == ["10", "11", "12"]
    for record in read_records(result.manifest, {"image": "image", "label": "label"}):
        with Image.open(record["image"]) as image:
            image.load()
            assert image.format == "PNG" and image.size == (40, 32) and image.mode == "RGB"
    report = validate_dataset(result.manifest)
    assert not report.of_kind("corrupt") and not report.of_kind("duplicate")
    settings = json.loads((Path(result.out_dir) / "synthesis.json").read_text(encoding="utf-8"))
    assert settings["weights"] == "tiny" and settings["steps"] == synth.TINY_STEPS and settings["size"] == [40, 32]
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        synth.synthesize(["zebra"], tmp_path / "out", weights="tiny")


def test_balance_counts_tops_up_rare_classes(tmp_path):
    from tests.data.synthetic import write_clean_folder

    source = write_clean_folder(tmp_path / "src", {"common": 5, "rare": 2, "rarer": 1}, seed=0)
    assert synth.balance_counts(source) == {"rare": 3, "rarer": 4}
    assert synth.balance_counts(source, target=2) == {"rarer": 1}


def test_inpainting_keeps_outside_pixels_and_changes_inside(source_image):
    paint = synth.Inpainting(weights="tiny")
    source = np.asarray(Image.open(source_image).convert("RGB")).astype(int)
    mask = np.zeros(source.shape[:2], bool)
    mask[12:36, 20:44] = True
    kept = paint(source_image, mask, prompt="a red apple", seed=1)
    out = np.asarray(kept.image).astype(int)
    assert kept.image.size == (64, 48)
    assert np.array_equal(out[~mask], source[~mask])
    assert np.abs(out[mask] - source[mask]).mean() > 5
    # what diffusers' pipeline gives on its own: every pixel re-encoded by the VAE, none kept as it was
    raw = np.asarray(paint(source_image, mask, prompt="a red apple", seed=1, keep_unmasked=False).image).astype(int)
    assert np.array_equal(raw[mask], out[mask])
    assert np.abs(raw[~mask] - source[~mask]).mean() > 5
    feathered = np.asarray(paint(source_image, mask, prompt="a red apple", seed=1, feather=3).image).astype(int)
    band = np.zeros_like(mask)
    band[9:39, 17:47] = True  # the mask grown by 3 pixels
    assert np.array_equal(feathered[mask], out[mask]) and np.array_equal(feathered[~band], source[~band])
    assert not np.array_equal(feathered[band & ~mask], source[band & ~mask])
    for bad_mask in (np.zeros_like(mask), np.ones((5, 5), bool)):
        with pytest.raises(InvalidInputError):
            paint(source_image, bad_mask, prompt="a red apple")


def test_inpaint_with_sam_boxes_writes_images_masks_and_manifest(source_image, tmp_path):
    from lmt.train.data import read_records

    result = synth.inpaint([source_image, source_image], tmp_path / "out", prompt="a red apple", label="apple",
                           boxes=[(20, 12, 44, 36), (4, 4, 30, 30)], count=2, dilate=1, weights="tiny")
    assert result.written == 4 and result.per_label == {"apple": 4}
    records = read_records(result.manifest, {"image": "image", "mask": "mask", "label": "label"})
    assert [Path(r["mask"]).name for r in records] == ["00000.png", "00000.png", "00001.png", "00001.png"]
    source = np.asarray(Image.open(source_image).convert("RGB")).astype(int)
    for record in records:
        with Image.open(record["image"]) as image, Image.open(record["mask"]) as mask_file:
            inside = np.asarray(mask_file) > 0
            assert image.size == (64, 48) and inside.shape == (48, 64) and inside.any()
            assert np.array_equal(np.asarray(image.convert("RGB")).astype(int)[~inside], source[~inside])
    given = synth.inpaint(source_image, tmp_path / "given", prompt="a red apple", label="apple",
                          masks=[records[0]["mask"]], weights="tiny")
    assert given.settings["region"] == "masks" and given.written == 1
    cases = [{"boxes": [(0, 0, 10, 10)], "masks": ["m.png"]}, {}, {"boxes": [(0, 0, 10, 10)] * 2}]
    for index, regions in enumerate(cases):
        with pytest.raises(InvalidInputError):
            synth.inpaint(source_image, tmp_path / f"bad{index}", prompt="x", label="x", weights="tiny", **regions)


def test_real_weights_offline_fail_clearly_and_names_are_checked(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as error:
        synth.TextToImage("sd-v1-5", device="cpu")
    assert "--tiny" in str(error.value) and "stable-diffusion-v1-5/stable-diffusion-v1-5" in str(error.value)
    with pytest.raises(WeightsUnavailableError):
        synth.Inpainting(device="cpu")
    with pytest.raises(UnsupportedTaskError, match="sd-v1-5-inpainting"):
        synth.TextToImage("sd-v1-5-inpainting", weights="tiny")
    with pytest.raises(UnknownModelError):
        synth.TextToImage("no-such-model", weights="tiny")
    with pytest.raises(UnknownModelError):
        synth.TextToImage("someone/some-model", weights="tiny")  # a Hub id has no tiny variant
    assert synth.list_synthesis_models("inpainting") == ["sd-v1-5-inpainting"]


def test_cli_synth(source_image, tmp_path, capsys):
    out = tmp_path / "text"
    assert main(["data", "synth", "text", "--classes", "zebra, okapi", "--count", "1", "--out", str(out), "--tiny",
                 "--size", "32", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["per_label"] == {"zebra": 1, "okapi": 1} and document["weights"] == "tiny"
    assert len(read_rows(out / "manifest.csv")) == 2
    assert main(["data", "synth", "inpaint", str(source_image), "--box", "20,12,44,36", "--prompt", "a red apple",
                 "--label", "apple", "--out", str(tmp_path / "paint"), "--tiny"]) == 0
    assert "Wrote 1 images (apple 1)" in capsys.readouterr().out
    assert main(["data", "synth", "text", "--classes", "zebra", "--out", str(tmp_path / "bad"), "--tiny",
                 "--size", "30"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main(["data", "synth", "inpaint", str(source_image), str(source_image), "--point", "30,20",
                 "--prompt", "x", "--label", "x", "--out", str(tmp_path / "pts"), "--tiny"]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["data", "synth", "text", "--help"])
    assert exit_.value.code == 0
