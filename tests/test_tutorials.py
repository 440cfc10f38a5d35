"""The course runs: every tutorial's code blocks, in order, in a fresh interpreter per doc; and no link is broken.

One test per markdown file under ``tutorials/`` (the slowest, ``SLOW_DOCS``, are marked slow). It runs this file
as a script on the doc's blocks, in a new process (cwd = the repository root, ``HF_HUB_OFFLINE=1``,
``GRADIO_ANALYTICS_ENABLED=False``, ``LMT_HOME`` inherited), so docs share no state with each other or with the
test process:

- ```python blocks run in one namespace, in order; a traceback names the doc and the line in it.
- ```bash / ```shell / ```console blocks: each line starting with ``lmt `` (after an optional ``$ ``) runs as a
  real command (``python -m lmt.cli``), with ``--tiny`` appended when the sub-command loads a model and the line
  lacks it. Other lines (pip, make, docker ...) are shown, not run, unless the block is marked
  ``<!-- lmt: run -->``: then the whole block runs with bash, with the venv's ``lmt`` first on PATH.
- A block marked ``<!-- lmt: needs-real-weights -->``, ``<!-- lmt: needs-gpu -->`` or ``<!-- lmt: starts-server -->`` is checked, not run: Python
  must compile, every ``lmt`` module/attribute it names must exist and every registry model name it passes to
  ``lmt.pipeline``/``lmt.load``/a task class must be registered; each ``lmt`` command line must parse with
  ``lmt.cli.build_parser()``.

A marker is an HTML comment on the last non-blank line before the opening fence. Each doc test writes its counts
to the folder named by ``$LMT_TUTORIAL_COUNTS_DIR`` (set per session in conftest.py), which conftest.py sums into
the session's ``tutorials: ...`` summary line.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import traceback
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "tutorials"
DOCS = sorted(TUTORIALS.rglob("*.md")) if TUTORIALS.is_dir() else []
LINKED_DOCS = DOCS + [path for path in (REPO / "README.md",) if path.exists()]

PYTHON_LANGS = ("python", "py", "python3")
SHELL_LANGS = ("bash", "sh", "shell", "console")
# "starts-server": the block launches a long-running server (lmt space, docker run); checked, not run.
CHECK_ONLY_MARKERS = ("needs-real-weights", "needs-gpu", "starts-server")
MARKERS = (*CHECK_ONLY_MARKERS, "run")
DOC_TIMEOUT_S = 600
COMMAND_TIMEOUT_S = 300
COUNTS_ENV = "LMT_TUTORIAL_COUNTS_DIR"
#: Docs whose blocks take 42 s or more on CI's 2 cores (the ``--durations`` list of its log): they run with the
#: slow suite (``make test-slow``, CI's second test step), so every block still runs in CI while the default suite
#: stays near 15 minutes.
SLOW_DOCS = frozenset({
    "zh/04-deployment/06-onnx-quantization.md", "zh/05-usage/03-cli.md", "zh/04-deployment/07-cpu-optimization.md",
    "zh/02-finetuning/01-finetuning-basics.md", "zh/01-models/04-benchmarking.md",
    "zh/01-models/11-qwen-internvl.md", "zh/03-data/06-auto-annotation.md", "zh/03-data/04-custom-datasets.md",
    "zh/02-finetuning/03-full-finetuning.md",
})

_MARKER = re.compile(r"^\s*<!--\s*lmt:\s*([\w-]+)\s*-->\s*$")
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)")


class DocError(Exception):
    """A doc that cannot be run as written: an unclosed fence, an unknown or misplaced marker."""


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    code: str
    marker: str | None


def counts_dir() -> Path:
    """Where doc tests leave their counts: the session's folder (conftest.py), else a fixed per-user one."""
    fallback = Path(tempfile.gettempdir()) / f"lmt-tutorial-counts-{os.getuid()}"
    return Path(os.environ.get(COUNTS_ENV) or fallback)


# ---- reading markdown ----------------------------------------------------------------------------------------------
def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def parse_blocks(text: str) -> list[Block]:
    """Fenced code blocks in order, each with the ``<!-- lmt: ... -->`` marker on the non-blank line before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[str, int] | None = None  # a marker waiting for its fence
    index = 0
    while index < len(lines):
        line = lines[index]
        fence_match = _FENCE.match(line)
        if fence_match is None:
            marker_match = _MARKER.match(line)
            if marker_match:
                if marker_match.group(1) not in MARKERS:
                    raise DocError(
                        f"line {index + 1}: unknown marker '{marker_match.group(1)}'; use one of {', '.join(MARKERS)}"
                    )
                pending = (marker_match.group(1), index + 1)
            elif line.strip() and pending is not None:
                raise DocError(f"line {pending[1]}: marker '{pending[0]}' is not followed by a code block")
            index += 1
            continue
        indent, fence, lang = fence_match.groups()
        start = index
        body = []
        index += 1
        while index < len(lines) and not _closes(lines[index], fence):
            body.append(lines[index][len(indent) :] if lines[index].startswith(indent) else lines[index].lstrip())
            index += 1
        if index == len(lines):
            raise DocError(f"line {start + 1}: the code fence {fence} is never closed")
        blocks.append(Block(lang.lower(), start + 1, "\n".join(body), pending[0] if pending else None))
        pending = None
        index += 1
    if pending is not None:
        raise DocError(f"line {pending[1]}: marker '{pending[0]}' is not followed by a code block")
    return blocks


def shell_lines(code: str) -> list[tuple[int, str]]:
    """(offset in the block, command) for each line, with ``$ `` prompts removed and ``\\`` continuations joined."""
    commands: list[tuple[int, str]] = []
    lines = code.splitlines()
    index = 0
    while index < len(lines):
        offset, line = index, lines[index].strip()
        while line.endswith("\\") and index + 1 < len(lines):
            index += 1
            line = line[:-1].rstrip() + " " + lines[index].strip()
        commands.append((offset, line.removeprefix("$ ").strip()))
        index += 1
    return commands


def is_lmt_command(command: str) -> bool:
    return command == "lmt" or command.startswith("lmt ")


def lmt_argv(command: str) -> list[str] | None:
    """The arguments of an ``lmt ...`` command line, or None when the line is something else."""
    if not is_lmt_command(command):
        return None
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    operators = [token for token in tokens if token and set(token) <= set("();<>|&")]
    if operators:
        raise DocError(
            f"'{command}' uses shell operators ({' '.join(operators)}): mark its block <!-- lmt: run --> to run it "
            "with bash"
        )
    return tokens[1:]


# ---- the doc runner (this file run as a script, in the doc's own process) -----------------------------------------
class BlockFailed(Exception):
    pass


def _subparsers(parser: Any) -> dict[str, Any]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def with_tiny(argv: list[str]) -> list[str]:
    """``argv`` plus ``--tiny`` when its sub-command loads a model (it has a --tiny flag) and help is not asked."""
    from lmt.cli import build_parser

    commands = _subparsers(build_parser())
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in commands or {"-h", "--help", "--tiny"} & set(argv):
        return argv
    return [*argv, "--tiny"] if "--tiny" in commands[command]._option_string_actions else argv


def check_command(argv: list[str]) -> str | None:
    """Why ``lmt <argv>`` would be refused by the CLI's parser, or None when it parses."""
    from lmt.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            message = stderr.getvalue().strip().splitlines()
            return message[-1] if message else f"exit code {exit_.code}"
    return None


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"]; None for anything that is not a plain name chain."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _attribute(obj: Any, name: str) -> Any:
    """``obj.name``, importing ``obj.name`` as a submodule when ``obj`` is a package that has not imported it yet."""
    if hasattr(obj, name):
        return getattr(obj, name)
    module_name = getattr(obj, "__name__", None)
    if isinstance(obj, type(sys)) and module_name:
        try:
            return importlib.import_module(f"{module_name}.{name}")
        except ModuleNotFoundError:
            pass
    raise AttributeError(f"'{module_name or type(obj).__name__}' has no attribute or submodule '{name}'")


def check_python(code: str) -> list[str]:
    """Problems with a block that is not run: names under ``lmt`` that do not exist, unregistered model names."""
    import lmt
    from lmt.registry import families
    from lmt.tasks import Task

    tree = ast.parse(code)
    problems: list[str] = []
    bound: dict[str, Any] = {"lmt": lmt}  # local name -> the lmt object it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lmt":
                    try:
                        module = importlib.import_module(alias.name)
                    except ImportError as exc:
                        problems.append(f"line {node.lineno}: import {alias.name}: {exc}")
                        continue
                    if alias.asname:
                        bound[alias.asname] = module
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "lmt":
            try:
                module = importlib.import_module(node.module)
            except ImportError as exc:
                problems.append(f"line {node.lineno}: from {node.module} import ...: {exc}")
                continue
            for alias in node.names:
                if alias.name == "*":
                    continue
                try:
                    bound[alias.asname or alias.name] = _attribute(module, alias.name)
                except AttributeError as exc:
                    problems.append(f"line {node.lineno}: from {node.module} import {alias.name}: {exc}")

    def resolve(node: ast.AST) -> Any:
        parts = _dotted(node)
        if parts is None or parts[0] not in bound:
            return None
        obj = bound[parts[0]]
        for part in parts[1:]:
            obj = _attribute(obj, part)
        return obj

    registered = set(lmt.list_models()) | set(families())
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:  # each whole chain a.b.c once
            try:
                resolve(node)
            except AttributeError as exc:
                problems.append(f"line {node.lineno}: {'.'.join(_dotted(node) or [])}: {exc}")
        if not isinstance(node, ast.Call):
            continue
        try:
            func = resolve(node.func)
        except AttributeError:
            continue  # reported above
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        model = None
        if func is lmt.pipeline:
            task = keywords.get("task", node.args[0] if node.args else None)
            if isinstance(task, ast.Constant) and task.value not in lmt.TASKS:
                problems.append(f"line {node.lineno}: unknown task {task.value!r}; tasks: {', '.join(lmt.TASKS)}")
            model = keywords.get("model", node.args[1] if len(node.args) > 1 else None)
        elif func is lmt.load or (isinstance(func, type) and issubclass(func, Task)):
            model = keywords.get("model", node.args[0] if node.args else None)
        if isinstance(model, ast.Constant) and isinstance(model.value, str):
            name = model.value
            looks_like_registry_name = "/" not in name and not name.startswith((".", "~"))
            if looks_like_registry_name and name not in registered:
                problems.append(f"line {node.lineno}: model '{name}' is not registered (see `lmt models`)")
    return problems


def _run_lmt(argv: list[str], where: str) -> None:
    print(f"$ lmt {shlex.join(argv)}", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "lmt.cli", *argv],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT_S,
    )
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        raise BlockFailed(f"{where}: `lmt {shlex.join(argv)}` exited with {result.returncode}")


def _run_bash(code: str, lang: str, where: str) -> None:
    if lang == "console":  # only the prompted lines are commands; the rest is their output
        code = "\n".join(line.strip()[2:] for line in code.splitlines() if line.strip().startswith("$ "))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + code],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT_S,
    )
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        raise BlockFailed(f"{where}: the bash block exited with {result.returncode}")


def run_block(block: Block, doc: str, namespace: dict[str, Any], counts: dict[str, int]) -> None:
    where = f"{doc}:{block.line}"
    check_only = block.marker in CHECK_ONLY_MARKERS
    if block.lang in PYTHON_LANGS:
        if block.marker == "run":
            raise BlockFailed(f"{where}: <!-- lmt: run --> is for shell blocks; python blocks always run")
        print(f"--- {where} python{' (checked, not run: ' + block.marker + ')' if check_only else ''}", flush=True)
        # Leading newlines make tracebacks and SyntaxErrors give the line number in the doc itself.
        source = "\n" * block.line + block.code
        try:
            code = compile(source, doc, "exec")
        except SyntaxError:
            traceback.print_exc()
            raise BlockFailed(f"{where}: the python block does not compile") from None
        if check_only:
            problems = check_python(source)
            if problems:
                raise BlockFailed(f"{where}: " + "; ".join(problems))
            counts["blocks_marked"] += 1
            return
        try:
            exec(code, namespace)
        except BaseException:  # anything a doc raises, SystemExit included, fails that doc
            traceback.print_exc()
            raise BlockFailed(f"{where}: the python block raised") from None
        counts["blocks_executed"] += 1
        return
    if block.lang not in SHELL_LANGS:
        return  # text, json, yaml ... are shown only
    print(f"--- {where} {block.lang}{' (checked, not run: ' + block.marker + ')' if check_only else ''}", flush=True)
    if block.marker == "run":
        _run_bash(block.code, block.lang, where)
        counts["blocks_executed"] += 1
        counts["commands_run"] += sum(is_lmt_command(command) for _, command in shell_lines(block.code))
        return
    ran = 0
    for offset, command in shell_lines(block.code):
        try:
            argv = lmt_argv(command)
        except DocError as exc:
            raise BlockFailed(f"{doc}:{block.line + 1 + offset}: {exc}") from None
        if argv is None:
            continue
        line_where = f"{doc}:{block.line + 1 + offset}"
        if check_only:
            problem = check_command(argv)
            if problem:
                raise BlockFailed(f"{line_where}: `{command}` would be refused: {problem}")
            continue
        _run_lmt(with_tiny(argv), line_where)
        ran += 1
    counts["commands_run"] += ran
    if check_only:
        counts["blocks_marked"] += 1
    elif ran:
        counts["blocks_executed"] += 1


def run_plan(plan_path: Path) -> int:
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    counts = {"blocks_executed": 0, "blocks_marked": 0, "commands_run": 0}
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        for block in plan["blocks"]:
            run_block(Block(**block), plan["doc"], namespace, counts)
    except BlockFailed as exc:
        print(f"\nTUTORIAL FAILED at {exc}", flush=True)
        return 1
    finally:
        Path(plan["counts"]).write_text(json.dumps(counts))
    return 0


# ---- the tests -----------------------------------------------------------------------------------------------------
def _tail(text: str, limit: int = 12000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def test_slow_docs_name_existing_docs() -> None:
    names = {path.relative_to(TUTORIALS).as_posix() for path in DOCS}
    assert names >= SLOW_DOCS, SLOW_DOCS - names


def _doc_param(path: Path) -> Any:
    name = path.relative_to(TUTORIALS).as_posix()
    return pytest.param(path, id=name, marks=[pytest.mark.slow] if name in SLOW_DOCS else [])


@pytest.mark.parametrize("doc", [_doc_param(path) for path in DOCS])
def test_tutorial_runs(doc: Path, tmp_path: Path) -> None:
    relative = doc.relative_to(REPO).as_posix()
    try:
        blocks = parse_blocks(doc.read_text(encoding="utf-8"))
    except DocError as exc:
        pytest.fail(f"{relative}: {exc}", pytrace=False)
    plan, counts_file = tmp_path / "plan.json", tmp_path / "counts.json"
    plan.write_text(
        json.dumps({"doc": relative, "blocks": [asdict(b) for b in blocks], "counts": str(counts_file)}),
        encoding="utf-8",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    try:
        result = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(plan)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=DOC_TIMEOUT_S,
        )
        output, failed = result.stdout, result.returncode != 0
    except subprocess.TimeoutExpired as exc:
        output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        output, failed = output + f"\nTUTORIAL FAILED: {relative} ran longer than {DOC_TIMEOUT_S} s", True
    finally:
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
        folder = counts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / (relative.replace("/", "__") + ".json")).write_text(json.dumps({"docs": 1, **counts}))
    if failed:
        pytest.fail(f"{relative} failed:\n{_tail(output)}", pytrace=False)


# ---- links ---------------------------------------------------------------------------------------------------------
_INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
_HTML_LINK = re.compile(r"\b(?:href|src)=\"([^\"]+)\"")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:id|name)=\"([^\"]+)\"")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for the lines outside fenced code."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(2)
        elif fence is not None and _closes(line, fence):
            fence = None
        elif fence is None:
            lines.append((number, line))
    return lines


def _without_code_spans(line: str) -> str:
    return re.sub(r"(`+)(?:(?!\1).)+\1", "", line)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (CJK kept), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return anchors_of(path.read_text(encoding="utf-8"))


def anchors_of(text: str) -> set[str]:
    """The anchors a page offers: its headings' slugs (repeats numbered -1, -2 ...) and <a id/name> tags."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(text):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if match:
            slug = github_slug(match.group(1))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(doc: Path) -> list[str]:
    broken = []
    for number, raw_line in prose_lines(doc.read_text(encoding="utf-8")):
        line = _without_code_spans(raw_line)  # `[x](y)` in code is not a link
        targets = _INLINE_LINK.findall(line) + _HTML_LINK.findall(line)
        reference = _REFERENCE_LINK.match(line)
        if reference:
            targets.append(reference.group(1))
        for target in targets:
            if _SCHEME.match(target):
                continue
            path_part, _, anchor = target.partition("#")
            path_part = unquote(path_part)
            if path_part.startswith("/"):
                resolved = (REPO / path_part.lstrip("/")).resolve()
            else:
                resolved = (doc.parent / path_part).resolve() if path_part else doc
            where = f"{doc.relative_to(REPO)}:{number}: {target}"
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
                broken.append(f"{where} (no heading with anchor #{unquote(anchor)})")
    return broken


def test_no_broken_links() -> None:
    broken = [problem for doc in LINKED_DOCS for problem in broken_links(doc)]
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken)


# ---- the runner's own rules ----------------------------------------------------------------------------------------
def test_markers_and_fences_are_read_as_documented() -> None:
    text = (
        "intro\n\n<!-- lmt: needs-gpu -->\n```python\nimport lmt\n```\n\n```bash\n$ lmt models \\\n  'sam*'\n```\n"
    )
    blocks = parse_blocks(text)
    assert [(b.lang, b.line, b.marker) for b in blocks] == [("python", 4, "needs-gpu"), ("bash", 8, None)]
    assert shell_lines(blocks[1].code) == [(0, "lmt models 'sam*'")]
    assert lmt_argv("lmt models 'sam*'") == ["models", "sam*"] and lmt_argv("pip install x") is None
    for bad in ("<!-- lmt: nope -->\n```python\n```\n", "<!-- lmt: run -->\ntext\n", "```python\nx = 1\n"):
        with pytest.raises(DocError):
            parse_blocks(bad)
    with pytest.raises(DocError):
        lmt_argv("lmt models --json | head")


def test_github_slugs() -> None:
    assert github_slug("2. 用 `lmt predict` 跑起来！") == "2-用-lmt-predict-跑起来"
    assert github_slug("CLIP: Zero-shot (ViT-B/32)") == "clip-zero-shot-vit-b32"
    assert anchors_of("## 8. 检查环境：`lmt env`\n## A\n## A\n```\n# not a heading\n```\n") == {
        "8-检查环境lmt-env", "a", "a-1"
    }


if __name__ == "__main__":
    # Run as a script, Python puts tests/ first on sys.path, where tests/spaces/ would shadow the `spaces` package
    # (ZeroGPU) that the Spaces import; docs run as a reader's script would, from the repository root.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.exit(run_plan(Path(sys.argv[1])))
