"""Find, load and combine the Spaces under ``spaces/<name>/app.py`` (for ``lmt space`` and ``lmt gallery``)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import gradio as gr

from lmt.errors import InvalidInputError
from lmt.spaces_paths import list_spaces, spaces_root


def load_space(name: str) -> ModuleType:
    """Import ``spaces/<name>/app.py`` as a module (its ``build_demo(tiny=...)`` builds the ``gr.Blocks``)."""
    app_file = spaces_root() / name / "app.py"
    if not app_file.is_file():
        known = ", ".join(list_spaces()) or "none found"
        raise InvalidInputError(
            f"No Space named '{name}' under {spaces_root()}. Spaces: {known}. Set LMT_SPACES_DIR to another folder.",
            f"在 {spaces_root()} 下没有名为 '{name}' 的 Space。可用：{known}。可用 LMT_SPACES_DIR 指定目录。",
        )
    module_name = f"lmt_space_{name.replace('-', '_')}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, app_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def build_gallery(tiny: bool = False, names: list[str] | None = None) -> gr.Blocks:
    """Every Space as a tab of one app. Models load when a tab is first used, not at start."""
    names = names or list_spaces()
    with gr.Blocks(title="LMT 视觉大模型 Spaces 合集 / LMT Spaces gallery") as gallery:
        gr.Markdown(
            "# LMT 视觉大模型合集 / LMT vision model gallery\n"
            "每个标签页是一个独立的 Space；模型在第一次使用时才加载。"
            " Each tab is one Space; its model loads when first used."
        )
        for name in names:
            module = load_space(name)
            with gr.Tab(getattr(module, "TITLE", name), id=name):
                module.build_demo(tiny=tiny)  # a Blocks built inside another Blocks renders into it
    return gallery
