"""Continual learning: train on task A, then on task B, and measure what is forgotten of A.

Five ways to learn task B after task A, each starting from the same model trained on A:

- ``naive``: fine-tune on B only (the baseline that forgets).
- ``replay``: experience replay; every batch of B is trained together with a batch from a small, class-balanced
  buffer of A's examples (:class:`ReplayBuffer`).
- ``ewc``: elastic weight consolidation (Kirkpatrick et al., 2017): a quadratic penalty keeps the weights that
  mattered for A (diagonal Fisher information) near their values after A (:class:`EWC`).
- ``lwf``: learning without forgetting (Li & Hoiem, 2016): on B's images, the model's outputs for A's classes are
  distilled from a frozen copy of the model after A (:func:`lwf_loss`).
- ``lora``: one LoRA adapter per task on the frozen model after A (peft), and a router that picks the task of each
  image from stored class statistics (:class:`TaskRouter`): no task id is given at test time.

>>> from lmt.advanced.continual import ContinualSettings, run_continual_experiment
>>> report = run_continual_experiment(ContinualSettings(epochs=2, seeds=(0,)))  # doctest: +SKIP
>>> report.method("replay").forgetting  # doctest: +SKIP

The experiment (:func:`run_continual_experiment`) is split-digits: scikit-learn's handwritten digits, task A = 0-4,
task B = 5-9, a small MLP on the 64 pixels, one 10-way head (class-incremental: the model must tell all ten
digits apart without being told the task).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmt.advanced.digits import digits_split
from lmt.advanced.fusion import check_settings_numbers
from lmt.errors import InvalidInputError, missing_dependency
from lmt.validate import check_positive_int

logger = logging.getLogger(__name__)

METHODS = ("naive", "replay", "ewc", "lwf", "lora")
#: split-digits: the classes of task A, then of task B
TASKS: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
NUM_CLASSES = 10
LORA_TARGETS = ("fc1", "fc2")


# ---- the model ------------------------------------------------------------------------------------------------------
class DigitMLP(nn.Module):
    """64 pixels -> ``hidden`` -> ``hidden`` -> 10 logits, ReLU. One head for all ten digits."""

    def __init__(self, hidden: int = 128, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        check_positive_int(hidden, "hidden")
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(pixels)))))


def parameter_count(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def tensor_bytes(tensors: Sequence[torch.Tensor] | dict[str, torch.Tensor]) -> int:
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return int(sum(t.numel() * t.element_size() for t in values))


# ---- data -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskData:
    """One task's train and test split: pixels scaled to [0, 1], flattened to 64 values; labels are the digits."""

    name: str
    classes: tuple[int, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def split_digits(tasks: Sequence[Sequence[int]] = TASKS) -> list[TaskData]:
    """scikit-learn's digits, split by image (70/30, stratified), then by class into ``tasks``."""
    train_images, train_digits, test_images, test_digits = digits_split()

    def pick(images: np.ndarray, digits: np.ndarray, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        keep = np.isin(digits, classes)
        pixels = torch.from_numpy((images[keep] / 16.0).reshape(-1, 64).astype(np.float32))
        return pixels, torch.from_numpy(digits[keep].astype(np.int64))

    result = []
    for index, classes in enumerate(tasks):
        name = chr(ord("A") + index)
        result.append(TaskData(name, tuple(classes), *pick(train_images, train_digits, classes),
                               *pick(test_images, test_digits, classes)))
    return result


# ---- replay ---------------------------------------------------------------------------------------------------------
class ReplayBuffer:
    """At most ``per_class`` examples of each class, kept by reservoir sampling within the class.

    Reservoir sampling keeps a uniform sample of everything seen so far however much more data arrives, and the
    per-class quota keeps the buffer balanced even when a task's classes are not.
    """

    def __init__(self, per_class: int, *, seed: int = 0) -> None:
        self.per_class = check_positive_int(per_class, "per_class")
        self._rng = np.random.default_rng(seed)
        self._items: dict[int, list[torch.Tensor]] = {}
        self._seen: dict[int, int] = {}

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise InvalidInputError(f"{len(x)} examples for {len(y)} labels.", f"{len(x)} 个样本却有 {len(y)} 个标签。")
        for example, label in zip(x, y.tolist(), strict=True):
            items = self._items.setdefault(label, [])
            seen = self._seen.get(label, 0)
            if len(items) < self.per_class:
                items.append(example.clone())
            else:
                slot = int(self._rng.integers(0, seen + 1))
                if slot < self.per_class:
                    items[slot] = example.clone()
            self._seen[label] = seen + 1

    def __len__(self) -> int:
        return sum(len(items) for items in self._items.values())

    def counts(self) -> dict[int, int]:
        return {label: len(items) for label, items in sorted(self._items.items())}

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every stored (example, label), in class order."""
        if not len(self):
            raise InvalidInputError("The replay buffer is empty: add examples first.", "回放缓冲区为空：请先添加样本。")
        labels = sorted(self._items)
        x = torch.stack([item for label in labels for item in self._items[label]])
        y = torch.tensor([label for label in labels for _ in self._items[label]], dtype=torch.int64)
        return x, y

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` stored examples drawn uniformly with replacement."""
        x, y = self.tensors()
        index = torch.randint(0, len(y), (count,), generator=generator)
        return x[index], y[index]

    def nbytes(self) -> int:
        """What the buffer stores: the examples (float32) and their labels (int64)."""
        x, y = self.tensors()
        return tensor_bytes([x, y])


# ---- EWC ------------------------------------------------------------------------------------------------------------
class EWC:
    """The penalty ``lambda / 2 * sum_i F_i * (theta_i - theta*_i)^2`` around the weights ``theta*`` after a task.

    ``F`` is the diagonal of the empirical Fisher information on that task's training data: the mean over
    examples of the squared gradient of the log-likelihood of the true label.
    """

    def __init__(self, anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], strength: float) -> None:
        if not math.isfinite(strength) or strength < 0:
            raise InvalidInputError(f"strength must be a non-negative number, not {strength!r}.",
                                    f"strength 应为非负数，而不是 {strength!r}。")
        self.anchor, self.fisher, self.strength = anchor, fisher, float(strength)

    @classmethod
    def from_data(cls, model: nn.Module, x: torch.Tensor, y: torch.Tensor, strength: float,
                  batch_size: int = 1) -> EWC:
        """Fisher from per-example gradients (``batch_size=1``: a batch's gradient squared is not the mean of the
        examples' squared gradients)."""
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        was_training = model.training
        model.eval()
        for start in range(0, len(y), batch_size):
            model.zero_grad(set_to_none=True)
            # summed, not averaged, so that each example's gradient enters with weight 1 when batch_size is 1
            F.cross_entropy(model(x[start:start + batch_size]), y[start:start + batch_size], reduction="sum").backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach() ** 2
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        fisher = {name: value / max(math.ceil(len(y) / batch_size), 1) for name, value in fisher.items()}
        anchor = {name: p.detach().clone() for name, p in params.items()}
        return cls(anchor, fisher, strength)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        total = torch.zeros(())
        for name, p in model.named_parameters():
            if name in self.anchor:
                total = total + (self.fisher[name] * (p - self.anchor[name]) ** 2).sum()
        return 0.5 * self.strength * total

    def nbytes(self) -> int:
        """The anchor weights and the Fisher diagonal: two float32 copies of the parameters."""
        return tensor_bytes(self.anchor) + tensor_bytes(self.fisher)


# ---- LwF ------------------------------------------------------------------------------------------------------------
def lwf_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, old_classes: Sequence[int],
             temperature: float = 2.0) -> torch.Tensor:
    """``T^2 * KL(p_teacher || p_student)`` over the old classes' logits only, both softened by ``T``.

    The new classes have no teacher (it never learnt them), so they are left out of the distillation.
    """
    if not math.isfinite(temperature) or temperature <= 0:
        raise InvalidInputError(f"temperature must be a positive number, not {temperature!r}.",
                                f"temperature 应为正数，而不是 {temperature!r}。")
    old = list(old_classes)
    return temperature**2 * F.kl_div(
        F.log_softmax(student_logits[:, old] / temperature, dim=-1),
        F.log_softmax(teacher_logits[:, old] / temperature, dim=-1),
        reduction="batchmean", log_target=True,
    )


# ---- routing for per-task adapters ----------------------------------------------------------------------------------
class TaskRouter:
    """Picks the task of an input: nearest class mean under a shared covariance (linear discriminant analysis).

    While a task's data is at hand, :meth:`observe` adds its per-class sums and scatter; afterwards only these
    statistics are kept (10 means and one 64x64 covariance here), never the examples. The predicted task is the
    task of the most likely class.
    """

    def __init__(self, dim: int, *, shrinkage: float = 0.1) -> None:
        self.dim = check_positive_int(dim, "dim")
        self.shrinkage = float(shrinkage)
        self._sums: dict[int, torch.Tensor] = {}
        self._counts: dict[int, int] = {}
        self._scatter = torch.zeros(dim, dim, dtype=torch.float64)
        self._task_of: dict[int, int] = {}

    def observe(self, task: int, x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.to(torch.float64)
        for label in sorted(set(y.tolist())):
            members = x[y == label]
            mean = members.mean(dim=0)
            # within-class scatter of this batch; class means from other batches are not mixed in (one call per task)
            self._scatter += (members - mean).T @ (members - mean)
            self._sums[label] = self._sums.get(label, torch.zeros(self.dim, dtype=torch.float64)) + members.sum(0)
            self._counts[label] = self._counts.get(label, 0) + len(members)
            self._task_of[label] = task

    def _parameters(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        labels = sorted(self._sums)
        if not labels:
            raise InvalidInputError("The router has seen no task yet: call observe() first.",
                                    "路由器还没有见过任何任务：请先调用 observe()。")
        means = torch.stack([self._sums[label] / self._counts[label] for label in labels])
        covariance = self._scatter / max(sum(self._counts.values()) - len(labels), 1)
        # shrink towards a scaled identity: 64 dims from a few hundred examples give a singular estimate
        target = torch.eye(self.dim, dtype=torch.float64) * covariance.diagonal().mean()
        covariance = (1 - self.shrinkage) * covariance + self.shrinkage * target
        return means, torch.linalg.inv(covariance), labels

    def predict_class(self, x: torch.Tensor) -> torch.Tensor:
        means, precision, labels = self._parameters()
        # LDA scores: x^T P mu - mu^T P mu / 2 (equal class priors)
        scores = x.to(torch.float64) @ precision @ means.T - 0.5 * ((means @ precision) * means).sum(-1)
        return torch.tensor(labels)[scores.argmax(dim=-1)]

    def predict_task(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self._task_of[int(label)] for label in self.predict_class(x)])

    def nbytes(self) -> int:
        """What inference needs, in float32: the class means and the covariance (its inverse replaces it)."""
        return 4 * (len(self._sums) * self.dim + self.dim * self.dim)


# ---- training -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ContinualSettings:
    """The same for every method: each task is trained for ``epochs`` epochs with AdamW."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    hidden: int = 128
    replay_per_class: int = 20
    ewc_strength: float = 1000.0
    lwf_temperature: float = 2.0
    lwf_weight: float = 1.0
    lora_rank: int = 8
    lora_alpha: int = 16
    #: LoRA's updates start at zero and are low-rank: it is usually trained with a higher learning rate than
    #: full fine-tuning (as peft's examples do)
    lora_lr: float = 5e-3
    router_shrinkage: float = 0.1
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "hidden", "replay_per_class", "lora_rank", "lora_alpha"):
            check_positive_int(getattr(self, name), name)
        check_settings_numbers(self, ("lr", "lora_lr", "lwf_temperature"),
                               ("ewc_strength", "lwf_weight", "router_shrinkage"))

    def to_dict(self) -> dict[str, Any]:
        return {name: (list(value) if isinstance(value, tuple) else value) for name, value in self.__dict__.items()}


def _batches(count: int, settings: ContinualSettings, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(count, generator=generator).split(settings.batch_size))


def fit(model: nn.Module, task: TaskData, settings: ContinualSettings, *, seed: int,
        extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        replay: ReplayBuffer | None = None, lr: float | None = None) -> float:
    """Train the model's trainable parameters on ``task``: cross-entropy, plus ``extra_loss(x, logits)`` if given,
    with each batch joined by as many replayed examples if ``replay`` is given. AdamW at ``lr`` (default
    ``settings.lr``). Returns the seconds it took."""
    start = time.perf_counter()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr or settings.lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(settings.epochs):
        for batch in _batches(len(task.train_y), settings, generator):
            x, y = task.train_x[batch], task.train_y[batch]
            if replay is not None:
                old_x, old_y = replay.sample(len(batch), generator)
                x, y = torch.cat([x, old_x]), torch.cat([y, old_y])
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if extra_loss is not None:
                loss = loss + extra_loss(x, logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - start


def _predict(model: nn.Module, x: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
    """Argmax over all classes, or over ``classes`` only (the task is known)."""
    with torch.no_grad():
        logits = model(x)
    if classes is None:
        return logits.argmax(dim=-1)
    allowed = torch.tensor(list(classes))
    return allowed[logits[:, allowed].argmax(dim=-1)]


def _accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).float().mean())


@dataclass(frozen=True)
class Evaluation:
    """Accuracy on each task's test set: class-incremental (10-way, no task id) and task-incremental (task id
    given: the argmax is taken over that task's classes only)."""

    a: float
    b: float
    a_task_given: float
    b_task_given: float
    routing_a: float | None = None
    routing_b: float | None = None

    def to_dict(self) -> dict[str, Any]:
        values = {"accuracy_a": self.a, "accuracy_b": self.b, "accuracy_a_task_given": self.a_task_given,
                  "accuracy_b_task_given": self.b_task_given, "routing_accuracy_a": self.routing_a,
                  "routing_accuracy_b": self.routing_b}
        return {key: None if value is None else round(value, 4) for key, value in values.items()}


def evaluate_single(model: nn.Module, a: TaskData, b: TaskData) -> Evaluation:
    return Evaluation(
        _accuracy(_predict(model, a.test_x), a.test_y), _accuracy(_predict(model, b.test_x), b.test_y),
        _accuracy(_predict(model, a.test_x, a.classes), a.test_y),
        _accuracy(_predict(model, b.test_x, b.classes), b.test_y),
    )


# ---- per-task LoRA --------------------------------------------------------------------------------------------------
def _peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise missing_dependency("peft", "train", "Per-task LoRA adapters", "按任务的 LoRA 适配器") from err
    return peft


class PerTaskLoRA:
    """The model after the first task, frozen, plus one peft LoRA adapter (and head copy) per later task.

    Task 0 runs the frozen base itself (no adapter); task t > 0 runs adapter ``task_t``: LoRA on
    ``target_modules`` and a trained copy of the ``head`` module. :meth:`predict` takes the task of each input
    (from a :class:`TaskRouter`, or the known task id) and the argmax over that task's classes. The model must
    map a tensor to logits (``model(x) -> (batch, classes)``).
    """

    def __init__(self, base: nn.Module, settings: ContinualSettings, *,
                 target_modules: Sequence[str] = LORA_TARGETS, head: str = "head") -> None:
        self.settings = settings
        self.target_modules, self.head = list(target_modules), head
        self.model = copy.deepcopy(base)
        self.adapters: list[str] = []
        self.classes: list[tuple[int, ...]] = []

    def add_task(self, task: TaskData, *, seed: int) -> float:
        """A new adapter for ``task``, trained on it (the base and the other adapters stay frozen)."""
        peft = _peft()
        name = f"task_{len(self.adapters) + 1}"
        config = peft.LoraConfig(r=self.settings.lora_rank, lora_alpha=self.settings.lora_alpha,
                                 target_modules=self.target_modules, modules_to_save=[self.head], lora_dropout=0.0)
        torch.manual_seed(seed)
        if isinstance(self.model, peft.PeftModel):
            self.model.add_adapter(name, config)
        else:
            self.model = peft.get_peft_model(self.model, config, adapter_name=name)
        self.model.set_adapter(name)  # only this adapter (and its head copy) is trainable
        self.adapters.append(name)
        self.classes.append(task.classes)
        return fit(self.model, task, self.settings, seed=seed, lr=self.settings.lora_lr)

    def adapter_parameters(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors that adapter ``name`` adds: its LoRA matrices and its copy of the head."""
        return {key: p for key, p in self.model.named_parameters() if f".{name}." in key or key.endswith(f".{name}")}

    def logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        with torch.no_grad():
            if task == 0:
                with self.model.disable_adapter():
                    return self.model(x)
            self.model.set_adapter(self.adapters[task - 1])
            return self.model(x)

    def predict(self, x: torch.Tensor, classes_per_task: Sequence[Sequence[int]], tasks: torch.Tensor) -> torch.Tensor:
        predictions = torch.empty(len(x), dtype=torch.int64)
        for task in sorted(set(tasks.tolist())):
            rows = tasks == task
            allowed = torch.tensor(list(classes_per_task[task]))
            predictions[rows] = allowed[self.logits(x[rows], task)[:, allowed].argmax(dim=-1)]
        return predictions


# ---- the experiment -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodResult:
    """One method, averaged over seeds, with its costs."""

    method: str
    accuracy_a_after_a: float
    evaluations: tuple[Evaluation, ...]
    extra_bytes: int
    extra_bytes_what: str
    trainable_parameters_task_b: int
    train_s_task_b: float

    def _mean(self, field_name: str) -> float | None:
        values = [getattr(e, field_name) for e in self.evaluations]
        return None if values[0] is None else float(np.mean(values))

    @property
    def accuracy_a(self) -> float:
        return self._mean("a")

    @property
    def accuracy_b(self) -> float:
        return self._mean("b")

    @property
    def forgetting(self) -> float:
        """Accuracy on A right after A minus accuracy on A after B (class-incremental), averaged over seeds."""
        return self.accuracy_a_after_a - self.accuracy_a

    def to_dict(self) -> dict[str, Any]:
        means = {key: self._mean(key) for key in ("a", "b", "a_task_given", "b_task_given", "routing_a", "routing_b")}
        return {
            "method": self.method, "accuracy_a_after_a": round(self.accuracy_a_after_a, 4),
            "accuracy_a": round(self.accuracy_a, 4), "accuracy_b": round(self.accuracy_b, 4),
            "forgetting": round(self.forgetting, 4),
            "accuracy_a_task_given": round(means["a_task_given"], 4),
            "accuracy_b_task_given": round(means["b_task_given"], 4),
            "routing_accuracy_a": None if means["routing_a"] is None else round(means["routing_a"], 4),
            "routing_accuracy_b": None if means["routing_b"] is None else round(means["routing_b"], 4),
            "extra_bytes": self.extra_bytes, "extra_bytes_what": self.extra_bytes_what,
            "trainable_parameters_task_b": self.trainable_parameters_task_b,
            "train_s_task_b": round(self.train_s_task_b, 2),
            "per_seed": [e.to_dict() for e in self.evaluations],
        }


@dataclass(frozen=True)
class ContinualReport:
    settings: ContinualSettings
    model_parameters: int
    train_sizes: dict[str, int]
    test_sizes: dict[str, int]
    accuracy_a_after_a: float
    results: tuple[MethodResult, ...]

    def method(self, name: str) -> MethodResult:
        for result in self.results:
            if result.method == name:
                return result
        raise InvalidInputError(f"No method {name!r} in this report.", f"报告中没有方法 {name!r}。")

    def forgetting_ratio(self, name: str) -> float:
        """The method's forgetting over naive fine-tuning's (0 = forgets nothing, 1 = as much as naive)."""
        return self.method(name).forgetting / max(self.method("naive").forgetting, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(), "model_parameters": self.model_parameters,
            "train_sizes": self.train_sizes, "test_sizes": self.test_sizes,
            "accuracy_a_after_a": round(self.accuracy_a_after_a, 4),
            "methods": {r.method: r.to_dict() | {"forgetting_vs_naive": round(self.forgetting_ratio(r.method), 4)}
                        for r in self.results},
        }


@dataclass
class _SeedRun:
    """What one seed produced for one method (internal)."""

    evaluation: Evaluation
    extra_bytes: int
    extra_bytes_what: str
    trainable: int
    seconds: float


def _run_naive(base: nn.Module, a: TaskData, b: TaskData, settings: ContinualSettings, seed: int) -> _SeedRun:
    model = copy.deepcopy(base)
    seconds = fit(model, b, settings, seed=seed)
    return _SeedRun(evaluate_single(model, a, b), 0, "nothing", parameter_count(model), seconds)


def _run_replay(base: nn.Module, a: TaskData, b: TaskData, settings: ContinualSettings, seed: int) -> _SeedRun:
    model = copy.deepcopy(base)
    buffer = ReplayBuffer(settings.replay_per_class, seed=seed)
    buffer.add(a.train_x, a.train_y)
    seconds = fit(model, b, settings, seed=seed, replay=buffer)
    what = f"{len(buffer)} stored examples of task A ({settings.replay_per_class} per class, float32 + int64 label)"
    return _SeedRun(evaluate_single(model, a, b), buffer.nbytes(), what, parameter_count(model), seconds)


def _run_ewc(base: nn.Module, a: TaskData, b: TaskData, settings: ContinualSettings, seed: int) -> _SeedRun:
    model = copy.deepcopy(base)
    ewc = EWC.from_data(model, a.train_x, a.train_y, settings.ewc_strength)
    seconds = fit(model, b, settings, seed=seed, extra_loss=lambda x, logits: ewc.penalty(model))
    return _SeedRun(evaluate_single(model, a, b), ewc.nbytes(), "anchor weights + Fisher diagonal (float32)",
                    parameter_count(model), seconds)


def _run_lwf(base: nn.Module, a: TaskData, b: TaskData, settings: ContinualSettings, seed: int) -> _SeedRun:
    model, teacher = copy.deepcopy(base), copy.deepcopy(base).eval()

    def distillation(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        return settings.lwf_weight * lwf_loss(logits, teacher_logits, a.classes, settings.lwf_temperature)

    seconds = fit(model, b, settings, seed=seed, extra_loss=distillation)
    return _SeedRun(evaluate_single(model, a, b), tensor_bytes(list(teacher.parameters())),
                    "frozen teacher copy of the model after A, while training B (float32)",
                    parameter_count(model), seconds)


def _run_lora(base: nn.Module, a: TaskData, b: TaskData, settings: ContinualSettings, seed: int) -> _SeedRun:
    router = TaskRouter(a.train_x.shape[1], shrinkage=settings.router_shrinkage)
    router.observe(0, a.train_x, a.train_y)  # while A's data is at hand; only statistics are kept
    adapters = PerTaskLoRA(base, settings)
    seconds = adapters.add_task(b, seed=seed)
    router.observe(1, b.train_x, b.train_y)
    classes = [a.classes, b.classes]
    routed_a, routed_b = router.predict_task(a.test_x), router.predict_task(b.test_x)
    evaluation = Evaluation(
        _accuracy(adapters.predict(a.test_x, classes, routed_a), a.test_y),
        _accuracy(adapters.predict(b.test_x, classes, routed_b), b.test_y),
        _accuracy(adapters.predict(a.test_x, classes, torch.zeros(len(a.test_y), dtype=torch.int64)), a.test_y),
        _accuracy(adapters.predict(b.test_x, classes, torch.ones(len(b.test_y), dtype=torch.int64)), b.test_y),
        _accuracy(routed_a, torch.zeros_like(routed_a)), _accuracy(routed_b, torch.ones_like(routed_b)),
    )
    adapter = adapters.adapter_parameters(adapters.adapters[0])
    what = "LoRA matrices + head copy for task B, and the router's class means and covariance (float32)"
    return _SeedRun(evaluation, tensor_bytes(adapter) + router.nbytes(), what,
                    sum(p.numel() for p in adapter.values()), seconds)


_RUNNERS: dict[str, Callable[..., _SeedRun]] = {
    "naive": _run_naive, "replay": _run_replay, "ewc": _run_ewc, "lwf": _run_lwf, "lora": _run_lora,
}


def run_continual_experiment(settings: ContinualSettings | None = None,
                             methods: Sequence[str] = METHODS) -> ContinualReport:
    """Split-digits, per seed: train one model on A; from that same model, learn B with each method; evaluate."""
    settings = settings or ContinualSettings()
    unknown = [m for m in methods if m not in _RUNNERS]
    if unknown or "naive" not in methods:
        raise InvalidInputError(
            f"methods must include 'naive' (the reference) and come from {', '.join(METHODS)}; got {list(methods)}.",
            f"methods 必须包含 'naive'（对照）且只能取自 {', '.join(METHODS)}；收到 {list(methods)}。",
        )
    a, b = split_digits()
    runs: dict[str, list[_SeedRun]] = {m: [] for m in methods}
    after_a, parameters = [], 0
    for seed in settings.seeds:
        torch.manual_seed(seed)
        base = DigitMLP(settings.hidden)
        parameters = parameter_count(base)
        fit(base, a, settings, seed=seed)
        after_a.append(_accuracy(_predict(base, a.test_x), a.test_y))
        for method in methods:
            torch.manual_seed(seed)
            runs[method].append(_RUNNERS[method](base, a, b, settings, seed))
            logger.info("continual seed %d %s: %s", seed, method, runs[method][-1].evaluation)
    accuracy_after_a = float(np.mean(after_a))
    results = tuple(
        MethodResult(method, accuracy_after_a, tuple(r.evaluation for r in seed_runs), seed_runs[0].extra_bytes,
                     seed_runs[0].extra_bytes_what, seed_runs[0].trainable,
                     float(np.mean([r.seconds for r in seed_runs])))
        for method, seed_runs in runs.items()
    )
    return ContinualReport(settings, parameters, {"A": len(a.train_y), "B": len(b.train_y)},
                           {"A": len(a.test_y), "B": len(b.test_y)}, accuracy_after_a, results)
