"""Fine-tuning: full, LoRA (DoRA, rsLoRA), QLoRA, IA3, LoHa and LoKr, on accelerate; every run ends as a Hub-ready
folder.

>>> from lmt.train import load_config, train
>>> # config = load_config("configs/train/vit-digits-lora.yaml", overrides=["optim.epochs=1"])
>>> # result = train(config)   # or: lmt train configs/train/vit-digits-lora.yaml optim.epochs=1

The same command runs on a CPU, on a GPU or NPU, and on several processes or machines through
``accelerate launch``.
"""

from __future__ import annotations

from lmt.train.config import TRAIN_TASKS, TrainConfig, config_from_dict, load_config
from lmt.train.loop import TrainResult, train

__all__ = ["TRAIN_TASKS", "TrainConfig", "TrainResult", "config_from_dict", "load_config", "train"]
