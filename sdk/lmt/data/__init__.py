"""Dataset tools (``lmt data ...``): small real and synthetic sample datasets to train and test on.

Formats: ``lmt.data.importers.import_dataset`` (ImageFolder, CSV/JSONL, COCO, YOLO, image+mask pairs -> typed
``datasets`` folders), ``lmt.data.exporters.export_dataset`` (ImageFolder, COCO, YOLO), ``lmt.data.stats``
(class counts, sizes, mean/std) and ``lmt.data.publish.push_dataset`` (Hub dataset repository with a card).

More data: ``lmt.data.augment`` (kornia augmentation that moves boxes and masks with the image, preview grids,
augmented copies of a whole dataset) and ``lmt.data.synth`` (diffusers text-to-image and SAM-masked inpainting)."""
