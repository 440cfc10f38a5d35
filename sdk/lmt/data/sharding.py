"""Data-parallel runs over many items: fixed-size chunks, one shard file each, resume, deterministic merge.

The items (image paths) are sorted and cut into chunks of ``chunk_size``. Chunk ``i`` of ``n`` belongs to process
``i % world_size``; the world comes from accelerate's ``PartialState`` under ``accelerate launch`` or from explicit
``process_index``/``num_processes`` (e.g. a SLURM array, with no process group). Each finished chunk is written
atomically (temp file + rename) as ``shards/shard-<i>-of-<n>.json`` holding a manifest: the items it covered and a
digest of the settings. With ``resume=True`` a chunk whose shard exists with the same manifest is not recomputed.

Why chunks of a fixed size and not one shard per process: a chunk's identity (its items, its file name) depends
only on the sorted items and ``chunk_size``, never on how many processes ran. A run interrupted with 4 processes
can be resumed with 2 (or 1) and still reuse every finished chunk; the merge reads the chunks in item order, so
the merged output is the same bytes whatever the process count and (when each item is computed alone) the chunk
size.

>>> from lmt.data.sharding import plan_chunks
>>> [chunk.items for chunk in plan_chunks(["c.png", "a.png", "b.png"], chunk_size=2)]
[('a.png', 'b.png'), ('c.png',)]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError, missing_dependency
from lmt.validate import check_positive_int

logger = logging.getLogger(__name__)

SHARD_FORMAT = 1
MAX_CHUNK_SIZE = 1_000_000

#: ``work(items) -> one JSON-able record per item``, called on consecutive batches of one chunk.
Work = Callable[[Sequence[str]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Chunk:
    """A fixed slice of the sorted items: chunk ``index`` of ``count``."""

    index: int
    count: int
    items: tuple[str, ...]

    @property
    def file_name(self) -> str:
        return f"shard-{self.index:05d}-of-{self.count:05d}.json"


@dataclass(frozen=True)
class ProcessSlot:
    """Which process this is (``index`` of ``count``), and whether the processes share a process group."""

    index: int
    count: int
    synchronised: bool = False
    device: Any = None

    def owns(self, chunk: Chunk) -> bool:
        return chunk.index % self.count == self.index


@dataclass(frozen=True)
class ShardRun:
    """What one process did, and the merged records (item, record) in item order once every chunk is done."""

    chunks: int
    computed: tuple[int, ...]
    reused: tuple[int, ...]
    process: ProcessSlot
    records: tuple[tuple[str, dict[str, Any]], ...] | None

    @property
    def complete(self) -> bool:
        return self.records is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks, "computed": list(self.computed), "reused": list(self.reused),
            "process_index": self.process.index, "num_processes": self.process.count, "complete": self.complete,
        }


def _error(message: str, message_zh: str) -> InvalidInputError:
    return InvalidInputError(f"Sharded run: {message}", f"分片运行：{message_zh}")


# ---- planning ------------------------------------------------------------------------------------------------------
def plan_chunks(items: Sequence[str], chunk_size: int) -> tuple[Chunk, ...]:
    """The sorted, de-duplicated items cut into chunks of ``chunk_size`` (the last may be shorter)."""
    chunk_size = check_positive_int(chunk_size, "chunk_size", maximum=MAX_CHUNK_SIZE)
    ordered = sorted(set(items))
    if len(ordered) != len(items):
        raise _error("the same item is listed twice; give each item once.", "同一项出现了两次，每项只能给出一次。")
    if not ordered:
        raise _error("there are no items to process.", "没有需要处理的项。")
    count = -(-len(ordered) // chunk_size)
    return tuple(
        Chunk(index, count, tuple(ordered[index * chunk_size : (index + 1) * chunk_size])) for index in range(count)
    )


def current_process(
    process_index: int | None = None, num_processes: int | None = None, *, device: Any = None
) -> ProcessSlot:
    """This process's slot: explicit arguments, else accelerate's ``PartialState`` under a multi-process launch.

    ``device`` is the device asked for (None: the best available); under a launch, the slot's device is this
    process's own (``cuda:<local rank>``, or the CPU).
    """
    if (process_index is None) != (num_processes is None):
        raise _error("give process_index and num_processes together, or neither.",
                     "process_index 与 num_processes 须同时给出或都不给。")
    if num_processes is not None:
        count = check_positive_int(num_processes, "num_processes", maximum=100_000)
        if not isinstance(process_index, int) or isinstance(process_index, bool) or not 0 <= process_index < count:
            raise _error(f"process_index must be a whole number in [0, {count - 1}]; got {process_index!r}.",
                         f"process_index 必须是 [0, {count - 1}] 之间的整数，收到的是 {process_index!r}。")
        return ProcessSlot(process_index, count)
    # torchrun / accelerate launch set WORLD_SIZE; without it this is a plain single process and needs no accelerate
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        return ProcessSlot(0, 1)
    try:
        from accelerate import PartialState
    except ImportError:
        raise missing_dependency("accelerate", "train", "A multi-process run", "多进程运行") from None
    from lmt.device import resolve_device

    # without cpu=True, PartialState on a machine with no GPU sets up no process group and every process would
    # believe it is alone (and do all the work)
    state = PartialState(cpu=resolve_device(device).type == "cpu")
    if state.num_processes != world_size:
        raise _error(f"WORLD_SIZE is {world_size} but accelerate set up {state.num_processes} process(es). Start "
                     "the run with `accelerate launch --multi_gpu --num_processes N ...` (on CPUs too).",
                     f"WORLD_SIZE 为 {world_size}，但 accelerate 只建立了 {state.num_processes} 个进程。请用 "
                     "`accelerate launch --multi_gpu --num_processes N ...` 启动（CPU 上也是如此）。")
    return ProcessSlot(state.process_index, state.num_processes, synchronised=state.use_distributed,
                       device=state.device)


# ---- shard files ---------------------------------------------------------------------------------------------------
def settings_digest(settings: dict[str, Any]) -> str:
    """SHA-256 of the settings as canonical JSON: a shard computed with other settings is never reused."""
    text = json.dumps(settings, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest(chunk: Chunk, settings: dict[str, Any]) -> dict[str, Any]:
    return {"format": SHARD_FORMAT, "chunk": chunk.index, "chunks": chunk.count, "items": list(chunk.items),
            "settings_digest": settings_digest(settings)}


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_shard(path: Path, expected: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The shard's records when its manifest equals ``expected``; None when missing, unreadable or stale."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable shard %s (%s); it will be recomputed.", path, exc)
        return None
    if not isinstance(document, dict) or document.get("manifest") != expected:
        return None
    records = document.get("records")
    if not isinstance(records, list) or len(records) != len(expected["items"]):
        return None
    return records


def _write_shard(path: Path, expected: dict[str, Any], settings: dict[str, Any], records: list[dict[str, Any]]) -> None:
    document = {"manifest": expected, "settings": settings, "records": records}
    write_atomic(path, json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _compute(chunk: Chunk, work: Work, batch_size: int, progress: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for start in range(0, len(chunk.items), batch_size):
        batch = chunk.items[start : start + batch_size]
        results = work(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"work returned {len(results)} records for {len(batch)} items")
        records.extend(results)
        progress.update(len(batch))
    return records


# ---- the run -------------------------------------------------------------------------------------------------------
def run_sharded(
    items: Sequence[str],
    work: Work,
    folder: str | Path,
    *,
    settings: dict[str, Any],
    chunk_size: int = 64,
    batch_size: int = 1,
    resume: bool = False,
    process: ProcessSlot | None = None,
    description: str = "items",
) -> ShardRun:
    """Compute this process's chunks into ``folder/shards/``, then merge every chunk's records when all are done.

    ``work`` gets consecutive batches of at most ``batch_size`` items of one chunk; batches never straddle chunks,
    so for a fixed ``chunk_size`` every process count gives the same batches. ``process`` defaults to
    :func:`current_process`. Under ``accelerate launch`` the processes wait for each other and the main one merges;
    with explicit slots (no process group) any process that finds every chunk done merges: the merge is
    deterministic and its output written atomically, so two processes doing it at once is harmless.
    """
    from tqdm.auto import tqdm

    batch_size = check_positive_int(batch_size, "batch_size", maximum=1024)
    chunks = plan_chunks(items, chunk_size)
    slot = process if process is not None else current_process()
    shard_dir = Path(folder) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    mine = [chunk for chunk in chunks if slot.owns(chunk)]
    reused = [c.index for c in mine if resume and read_shard(shard_dir / c.file_name, manifest(c, settings)) is not None]
    pending = [chunk for chunk in mine if chunk.index not in set(reused)]
    where = f" [process {slot.index + 1}/{slot.count}]" if slot.count > 1 else ""
    if reused:
        logger.info("Resuming%s: %d of %d chunks already done.", where, len(reused), len(mine))
    progress = tqdm(total=sum(len(c.items) for c in pending), desc=f"{description}{where}", unit="item",
                    position=slot.index if slot.synchronised else None, leave=slot.count == 1)
    computed = []
    try:
        for chunk in pending:
            expected = manifest(chunk, settings)
            _write_shard(shard_dir / chunk.file_name, expected, settings, _compute(chunk, work, batch_size, progress))
            computed.append(chunk.index)
    finally:
        progress.close()
    if slot.synchronised:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        if slot.index != 0:
            return ShardRun(len(chunks), tuple(computed), tuple(reused), slot, None)
    return ShardRun(len(chunks), tuple(computed), tuple(reused), slot, merge_shards(chunks, shard_dir, settings))


def merge_shards(
    chunks: Sequence[Chunk], shard_dir: Path, settings: dict[str, Any]
) -> tuple[tuple[str, dict[str, Any]], ...] | None:
    """Every chunk's records as (item, record) sorted by item, or None while a chunk is missing or stale.

    Only the shards of this plan are read: shards left by a run with another ``chunk_size`` or other settings are
    ignored, never mixed in.
    """
    merged: list[tuple[str, dict[str, Any]]] = []
    missing = 0
    for chunk in chunks:
        records = read_shard(shard_dir / chunk.file_name, manifest(chunk, settings))
        if records is None:
            missing += 1
            continue
        merged.extend(zip(chunk.items, records, strict=True))
    if missing:
        logger.info("%d of %d chunks are not done yet; the merge waits for them.", missing, len(chunks))
        return None
    merged.sort(key=lambda pair: pair[0])
    return tuple(merged)


# ---- the items -----------------------------------------------------------------------------------------------------
def list_image_files(root: str | Path, *, exclude: str | Path | None = None) -> list[str]:
    """Image files under ``root`` (recursive, hidden entries skipped) as sorted POSIX paths relative to ``root``.

    ``exclude`` is a folder to leave out, e.g. the run's own output folder when it lies inside ``root``, so that
    thumbnails written by one run never become inputs of the next.
    """
    from lmt.train.data import IMAGE_SUFFIXES

    root = Path(root).expanduser()
    if not root.is_dir():
        raise _error(f"'{root}' is not a folder of images.", f"'{root}' 不是图片目录。")
    skip = Path(exclude).expanduser().resolve() if exclude is not None else None
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        if path.is_file():
            found.append(relative.as_posix())
    if not found:
        raise _error(f"'{root}' holds no images ({', '.join(IMAGE_SUFFIXES)}).",
                     f"'{root}' 中没有图片（{', '.join(IMAGE_SUFFIXES)}）。")
    return sorted(found)
