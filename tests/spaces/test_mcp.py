"""The CLIP Space as an MCP server: tools named after the api_names, described by the docstrings, callable.

Gradio's MCP tools take a file input as a string: an ``http(s)://`` URL (gradio downloads it, SSRF-protected,
so not from 127.0.0.1) or a ``data:<mime>;base64,...`` URL (saved to gradio's cache, then passed on as an
upload). Offline, the test sends the example image base64-encoded.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import os
from collections.abc import Iterator

import pytest

from tests.spaces.conftest import EXAMPLES

TINY = "clip-vit-b32 (tiny)"
CAT = "data:image/png;base64," + base64.b64encode((EXAMPLES / "cat.png").read_bytes()).decode("ascii")
# intended: the tiny flag is a gr.State, and MCP calls get its launch-time value
pytestmark = pytest.mark.filterwarnings("ignore:This MCP server includes a tool that has a gr.State input")


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    from lmt import ui
    from lmt.ui.spaces import load_space

    assert ui.mcp_available(), "gradio[mcp] is not installed"
    # without both, every tool call looks up external hosts
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and os.environ["HF_HUB_OFFLINE"] == "1"
    demo = load_space("clip").build_demo(tiny=True)
    ui.configure_queue(demo)
    demo.launch(
        prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=None, show_error=False,
        mcp_server=True,
    )
    try:
        yield demo.local_url + "gradio_api/mcp/"
    finally:
        demo.close()


async def _session_call(url: str, action):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        return await action(session)


def run_session(url: str, action):
    return asyncio.run(asyncio.wait_for(_session_call(url, action), timeout=60))


def test_tools_are_named_and_described(mcp_url):
    async def list_tools(session):
        return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in run_session(mcp_url, list_tools)}
    assert {"classify", "search"} <= set(tools)
    classify = tools["classify"]
    assert classify.description.startswith("Classify an image against free-text labels")
    properties = classify.inputSchema["properties"]
    # the docstring's Args: section, word for word
    assert properties["labels"]["description"].startswith("Candidate labels, separated by commas")
    assert properties["model"]["description"].startswith("A CLIP model from the list")
    assert properties["image"]["type"] == "string"  # a file input: a URL or a base64 data URL
    assert "tiny_allowed" not in properties  # the gr.State is not part of the tool


def test_classify_tool_with_a_base64_image(mcp_url):
    arguments = {"image": CAT, "labels": "cat, dog, car", "template": "a photo of a {}.", "model": TINY,
                 "adapter": ""}

    async def call(session):
        return await session.call_tool("classify", arguments)

    result = run_session(mcp_url, call)
    assert not result.isError, result.content
    (text,) = [item.text for item in result.content if item.type == "text"]
    label, raw = ast.literal_eval(text)  # gradio sends the outputs as one Python-literal list
    assert label["label"] == raw["predictions"][0]["label"]
    assert {p["label"] for p in raw["predictions"]} == {"cat", "dog", "car"}
    assert sum(p["score"] for p in raw["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_tool_errors_are_bilingual(mcp_url):

    async def call(session):
        return await session.call_tool(
            "classify", {"image": CAT, "labels": " ", "template": "a photo of a {}.", "model": TINY, "adapter": ""}
        )

    result = run_session(mcp_url, call)
    message = " ".join(item.text for item in result.content if item.type == "text")
    assert result.isError and "labels 为空" in message and "labels is empty" in message
    assert "Traceback" not in message and "/tmp/" not in message
