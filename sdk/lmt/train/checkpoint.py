"""Checkpoints written atomically, and exact resume.

A checkpoint folder is first written under a hidden temporary name, flushed to disk, marked complete, then
renamed into place in one step: a run killed at any moment leaves either the whole checkpoint or none of it.
It holds what exact resume needs: the trained tensors (``trainable.safetensors``: the trainable parameters
and the model's buffers), and ``training_state.pt``: optimizer, LR scheduler, RNG states and the data position.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

COMPLETE_MARKER = "COMPLETE"
TENSORS_FILE = "trainable.safetensors"
STATE_FILE = "training_state.pt"
BEST = "best"


@dataclass
class Position:
    """Where the run is: the next epoch to run and how many of its batches are done."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0


def trained_tensors(model: Any) -> dict[str, Any]:
    """The parameters that train, plus every buffer (BatchNorm statistics ...), detached on the CPU."""
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    for name, buffer in model.named_buffers():
        tensors.setdefault(name, buffer.detach().cpu().contiguous())
    return tensors


def load_trained_tensors(model: Any, folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / TENSORS_FILE))
    named = dict(model.named_parameters())
    named.update(dict(model.named_buffers()))
    missing = sorted(set(tensors) - set(named))
    if missing:
        raise RuntimeError(f"checkpoint {folder} names tensors the model lacks: {missing[:5]}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            named[name].copy_(tensor.to(named[name].device, named[name].dtype))


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def _write_atomically(final: Path, write: Any) -> None:
    """Run ``write(tmp_folder)``, then move the finished folder to ``final`` (replacing an older one)."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / COMPLETE_MARKER).write_text("ok")
    _fsync_tree(tmp)
    if final.exists():  # replace: park the old folder first, so a crash never leaves neither
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(
    folder: Path, model: Any, optimizer: Any, scheduler: Any, position: Position, keep: int
) -> Path:
    """Write ``folder/step-NNNNNNN`` atomically and keep only the newest ``keep`` step checkpoints."""
    import torch
    from safetensors.torch import save_file

    final = folder / f"step-{position.global_step:07d}"

    def write(tmp: Path) -> None:
        save_file(trained_tensors(model), str(tmp / TENSORS_FILE))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
             "position": asdict(position)},
            tmp / STATE_FILE,
        )

    _write_atomically(final, write)
    for old in step_checkpoints(folder)[:-keep]:
        _remove_atomically(old)
    return final


def _remove_atomically(path: Path) -> None:
    """Hide the folder in one rename, then delete it: a kill mid-delete leaves a hidden leftover, never a
    checkpoint with files missing. :func:`recover` sweeps the leftovers."""
    hidden = path.parent / f".tmp-removing-{path.name}-{os.getpid()}"
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def save_best(folder: Path, model: Any) -> Path:
    from safetensors.torch import save_file

    final = folder / BEST
    _write_atomically(final, lambda tmp: save_file(trained_tensors(model), str(tmp / TENSORS_FILE)))
    return final


def recover(folder: Path) -> None:
    """Tidy after a crash: drop unfinished temporary folders; put back a parked ``best`` that lost its successor."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.startswith(".tmp-"):
            shutil.rmtree(path, ignore_errors=True)
    for path in folder.iterdir():
        if path.name.startswith(".old-"):
            original = folder / path.name[len(".old-"):].rsplit("-", 1)[0]
            if original.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, original)


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def step_checkpoints(folder: Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith("step-") and is_complete(p)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any) -> Position:
    """Restore model tensors, optimizer, scheduler and RNG from ``folder``; return the position to continue from."""
    import torch

    load_trained_tensors(model, folder)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return Position(**state["position"])
