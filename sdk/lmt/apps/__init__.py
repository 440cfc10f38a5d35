"""Application logic over the task calls: retail (``lmt.apps.retail``), medical imaging (``lmt.apps.medical``)
and intelligent traffic (``lmt.apps.traffic``).

Each module is plain functions and small dataclasses over the SDK's task calls. A detector is anything called
like :class:`lmt.ZeroShotObjectDetection` (``detector(image, queries=..., threshold=...) -> Detections``) and a
segmenter anything called like :class:`lmt.MaskGeneration`, so tests can pass a ground-truth stand-in and the
same code runs with the real models.
"""
