"""One exception hierarchy for the whole SDK.

Every error says what went wrong *and how to fix it*, in English (``str(err)``) and in Chinese
(``err.message_zh``), so that a Space can show both without a traceback::

    try:
        lmt.load("no-such-model")
    except lmt.LmtError as err:
        print(err.bilingual())
"""

from __future__ import annotations


class LmtError(Exception):
    """Base class of every error the SDK raises on purpose.

    ``message`` is English, ``message_zh`` Chinese. Both should name the fix.
    """

    def __init__(self, message: str, message_zh: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.message_zh = message_zh or message

    def bilingual(self) -> str:
        """The Chinese message, then the English one: what the UI shows."""
        if self.message_zh == self.message:
            return self.message
        return f"{self.message_zh}\n{self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"error": type(self).__name__, "message": self.message, "message_zh": self.message_zh}


class InvalidInputError(LmtError, ValueError):
    """An argument (labels, points, threshold, ...) is missing, malformed or out of range."""


class InvalidImageError(InvalidInputError):
    """An image cannot be decoded, is too large or too small, or is of a kind we cannot read."""


class UnknownModelError(LmtError, KeyError):
    """A model name is neither in the registry, nor a local folder, nor a Hub id we can resolve."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return self.message


class UnsupportedTaskError(LmtError, ValueError):
    """The model family cannot run the task asked for, or the task name is unknown."""


class WeightsUnavailableError(LmtError, OSError):
    """Real weights were asked for and cannot be had (offline and not cached, gated, wrong revision)."""


class UnsupportedDeviceError(LmtError, RuntimeError):
    """The device or dtype asked for is not available here, or would be pathologically slow."""


class MissingDependencyError(LmtError, ImportError):
    """An optional back-end (peft, onnxruntime, gradio, torch_npu ...) is needed and not installed."""


def missing_dependency(package: str, extra: str, purpose: str, purpose_zh: str) -> MissingDependencyError:
    """The error for an optional package that is not installed, naming the extra that brings it."""
    return MissingDependencyError(
        f"{purpose} needs the '{package}' package, which is not installed. "
        f"Install it with: pip install 'large-model-tutorial[{extra}]'",
        f"{purpose_zh}需要安装 '{package}' 包。请运行：pip install 'large-model-tutorial[{extra}]'",
    )
