"""The BLIP-2 Space answers every api_name through gradio_client with tiny weights; the chat keeps bounded context."""

from __future__ import annotations

import pytest
from gradio_client import handle_file

from tests.spaces.conftest import EXAMPLES, app_error

pytestmark = pytest.mark.parametrize("space_client", ["blip2"], indirect=True)

TINY = "blip2-opt-2.7b (tiny)"
CAT = EXAMPLES / "cat.png"


def test_api_names(space_client):
    assert set(space_client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/caption", "/ask",
    }


def test_caption(space_client):
    text, raw = space_client.predict(
        handle_file(CAT), "a photo of", 4, 2, 1.0, 0.9, False, TINY, api_name="/caption"
    )
    assert isinstance(text, str) and raw == {"text": text, "prompt": "a photo of"}
    text, raw = space_client.predict(handle_file(CAT), "", 3, 1, 0.7, 0.8, True, TINY, api_name="/caption")
    assert raw["prompt"] is None


def test_ask_keeps_a_bounded_history(space_client):
    cat = handle_file(CAT)
    history, question, raw = space_client.predict(cat, "what animal?", [], 3, 1, TINY, api_name="/ask")
    assert question == "" and history[0] == {"role": "user", "content": "what animal?"}
    assert history[1] == {"role": "assistant", "content": raw["text"]}
    assert raw["prompt"] == "Question: what animal? Answer:"
    history, _, raw = space_client.predict(cat, "what colour?", history, 3, 1, TINY, api_name="/ask")
    assert len(history) == 4 and raw["prompt"].startswith("Question: what animal? Answer: ")
    assert raw["prompt"].endswith(". Question: what colour? Answer:")
    long_chat = []
    for turn in range(6):
        long_chat += [{"role": "user", "content": f"q{turn}"}, {"role": "assistant", "content": "cat"}]
    history, _, raw = space_client.predict(cat, "last?", long_chat, 1, 1, TINY, api_name="/ask")
    assert len(history) == 14 and history[:12] == long_chat
    assert raw["prompt"] == (
        "Question: q2 Answer: cat. Question: q3 Answer: cat. Question: q4 Answer: cat. Question: q5 Answer: cat. "
        "Question: last? Answer:"
    )


def test_earlier_turns_are_cut_short(space_client):
    from lmt.ui.spaces import load_space

    # The tiny OPT has only 128 positions, too few for long turns: check the prompt the Space builds instead.
    app = load_space("blip2")
    chat = [{"role": "user", "content": "q" * 500}, {"role": "assistant", "content": "a" * 500}]
    prompt = app.chat_prompt(app.chat_messages(chat), "?")
    assert prompt == f"Question: {'q' * app.TURN_CHARS} Answer: {'a' * app.TURN_CHARS}. Question: ? Answer:"


def test_errors_are_bilingual_and_clean(space_client):
    cat = handle_file(CAT)
    message = app_error(lambda: space_client.predict(None, "", 4, 1, 1.0, 0.9, False, TINY, api_name="/caption"))
    assert "请先上传" in message and "upload an image" in message
    message = app_error(
        lambda: space_client.predict(cat, "", "NaN", 1, 1.0, 0.9, False, TINY, api_name="/caption")
    )
    assert "max_new_tokens" in message and "之间" in message
    message = app_error(lambda: space_client.predict(cat, "", 4, 1, 1.0, 0.9, "yes", TINY, api_name="/caption"))
    assert "do_sample" in message and "true" in message
    message = app_error(
        lambda: space_client.predict(cat, "", 4, 1, 1.0, 0.9, False, "Salesforce/evil", api_name="/caption")
    )
    assert "不是本 Space" in message
    for malformed in ("hello", [{"role": "user"}], [{"role": "user", "content": 5}], [["q", "a"]]):
        message = app_error(lambda h=malformed: space_client.predict(cat, "why?", h, 3, 1, TINY, api_name="/ask"))
        assert "history" in message and "role" in message
    message = app_error(lambda: space_client.predict(cat, "", [], 3, 1, TINY, api_name="/ask"))
    assert "question" in message and "为空" in message
