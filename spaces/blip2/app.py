"""BLIP-2 Space: image captioning, and a multi-turn chat of questions about one image.

Run locally: ``lmt space blip2 --tiny`` (offline tiny weights) or ``python app.py``.
BLIP-2 answers one question at a time; the chat keeps context by writing the last few turns into the prompt
in BLIP-2's own format: "Question: q1 Answer: a1. Question: q2 Answer:".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

import lmt
from lmt import ui

TITLE = "BLIP-2"
CAPTION_TASK = "image-to-text"
VQA_TASK = "visual-question-answering"
EXAMPLES = Path(__file__).resolve().parent / "examples"
PREVIOUS_TURNS = 4  # earlier question/answer pairs written into the prompt
TURN_CHARS = 150  # each earlier question and answer is cut to this many characters


def chat_messages(history):
    """The chat history from the UI or the API, checked (see :func:`lmt.ui.chat_messages`)."""
    return ui.chat_messages(history)


def chat_prompt(messages, question):
    """BLIP-2's prompt for ``question`` after the chat so far, with at most PREVIOUS_TURNS earlier turns."""
    turns = ui.answered_turns(messages, PREVIOUS_TURNS)
    parts = [f"Question: {q[:TURN_CHARS].strip()} Answer: {a[:TURN_CHARS].strip().rstrip('.')}." for q, a in turns]
    return " ".join([*parts, f"Question: {question} Answer:"])


@ui.gpu(duration=60)
@ui.guard
def caption(image, prompt, max_new_tokens, num_beams, temperature, top_p, do_sample, model, tiny_allowed=False,
            progress=gr.Progress()):
    """Describe an image in one sentence with BLIP-2 (image captioning).

    Args:
        image: The image to describe (PNG, JPEG, WebP ...).
        prompt: Optional start of the caption to continue, e.g. "a photo of"; empty for a plain caption.
        max_new_tokens: Longest caption, in tokens (1-64).
        num_beams: Beam search width (1-5); 1 is greedy decoding.
        temperature: Sampling temperature (0.1-2), used only when do_sample is true.
        top_p: Nucleus sampling probability mass (0.05-1), used only when do_sample is true.
        do_sample: True samples varied captions; false gives the most likely one.
        model: A BLIP-2 model from the list, e.g. "blip2-opt-2.7b".

    Returns:
        The caption, and the same as JSON.
    """
    path = ui.image_path(image)
    options = {
        "prompt": ui.short_text(prompt, "prompt", allow_empty=True, max_chars=300) or None,
        "max_new_tokens": ui.number(max_new_tokens, "max_new_tokens", 1, 64, integer=True),
        "num_beams": ui.number(num_beams, "num_beams", 1, 5, integer=True),
        "temperature": ui.number(temperature, "temperature", 0.1, 2.0),
        "top_p": ui.number(top_p, "top_p", 0.05, 1.0),
        "do_sample": ui.flag(do_sample, "do_sample"),
    }
    name, weights = ui.pick_model(model, CAPTION_TASK, tiny_allowed=tiny_allowed)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    captioner = lmt.pipeline(CAPTION_TASK, name, weights=weights)
    progress(0.5, desc=ui.text("生成中", "Generating"))
    result = captioner(path, **options)
    return result.text, result.to_dict()


@ui.gpu(duration=60)
@ui.guard
def ask(image, question, history, max_new_tokens, num_beams, model, tiny_allowed=False, progress=gr.Progress()):
    """Ask BLIP-2 a question about an image; earlier turns of the chat are kept as context.

    Args:
        image: The image the questions are about (PNG, JPEG, WebP ...).
        question: The question, in English, e.g. "what is the cat lying on?".
        history: The chat so far, [{"role": "user" or "assistant", "content": text}, ...]; [] starts a new one.
        max_new_tokens: Longest answer, in tokens (1-64).
        num_beams: Beam search width (1-5); 1 is greedy decoding.
        model: A BLIP-2 model from the list, e.g. "blip2-opt-2.7b".

    Returns:
        The chat with the new question and answer, an empty question box, and the answer and prompt as JSON.
    """
    path = ui.image_path(image)
    question = ui.short_text(question, "question", max_chars=300)
    messages = chat_messages(history)
    tokens = ui.number(max_new_tokens, "max_new_tokens", 1, 64, integer=True)
    beams = ui.number(num_beams, "num_beams", 1, 5, integer=True)
    name, weights = ui.pick_model(model, VQA_TASK, tiny_allowed=tiny_allowed)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    answerer = lmt.pipeline(VQA_TASK, name, weights=weights)
    progress(0.5, desc=ui.text("回答中", "Answering"))
    # The prompt is already in BLIP-2's format, so the task's "Question: {} Answer:" template is not applied again.
    result = answerer(path, chat_prompt(messages, question), template="{}", max_new_tokens=tokens, num_beams=beams)
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": result.text}]
    return messages, "", result.to_dict()


def build_demo(tiny: bool = False) -> gr.Blocks:
    with gr.Blocks(title="BLIP-2 · 看图说话与视觉问答") as demo:
        gr.Markdown(
            "# BLIP-2 看图说话与视觉问答 / BLIP-2 captioning and visual question answering\n"
            "为图片生成描述，或围绕一张图连续提问（问题用英文效果最好）。"
            " Caption an image, or chat about it question by question (English works best)."
        )
        tiny_flag = gr.State(tiny)
        with gr.Tab(ui.text("看图说话", "Captioning")):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", label=ui.text("图片", "Image"), elem_id="blip2-image")
                    prompt = gr.Textbox(
                        label=ui.text("开头（可选）", "Prompt (optional)"), placeholder="a photo of",
                        info=ui.text("模型会接着写下去；留空则直接描述", "The model continues it; empty for a plain caption"),
                    )
                    max_new_tokens = gr.Slider(1, 64, value=30, step=1, label=ui.text("最大长度", "Max new tokens"))
                    num_beams = gr.Slider(1, 5, value=3, step=1, label=ui.text("束搜索宽度", "Beams"))
                    with gr.Accordion(ui.text("采样", "Sampling"), open=False):
                        do_sample = gr.Checkbox(value=False, label=ui.text("随机采样", "Sample"))
                        temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label=ui.text("温度", "Temperature"))
                        top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top_p")
                    model = ui.model_picker(CAPTION_TASK, tiny=tiny)
                    run = gr.Button(ui.text("生成描述", "Caption"), variant="primary", elem_id="blip2-run")
                with gr.Column():
                    text = gr.Textbox(label=ui.text("描述", "Caption"), interactive=False, elem_id="blip2-caption")
                    raw = gr.JSON(label="JSON")
            run.click(
                caption, [image, prompt, max_new_tokens, num_beams, temperature, top_p, do_sample, model, tiny_flag],
                [text, raw], api_name="caption", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )

            def run_example(image_file, example_prompt):
                return caption(image_file, example_prompt, 30, 3, 1.0, 0.9, False, model.value, tiny)

            gr.Examples(
                [[str(EXAMPLES / "cat.jpg"), ""], [str(EXAMPLES / "coffee.jpg"), "a photo of"],
                 [str(EXAMPLES / "astronaut.jpg"), ""]],
                inputs=[image, prompt], outputs=[text, raw], fn=run_example, run_on_click=True, cache_examples=False,
                api_name=False,
            )
        with gr.Tab(ui.text("视觉问答", "Visual question answering")):
            with gr.Row():
                with gr.Column():
                    chat_image = gr.Image(type="filepath", label=ui.text("图片", "Image"), elem_id="blip2-vqa-image")
                    chat_tokens = gr.Slider(1, 64, value=20, step=1, label=ui.text("最大长度", "Max new tokens"))
                    chat_beams = gr.Slider(1, 5, value=1, step=1, label=ui.text("束搜索宽度", "Beams"))
                    chat_model = ui.model_picker(VQA_TASK, tiny=tiny)
                with gr.Column():
                    chat = gr.Chatbot(label=ui.text("对话", "Chat"), elem_id="blip2-chat")
                    question = gr.Textbox(
                        label=ui.text("问题", "Question"), placeholder="what is in the picture?",
                        info=ui.text("会带上最近 4 轮对话作为上下文", "The last 4 turns go along as context"),
                    )
                    with gr.Row():
                        new_chat = gr.Button(ui.text("新对话", "New chat"))
                        send = gr.Button(ui.text("提问", "Ask"), variant="primary", elem_id="blip2-ask")
                    chat_raw = gr.JSON(label="JSON")
            # The history is plain JSON ({"role", "content": text} messages) that the handler checks itself; the
            # Chatbot only shows it. (A gr.Chatbot input is validated by gradio first, which refuses plain-text
            # content and answers malformed input with an opaque, English-only error.)
            history = gr.JSON([], visible=False)
            history.change(lambda messages: messages, history, chat, api_name=False)
            ask_inputs = [chat_image, question, history, chat_tokens, chat_beams, chat_model, tiny_flag]
            send.click(
                ask, ask_inputs, [history, question, chat_raw],
                api_name="ask", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
            question.submit(
                ask, ask_inputs, [history, question, chat_raw],
                api_name=False, preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
            )
            gr.on([new_chat.click, chat_image.upload], lambda: ([], None), outputs=[history, chat_raw], api_name=False)

            def run_chat_example(image_file, example_question):
                return ask(image_file, example_question, [], 20, 1, chat_model.value, tiny)

            gr.Examples(
                [[str(EXAMPLES / "cat.jpg"), "what animal is this?"],
                 [str(EXAMPLES / "coffee.jpg"), "what is in the cup?"]],
                inputs=[chat_image, question], outputs=[history, question, chat_raw], fn=run_chat_example,
                run_on_click=True, cache_examples=False, api_name=False,
            )
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="BLIP-2 Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variant")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
