"""VLM chat Space: talk about an image with Qwen2.5-VL or InternVL3, answers streamed token by token; find objects
with boxes drawn on the image.

Run locally: ``lmt space vlm-chat --tiny`` (offline tiny weights) or ``python app.py``.
The chat keeps the last few turns as context (the image goes with the first of them); longer chats are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

import lmt
from lmt import ui
from lmt.registry import list_models
from lmt.tasks.chat import MAX_MESSAGE_CHARS, prompt

TITLE = "VLM Chat"
TASK = "image-text-to-text"
EXAMPLES = Path(__file__).resolve().parent / "examples"
#: One list per family, so that each family offers its own tiny variant.
FAMILIES = (list_models("qwen2.5-vl*", task=TASK), list_models("internvl*", task=TASK))
PREVIOUS_TURNS = 6  # earlier question/answer pairs sent along as context
MAX_NEW_TOKENS = 512
MAX_BOXES = 50
EXAMPLE_PROMPTS = [
    ("cat.jpg", prompt("describe")),
    ("notice.png", prompt("ocr")),
    ("street.png", prompt("count", subject="汽车")),
    ("cat.jpg", prompt("locate", subject="猫")),
]


def model_choices(tiny: bool) -> list[str]:
    return [choice for names in FAMILIES for choice in ui.model_choices(TASK, tiny=tiny, names=names)]


def pick(choice, tiny_allowed):
    """(model name, weights) for a dropdown value; only this Space's models are accepted."""
    for names in FAMILIES:
        if isinstance(choice, str) and choice in ui.model_choices(TASK, tiny=tiny_allowed, names=names):
            return ui.pick_model(choice, TASK, tiny_allowed=tiny_allowed, names=names)
    return ui.pick_model(choice, TASK, tiny_allowed=tiny_allowed)  # refuses it, in both languages


def chat_messages(history):
    """The chat history from the UI or the API, checked (see :func:`lmt.ui.chat_messages`)."""
    return ui.chat_messages(history, max_chars=MAX_MESSAGE_CHARS)


def context(messages, image):
    """(SDK history, image for the new turn): the last PREVIOUS_TURNS question/answer pairs, the image going with
    the first of them, or with the new question when the chat is new."""
    turns = ui.answered_turns(messages, PREVIOUS_TURNS)
    history = []
    for index, (question, answer) in enumerate(turns):
        content = [{"type": "text", "text": question}]
        if index == 0 and image is not None:
            content.insert(0, {"type": "image", "image": image})
        history += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    return history, (image if not turns else None)


def drawn_boxes(chatter, answer, picture):
    """The answer's boxes drawn on the image (Qwen2.5-VL writes them as JSON), or None when it has none."""
    found = chatter.boxes(answer, picture)
    if not len(found):
        return None, found
    return ui.annotated_image(picture, boxes=[(d.box, d.label) for d in found.detections[:MAX_BOXES]]), found


@ui.gpu(duration=120)
@ui.guard
def chat(image, message, history, max_new_tokens, do_sample, temperature, top_p, repetition_penalty, model,
         tiny_allowed=False):
    """Chat about an image with a vision-language model (Qwen2.5-VL or InternVL3); the answer is streamed.

    Args:
        image: The image the chat is about (PNG, JPEG, WebP ...); optional, without one the model chats in text.
        message: The new question, in Chinese or English, e.g. "图里有什么？" or "Read the text in the image.".
        history: The chat so far, [{"role": "user" or "assistant", "content": text}, ...]; [] starts a new one.
        max_new_tokens: Longest answer, in tokens (1-512).
        do_sample: True samples varied answers; false gives the most likely one (greedy).
        temperature: Sampling temperature (0.1-2), used only when do_sample is true.
        top_p: Nucleus sampling probability mass (0.05-1), used only when do_sample is true.
        repetition_penalty: Above 1 discourages repeating words (1-2); 1 is off.
        model: A model from the list, e.g. "qwen2.5-vl-3b" or "internvl3-1b".

    Returns:
        The chat with the new question and the answer so far (updated while it is generated), an empty message
        box, the image with any boxes the answer gives, and the answer with its boxes as JSON.
    """
    path = ui.image_path(image, required=False)
    text = ui.short_text(message, "message")
    messages = chat_messages(history)
    options = {
        "max_new_tokens": ui.number(max_new_tokens, "max_new_tokens", 1, MAX_NEW_TOKENS, integer=True),
        "do_sample": ui.flag(do_sample, "do_sample"),
        "temperature": ui.number(temperature, "temperature", 0.1, 2.0),
        "top_p": ui.number(top_p, "top_p", 0.05, 1.0),
        "repetition_penalty": ui.number(repetition_penalty, "repetition_penalty", 1.0, 2.0),
    }
    name, weights = pick(model, tiny_allowed)
    chatter = lmt.pipeline(TASK, name, weights=weights)
    picture = lmt.load_image(path) if path is not None else None
    earlier, new_image = context(messages, picture)
    pieces = chatter.stream(new_image, text, history=earlier, **options)
    shown = [*messages, {"role": "user", "content": text}, {"role": "assistant", "content": ""}]
    answer = ""
    yield shown, "", None, None
    for piece in pieces:
        answer += piece
        shown[-1] = {"role": "assistant", "content": answer}
        yield shown, "", None, None
    answer = answer.strip()
    shown[-1] = {"role": "assistant", "content": answer}
    boxes, found = drawn_boxes(chatter, answer, picture) if picture is not None else (None, None)
    yield shown, "", boxes, {"text": answer, "prompt": text, "boxes": found.to_dict() if found else None}


@ui.gpu(duration=120)
@ui.guard
def ground(image, queries, model, tiny_allowed=False, progress=gr.Progress()):
    """Find objects named in words and draw their boxes, with a grounding model (Qwen2.5-VL or InternVL3).

    Args:
        image: The image to search (PNG, JPEG, WebP ...).
        queries: What to find, separated by commas or new lines, e.g. "cat" or "car, bus" (up to 20).
        model: A model from the list, e.g. "qwen2.5-vl-3b".

    Returns:
        The image with labelled boxes (at most 50), and the boxes as JSON in the image's pixels.
    """
    path = ui.image_path(image)
    text = ui.short_text(queries, "queries", max_chars=500)
    name, weights = pick(model, tiny_allowed)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    grounder = lmt.pipeline(TASK, name, weights=weights)
    picture = lmt.load_image(path)
    progress(0.4, desc=ui.text("定位中", "Locating"))
    found = grounder.ground(picture, text)
    boxes = [(d.box, d.label) for d in found.detections[:MAX_BOXES]]
    return ui.annotated_image(picture, boxes=boxes), found.to_dict()


def build_demo(tiny: bool = False) -> gr.Blocks:
    choices = model_choices(tiny)
    with gr.Blocks(title="VLM Chat · 多模态对话") as demo:
        gr.Markdown(
            "# 多模态对话 / Chat about images\n"
            "上传图片，用中文或英文提问：描述、读字、数数、找东西并画框。回答逐字流式显示。"
            " Upload an image and ask in Chinese or English: describe it, read its text, count, locate objects"
            " with boxes. Answers stream as they are written."
        )
        tiny_flag = gr.State(tiny)
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", label=ui.text("图片", "Image"), elem_id="vlm-image")
                model = gr.Dropdown(
                    choices=choices, value=choices[0], label=ui.text("模型", "Model"), allow_custom_value=False,
                    elem_id="vlm-model",
                )
                max_new_tokens = gr.Slider(
                    1, MAX_NEW_TOKENS, value=256, step=1, label=ui.text("最大长度", "Max new tokens")
                )
                with gr.Accordion(ui.text("采样", "Sampling"), open=False):
                    do_sample = gr.Checkbox(value=False, label=ui.text("随机采样", "Sample"))
                    temperature = gr.Slider(0.1, 2.0, value=0.7, step=0.05, label=ui.text("温度", "Temperature"))
                    top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top_p")
                    repetition_penalty = gr.Slider(
                        1.0, 2.0, value=1.05, step=0.05, label=ui.text("重复惩罚", "Repetition penalty")
                    )
                boxes = gr.AnnotatedImage(label=ui.text("框出的物体", "Boxes"), elem_id="vlm-boxes")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label=ui.text("对话", "Chat"), elem_id="vlm-chat", height=420)
                message = gr.Textbox(
                    label=ui.text("消息", "Message"), placeholder="图里有什么？ / What is in the picture?",
                    info=ui.text(f"会带上最近 {PREVIOUS_TURNS} 轮对话作为上下文",
                                 f"The last {PREVIOUS_TURNS} turns go along as context"),
                    elem_id="vlm-message",
                )
                with gr.Row():
                    new_chat = gr.Button(ui.text("新对话", "New chat"))
                    send = gr.Button(ui.text("发送", "Send"), variant="primary", elem_id="vlm-send")
                raw = gr.JSON(label="JSON")
                gr.Examples(
                    [[str(EXAMPLES / file), text] for file, text in EXAMPLE_PROMPTS], inputs=[image, message],
                    label=ui.text("示例（点选后按发送）", "Examples (pick one, then Send)"),
                )
        with gr.Accordion(ui.text("定位物体", "Locate objects"), open=False):
            with gr.Row():
                queries = gr.Textbox(
                    value="cat", label=ui.text("要找的物体", "Objects to find"),
                    info=ui.text("用逗号或换行分隔", "Comma- or newline-separated"),
                )
                locate = gr.Button(ui.text("定位", "Locate"), variant="secondary", elem_id="vlm-locate")
            ground_raw = gr.JSON(label="JSON")
        # The history is plain JSON that the handler checks itself; the Chatbot only shows it (a gr.Chatbot input
        # is validated by gradio first, which answers malformed input with an opaque, English-only error).
        history = gr.JSON([], visible=False)
        history.change(lambda messages: messages, history, chatbot, api_name=False, queue=False)
        chat_inputs = [image, message, history, max_new_tokens, do_sample, temperature, top_p, repetition_penalty,
                       model, tiny_flag]
        chat_outputs = [history, message, boxes, raw]
        send.click(chat, chat_inputs, chat_outputs, api_name="chat", preprocess=False,
                   concurrency_limit=ui.CONCURRENCY_LIMIT)
        message.submit(chat, chat_inputs, chat_outputs, api_name=False, preprocess=False,
                       concurrency_limit=ui.CONCURRENCY_LIMIT)
        gr.on([new_chat.click, image.upload], lambda: ([], None, None), outputs=[history, boxes, raw], api_name=False)
        locate.click(ground, [image, queries, model, tiny_flag], [boxes, ground_raw], api_name="ground",
                     preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT)
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="VLM chat Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variants")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
