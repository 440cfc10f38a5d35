"""mkdocs hooks for the course site (mkdocs.yml: ``hooks: [docs/hooks.py]``).

- ``on_config``: the navigation, built from the files under ``tutorials/zh/`` (numbered parts, numbered pages,
  each titled by its first ``# `` heading), so that a new page appears without editing mkdocs.yml.
- ``on_files``: generated pages: the landing page, the CLI reference (``lmt <command> --help`` of every command,
  taken from the parser itself, so it cannot drift) and the API reference (mkdocstrings ``:::`` directives).
- ``on_page_markdown``: a relative link to a repository file outside ``tutorials/`` (README.md, configs/,
  benchmarks/results/ ...) becomes a link to that file on GitHub; inside the repository and in
  ``tests/test_tutorials.py``'s link check it stays relative.
"""

from __future__ import annotations

import argparse
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COURSE = "zh"
PART_TITLES = {
    "01-models": "第 1 部分 · 模型调研与选型",
    "02-finetuning": "第 2 部分 · 微调",
    "03-data": "第 3 部分 · 数据",
    "04-deployment": "第 4 部分 · 部署",
    "05-usage": "第 5 部分 · 使用",
    "06-applications": "第 6 部分 · 应用",
    "07-advanced": "第 7 部分 · 进阶",
}
#: API reference pages: page name -> (title, modules documented on it).
API_PAGES = {
    "lmt": ("lmt：加载与任务调用", ["lmt.pipeline", "lmt.load", "lmt.loading.LoadedModel", "lmt.registry"]),
    "tasks": ("lmt.tasks：任务调用", ["lmt.tasks"]),
    "results": ("lmt.results：结果类型", ["lmt.results"]),
    "errors": ("lmt.errors：错误类型", ["lmt.errors"]),
    "train": ("lmt.train：微调", ["lmt.train.config", "lmt.train.loop"]),
    "data": ("lmt.data：数据工具", ["lmt.data"]),
    "deploy": ("lmt.deploy：导出、压缩与推理后端", ["lmt.deploy"]),
    "hub": ("lmt.hub：发布到 Hub", ["lmt.hub"]),
    "apps": ("lmt.apps：应用", ["lmt.apps.retail", "lmt.apps.medical", "lmt.apps.traffic"]),
    "advanced": ("lmt.advanced：融合、持续学习、可解释性与鲁棒性", [
        "lmt.advanced.fusion", "lmt.advanced.continual", "lmt.advanced.explain", "lmt.advanced.robustness",
    ]),
}
LANDING = """# 视觉大模型实战课程 · Large-Model-Tutorial

一个中文优先的视觉大模型课程与工具包：每一页的代码都在 CI 中真实运行。

- [课程目录（中文）](zh/README.md)
- [English overview](en/index.md)
- [命令行参考](zh/reference/cli.md) · [API 参考](zh/reference/api/lmt.md)
"""
_LINK = re.compile(r"(?<!\!)\]\(([^)\s]+)\)")
_TITLE = re.compile(r"^#\s+(.+?)\s*$", re.MULTILINE)


def _title(path: Path) -> str:
    match = _TITLE.search(path.read_text(encoding="utf-8"))
    return match.group(1).replace("`", "") if match else path.stem


def course_nav(docs_dir: Path) -> list[Any]:
    """The navigation: landing, course index, the seven parts, the references, the English overview."""
    course = docs_dir / COURSE
    nav: list[Any] = [{"首页": "index.md"}, {"课程目录": f"{COURSE}/README.md"}]
    for part in sorted(p for p in course.iterdir() if p.is_dir() and p.name in PART_TITLES):
        pages = [{_title(page): page.relative_to(docs_dir).as_posix()} for page in sorted(part.glob("*.md"))]
        if pages:
            nav.append({PART_TITLES[part.name]: pages})
    reference = [{"命令行 lmt": f"{COURSE}/reference/cli.md"}]
    reference += [{title: f"{COURSE}/reference/api/{name}.md"} for name, (title, _) in API_PAGES.items()]
    nav.append({"参考": reference})
    nav.append({"English": "en/index.md"})
    return nav


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(prefix, parser)]
    for action in parser._actions:  # argparse has no public way to walk sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _subcommands(sub, f"{prefix} {name}")
    return found


def cli_reference() -> str:
    """Every command's ``--help``, in the order ``lmt --help`` lists them."""
    sys.path.insert(0, str(REPO / "sdk"))
    from lmt.cli import build_parser

    parser = build_parser()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    lines = [
        "# 命令行参考：`lmt`",
        "",
        "本页由 `lmt.cli.build_parser()` 在构建文档时生成，与命令行的实际行为一致。每条命令的用法见"
        "[5.3 命令行](../05-usage/03-cli.md)。",
        "",
    ]
    for name, sub in _subcommands(parser, "lmt"):
        lines += [f"## `{name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def api_page(title: str, modules: list[str]) -> str:
    lines = [f"# {title}", "", "本页由 mkdocstrings 从源代码的文档字符串生成。", ""]
    for module in modules:
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def on_config(config: Any) -> Any:
    config["nav"] = course_nav(Path(config["docs_dir"]))
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    generated = {"index.md": LANDING, f"{COURSE}/reference/cli.md": cli_reference()}
    for name, (title, modules) in API_PAGES.items():
        generated[f"{COURSE}/reference/api/{name}.md"] = api_page(title, modules)
    for src_uri, content in generated.items():
        files.append(File.generated(config, src_uri, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    repo_url = config["repo_url"].rstrip("/")
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(1)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (docs_dir / page_dir / path).resolve()
        if resolved.is_relative_to(docs_dir) or not resolved.is_relative_to(REPO):
            return match.group(0)
        kind = "tree" if resolved.is_dir() else "blob"
        url = f"{repo_url}/{kind}/main/{resolved.relative_to(REPO).as_posix()}" + (f"#{anchor}" if anchor else "")
        return f"]({url})"

    return _LINK.sub(rewrite, markdown)
