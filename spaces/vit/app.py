"""ViT Space: ImageNet image classification with Google's Vision Transformer, optionally with a LoRA adapter.

Run locally: ``lmt space vit --tiny`` (offline tiny weights) or ``python app.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

import lmt
from lmt import ui
from lmt.advanced import explain_image

TITLE = "ViT"
TASK = "image-classification"
MODELS = lmt.list_models("vit*", task=TASK)
EXAMPLES = Path(__file__).resolve().parent / "examples"


@ui.gpu(duration=60)
@ui.guard
def classify(image, top_k, model, adapter, tiny_allowed=False, progress=gr.Progress()):
    """Classify an image into the ImageNet-1k classes with a Vision Transformer (ViT).

    Args:
        image: The image to classify (PNG, JPEG, WebP ...).
        top_k: How many of the most likely classes to return (1-10).
        model: A ViT model from the list, e.g. "vit-b16".
        adapter: Optional LoRA adapter fine-tuned from that model: a Hub id, pinned with @revision if wanted
            (user/name@v1); empty for the base model.

    Returns:
        The top classes with their probabilities, and the same as JSON.
    """
    path = ui.image_path(image)
    k = ui.number(top_k, "top_k", 1, 10, integer=True)
    name, weights = ui.pick_model(model, TASK, tiny_allowed=tiny_allowed, names=MODELS)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    adapter_id, adapter_revision = ui.adapter_spec(adapter)
    classifier = ui.pipeline(TASK, name, weights=weights, adapter=adapter_id, adapter_revision=adapter_revision)
    progress(0.5, desc=ui.text("推理中", "Running"))
    result = classifier(path, top_k=k)
    return result.as_label_dict(), result.to_dict()


@ui.gpu(duration=60)
@ui.guard
def explain(image, method, model, tiny_allowed=False, progress=gr.Progress()):
    """Show where the Vision Transformer looks: a heat map for its top class, overlaid on the image.

    Args:
        image: The image to explain (PNG, JPEG, WebP ...).
        method: "gradcam" (gradient-weighted class activation map) or "rollout" (attention rollout, class-agnostic).
        model: A Vision Transformer model from the list.

    Returns:
        The image with the heat map overlaid (red = most relevant), and the explanation as JSON.
    """
    path = ui.image_path(image)
    name, weights = ui.pick_model(model, TASK, tiny_allowed=tiny_allowed, names=MODELS)
    progress(0.1, desc=ui.text("加载模型", "Loading the model"))
    # gradients and attention weights exist only in PyTorch, so explanations use it whatever ui.backend() says
    classifier = lmt.pipeline(TASK, name, weights=weights, backend="torch")
    progress(0.5, desc=ui.text("计算热力图", "Computing the heat map"))
    result = explain_image(classifier, path, method=method)
    return result.overlay, result.to_dict() | {"backend": "torch", "classify_backend": ui.backend()}


def build_demo(tiny: bool = False) -> gr.Blocks:
    with gr.Blocks(title="ViT · 图像分类") as demo:
        gr.Markdown(
            "# ViT 图像分类 / ViT image classification\n"
            "上传一张图片，Vision Transformer 给出最可能的 ImageNet 类别；可加载你用 LoRA 微调的适配器。"
            " Upload an image and a Vision Transformer names its most likely ImageNet classes;"
            " load your own LoRA adapter to use a fine-tuned head."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label=ui.text("图片", "Image"), elem_id="vit-image")
                top_k = gr.Slider(1, 10, value=5, step=1, label=ui.text("返回类别数", "Top k"))
                model = ui.model_picker(TASK, tiny=tiny, names=MODELS)
                adapter = ui.adapter_box()
                run = gr.Button(ui.text("分类", "Classify"), variant="primary", elem_id="vit-run")
            with gr.Column():
                label = gr.Label(num_top_classes=10, label=ui.text("结果", "Result"), elem_id="vit-label")
                raw = gr.JSON(label="JSON")
                with gr.Accordion(ui.text("解释：模型看了哪里", "Explain: where the model looks"), open=False):
                    gr.Markdown(
                        "热力图需要梯度，始终用 PyTorch 后端计算（ONNX 后端不提供梯度）。"
                        " Heat maps need gradients, so they always run on the PyTorch back-end, even when the"
                        " Space classifies with ONNX."
                    )
                    method = gr.Radio(["gradcam", "rollout"], value="gradcam", label=ui.text("方法", "Method"))
                    explain_run = gr.Button(ui.text("生成热力图", "Explain"), elem_id="vit-explain")
                    heatmap = gr.Image(type="pil", label=ui.text("热力图", "Heat map"), elem_id="vit-heatmap")
                    explanation = gr.JSON(label=ui.text("解释 JSON", "Explanation JSON"))
        tiny_flag = gr.State(tiny)
        run.click(
            classify, [image, top_k, model, adapter, tiny_flag], [label, raw],
            api_name="classify", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
        )
        explain_run.click(
            explain, [image, method, model, tiny_flag], [heatmap, explanation],
            api_name="explain", preprocess=False, concurrency_limit=ui.CONCURRENCY_LIMIT,
        )

        def run_example(image_file):
            return classify(image_file, 5, model.value, "", tiny)

        gr.Examples(
            [[str(EXAMPLES / "cat.jpg")], [str(EXAMPLES / "coffee.jpg")], [str(EXAMPLES / "rocket.jpg")]],
            inputs=[image], outputs=[label, raw], fn=run_example, run_on_click=True, cache_examples=False,
            api_name=False,
        )
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="ViT Space")
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variant")
    args = parser.parse_args()
    ui.launch(build_demo(tiny=args.tiny), host="0.0.0.0", port=7860)
