"""Launch a Space with tiny weights on 127.0.0.1 and talk to it through the real gradio_client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


@pytest.fixture(scope="module")
def space_client(request) -> Iterator:
    """``@pytest.mark.parametrize('space_client', ['clip'], indirect=True)`` -> a Client of that Space."""
    from gradio_client import Client

    from lmt import ui
    from lmt.ui.spaces import load_space

    demo = load_space(request.param).build_demo(tiny=True)
    ui.configure_queue(demo)
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=None, show_error=False)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def app_error(call) -> str:
    """Run a client call that must fail with a gr.Error; returns the message shown to the user."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        call()
    message = str(info.value)
    assert "Traceback" not in message and "/tmp/" not in message and "gradio" not in message.lower()
    return message
