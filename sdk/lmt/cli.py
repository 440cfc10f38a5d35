"""The ``lmt`` command. ``lmt --help`` and ``lmt models`` import no torch, transformers or gradio.

Each sub-command is one ``add_<name>_parser`` function plus a ``run_<name>`` function; later features add theirs
to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmt.errors import InvalidInputError, LmtError
from lmt.registry import TASKS

EXIT_USER_ERROR = 2

EPILOG = """examples:
  lmt models "sam*"
  lmt predict zero-shot-image-classification --model clip-vit-b32 --tiny --image cat.png --labels "cat,dog"
  lmt predict mask-generation --model sam-vit-base --tiny --image cat.png --points 20,20,1 --json
  lmt env
"""


# ---- lmt models ----------------------------------------------------------------------------------------------------
def add_models_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models", help="list registered models", description="List registered models (shell-style pattern)."
    )
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'clip*' (default: all)")
    parser.add_argument("--task", choices=TASKS, help="only models that run this task")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    from lmt.registry import list_models, lookup_checkpoint

    rows = []
    for name in list_models(args.pattern, task=args.task):
        family, checkpoint = lookup_checkpoint(name)
        tasks = checkpoint.tasks if checkpoint.tasks is not None else family.tasks
        rows.append(
            {"name": name, "family": family.name, "hub_id": checkpoint.hub_id, "tasks": list(tasks),
             "description": checkpoint.description}
        )
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print(f"No model matches '{args.pattern}'" + (f" for task {args.task}" if args.task else "") + ".")
        return 0
    name_width = max(len(r["name"]) for r in rows)
    hub_width = max(len(r["hub_id"]) for r in rows)
    for row in rows:
        print(f"{row['name']:<{name_width}}  {row['hub_id']:<{hub_width}}  {', '.join(row['tasks'])}")
    print(f"\n{len(rows)} models. Add --tiny to any command to use a family's offline tiny variant.")
    return 0


# ---- lmt env -------------------------------------------------------------------------------------------------------
def add_env_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "env", help="show devices, versions and CPU features", description="Show devices, versions, CPU features."
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(run=run_env)


def run_env(args: argparse.Namespace) -> int:
    from lmt.env import environment_report, format_report

    report = environment_report()
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else format_report(report))
    return 0


# ---- lmt predict ---------------------------------------------------------------------------------------------------
def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        raise InvalidInputError(
            f"Could not read {what} '{text}': write {' or '.join(str(c) for c in count)} comma-separated numbers.",
            f"无法解析 {what} '{text}'：请写 {' 或 '.join(str(c) for c in count)} 个以逗号分隔的数字。",
        )
    return values


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model/--tiny/--revision/--device/--dtype/--adapter, shared by every command that loads a model."""
    parser.add_argument("--model", "-m", help="registry name, Hub id or local folder (default: the task's default)")
    parser.add_argument("--tiny", action="store_true", help="use the family's offline tiny random-weight variant")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of the model")
    parser.add_argument("--device", help="cuda, npu, mps or cpu (default: best available)")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16 (default: per device)")
    parser.add_argument("--adapter", help="peft adapter: Hub id or folder")
    parser.add_argument("--adapter-revision", help="Hub revision of the adapter")


def add_predict_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="run one task on images",
        description="Run one task on one or more images and print the result.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("task", choices=TASKS, help="transformers task name")
    add_model_arguments(parser)
    parser.add_argument("--image", "-i", action="append", required=True, help="image path or URL (repeatable)")
    parser.add_argument("--labels", help="zero-shot labels, comma-separated")
    parser.add_argument("--template", help="zero-shot prompt template containing {}")
    parser.add_argument("--queries", help="detection queries, comma-separated")
    parser.add_argument("--question", help="question for visual-question-answering")
    parser.add_argument("--prompt", help="caption prompt to continue")
    parser.add_argument("--points", nargs="+", metavar="X,Y[,LABEL]", help="SAM points; LABEL 1 include, 0 exclude")
    parser.add_argument("--boxes", nargs="+", metavar="X0,Y0,X1,Y1", help="SAM box prompts")
    parser.add_argument("--threshold", type=float, help="score threshold (detection) or mask threshold (SAM)")
    parser.add_argument("--top-k", type=int, help="keep the best K results")
    parser.add_argument("--max-new-tokens", type=int, help="generation length for captions and answers")
    parser.add_argument("--num-beams", type=int, help="beam search width for captions and answers")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    parser.add_argument(
        "--backend", default="torch",
        help="torch (default), onnx or onnx-int8: onnxruntime on graphs exported once into $LMT_HOME/onnx; "
        "--device then picks the provider (cuda, openvino, cpu)",
    )
    parser.set_defaults(run=run_predict)


def _task_arguments(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    task = args.task
    if task == "zero-shot-image-classification":
        options["labels"] = args.labels if args.labels is not None else ""
        if args.template:
            options["template"] = args.template
    elif task == "zero-shot-object-detection":
        options["queries"] = args.queries if args.queries is not None else ""
    elif task == "visual-question-answering":
        options["question"] = args.question if args.question is not None else ""
    elif task == "image-to-text" and args.prompt:
        options["prompt"] = args.prompt
    elif task == "image-text-to-text":
        if len(args.image) > 1:  # the chat call reads a list of images as one turn, not as a batch
            raise InvalidInputError(
                "`lmt predict image-text-to-text` takes one --image; `lmt chat` shows several images in one turn.",
                "`lmt predict image-text-to-text` 只接受一个 --image；一轮对话里放多张图片请用 `lmt chat`。",
            )
        options["prompt"] = args.prompt if args.prompt is not None else args.question or ""
    elif task == "mask-generation":
        if args.points:
            options["points"] = [_numbers(p, (2, 3), "point") for p in args.points]
        if args.boxes:
            options["boxes"] = [_numbers(b, (4,), "box") for b in args.boxes]
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.top_k is not None:
        options["top_k"] = args.top_k
    if task in ("image-to-text", "visual-question-answering", "image-text-to-text"):
        if args.max_new_tokens is not None:
            options["max_new_tokens"] = args.max_new_tokens
        if args.num_beams is not None:
            options["num_beams"] = args.num_beams
    return options


def _describe(result: Any) -> str:
    from lmt.results import Classification, Detections, Embedding, GeneratedText, Segmentation

    if isinstance(result, Classification):
        return "\n".join(f"{p.score:8.4f}  {p.label}" for p in result.predictions)
    if isinstance(result, Detections):
        lines = [f"{len(result)} detections"]
        lines += [f"{d.score:8.4f}  {d.label:<20} box={tuple(round(v, 1) for v in d.box)}" for d in result]
        return "\n".join(lines)
    if isinstance(result, Segmentation):
        lines = [f"{len(result)} masks"]
        lines += [f"{m.score:8.4f}  area={m.area} px  box={tuple(round(v) for v in m.box)}" for m in result]
        return "\n".join(lines)
    if isinstance(result, GeneratedText):
        return result.text if result.prompt is None else f"Q: {result.prompt}\nA: {result.text}"
    if isinstance(result, Embedding):
        return f"embedding dim={result.dim}: [{', '.join(f'{v:.4f}' for v in result.vector[:8])}, ...]"
    return repr(result)


def run_predict(args: argparse.Namespace) -> int:
    from lmt.tasks import pipeline

    options = _task_arguments(args)
    task = pipeline(
        args.task,
        args.model,
        weights="tiny" if args.tiny else "real",
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        adapter=args.adapter,
        adapter_revision=args.adapter_revision,
        backend=args.backend,
    )
    images = args.image
    results = task(images if len(images) > 1 else images[0], **options)
    results = results if isinstance(results, list) else [results]
    if args.json:
        document = {
            "task": args.task,
            "model": task.loaded.name,
            "weights": task.loaded.weights,
            "backend": task.backend,
            "results": [{"image": image, **result.to_dict()} for image, result in zip(images, results, strict=True)],
        }
        print(json.dumps(document, ensure_ascii=False))
    else:
        for image, result in zip(images, results, strict=True):
            print(f"== {image} ({task.loaded.name}, {task.loaded.weights} weights)")
            print(_describe(result))
    return 0


# ---- lmt chat ------------------------------------------------------------------------------------------------------
CHAT_EPILOG = """examples:
  lmt chat --model qwen2.5-vl-3b --tiny --image cat.png --prompt "图里有什么？"
  lmt chat --model internvl3-1b --tiny --image a.png --image b.png --prompt "这两张图有什么不同？" --stream
  lmt chat --model qwen2.5-vl-3b --tiny --image street.png --ground "car, bus" --json
"""


def add_chat_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chat", help="ask a vision-language model about images (Qwen2.5-VL, InternVL)",
        description="One chat turn about one or more images (image-text-to-text), printed whole or streamed; "
        "or --ground: boxes for the objects named.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CHAT_EPILOG,
    )
    add_model_arguments(parser)
    parser.add_argument("--image", "-i", action="append", default=[], help="image path (repeatable: one turn)")
    parser.add_argument("--prompt", "-p", help="the question or instruction, Chinese or English")
    parser.add_argument("--system", help="system prompt (default: the model's own)")
    parser.add_argument("--ground", metavar="QUERIES", help="locate these objects (comma-separated) instead")
    parser.add_argument("--stream", action="store_true", help="print the answer while it is generated")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer in tokens (default 256)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="1.0 is off (default)")
    parser.add_argument("--seed", type=int, help="random seed for sampling")
    parser.add_argument("--quantization", choices=("4bit", "8bit"), help="bitsandbytes weights (CUDA only)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    parser.set_defaults(run=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from lmt.tasks.chat import ImageTextToText

    chat = ImageTextToText(
        args.model, weights="tiny" if args.tiny else "real", revision=args.revision, device=args.device,
        dtype=args.dtype, adapter=args.adapter, adapter_revision=args.adapter_revision, quantization=args.quantization,
    )
    if args.ground is not None:
        if len(args.image) != 1:
            raise InvalidInputError("--ground needs exactly one --image.", "--ground 需要且只需要一个 --image。")
        found = chat.ground(args.image[0], args.ground, max_new_tokens=args.max_new_tokens)
        print(json.dumps(found.to_dict(), ensure_ascii=False) if args.json else _describe(found))
        return 0
    options = {
        "system": args.system, "max_new_tokens": args.max_new_tokens, "do_sample": args.sample,
        "temperature": args.temperature, "top_p": args.top_p, "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
    }
    images = args.image or None
    if args.stream and not args.json:
        for piece in chat.stream(images, args.prompt, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
        return 0
    reply = chat(images, args.prompt, **options)
    document = {"model": chat.loaded.name, "weights": chat.loaded.weights, "images": args.image, **reply.to_dict()}
    print(json.dumps(document, ensure_ascii=False) if args.json else reply.text)
    return 0


# ---- lmt space / lmt gallery --------------------------------------------------------------------------------------
def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tiny", action="store_true", help="offer the offline tiny variants in the model pickers")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")


def add_space_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "space", help="run one Gradio Space", description="Run one Space from spaces/<name>/app.py."
    )
    parser.add_argument("name", help="the Space, e.g. clip, sam, owlv2 (see spaces/)")
    _add_server_arguments(parser)
    parser.set_defaults(run=run_space)


def run_space(args: argparse.Namespace) -> int:
    from lmt import ui
    from lmt.ui.spaces import load_space

    demo = load_space(args.name).build_demo(tiny=args.tiny)
    ui.launch(demo, host=args.host, port=args.port, share=args.share)
    return 0


def add_gallery_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gallery", help="run every Space as tabs of one app", description="Run every Space as tabs of one app."
    )
    _add_server_arguments(parser)
    parser.set_defaults(run=run_gallery)


def run_gallery(args: argparse.Namespace) -> int:
    from lmt import ui
    from lmt.ui.spaces import build_gallery

    ui.launch(build_gallery(tiny=args.tiny), host=args.host, port=args.port, share=args.share)
    return 0


# ---- lmt spaces list / bundle / deploy -----------------------------------------------------------------------------
SPACES_EPILOG = """examples:
  lmt spaces list
  lmt spaces bundle clip build/clip-space
  lmt spaces deploy clip --repo alice/lmt-clip --dry-run
  HF_TOKEN=hf_... lmt spaces deploy clip --repo alice/lmt-clip --private
"""


def add_spaces_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "spaces", help="list, bundle and deploy the Gradio Spaces",
        description="List the Spaces, bundle one into a self-contained folder, or deploy it to Hugging Face.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SPACES_EPILOG,
    )
    commands = parser.add_subparsers(dest="spaces_command", metavar="SUBCOMMAND", required=True)
    listing = commands.add_parser("list", help="list the Spaces", description="List the Spaces under spaces/.")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    listing.set_defaults(run=run_spaces_list)
    bundle = commands.add_parser(
        "bundle", help="write a self-contained Space folder",
        description="Write app.py, README.md, examples/, the SDK as lmt/ and a pinned requirements.txt into DIR.",
    )
    bundle.add_argument("name", help="the Space, e.g. clip (see lmt spaces list)")
    bundle.add_argument("dir", help="the folder to write; must be empty unless --force")
    bundle.add_argument("--force", action="store_true", help="replace the contents of a non-empty DIR")
    bundle.set_defaults(run=run_spaces_bundle)
    deploy = commands.add_parser(
        "deploy", help="bundle a Space and upload it to Hugging Face",
        description="Bundle a Space and upload it to a Hugging Face Space repository (created if missing). "
        "The token comes from HF_TOKEN or `hf auth login` and is never printed.",
    )
    deploy.add_argument("name", help="the Space, e.g. clip")
    deploy.add_argument("--repo", required=True, metavar="USER/SPACE", help="the Space repository, e.g. alice/lmt-clip")
    deploy.add_argument("--private", action="store_true", help="create the Space repository as private")
    deploy.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    deploy.set_defaults(run=run_spaces_deploy)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def run_spaces_list(args: argparse.Namespace) -> int:
    from lmt.spaces_paths import list_spaces, spaces_root

    names = list_spaces()
    if args.json:
        print(json.dumps({"root": str(spaces_root()), "spaces": names}, ensure_ascii=False, indent=2))
        return 0
    for name in names:
        print(name)
    print(f"\n{len(names)} Spaces under {spaces_root()}. Run one with: lmt space <name> --tiny")
    return 0


def run_spaces_bundle(args: argparse.Namespace) -> int:
    from lmt.bundle import bundle_files, bundle_space

    folder = bundle_space(args.name, args.dir, force=args.force)
    files = bundle_files(folder)
    print(f"Bundled the '{args.name}' Space into {folder}: {len(files)} files, {_size(sum(s for _, s in files))}.")
    print(f"Try it: cd {folder}, pip install -r requirements.txt and gradio at README.md's sdk_version, "
          "then python app.py --tiny")
    return 0


def run_spaces_deploy(args: argparse.Namespace) -> int:
    from lmt.bundle import deploy_space

    deployment = deploy_space(args.name, args.repo, private=args.private, dry_run=args.dry_run)
    if args.dry_run:
        for path, size in deployment.files:
            print(f"{_size(size):>10}  {path}")
        print(
            f"\nDry run: would upload {len(deployment.files)} files ({_size(deployment.total_bytes)}) to the Space "
            f"'{deployment.repo_id}'. Nothing was sent."
        )
        return 0
    print(f"Deployed the '{args.name}' Space: {deployment.url}")
    return 0


# ---- lmt hub push / pull ------------------------------------------------------------------------------------------
HUB_EPILOG = """examples:
  lmt hub push runs/vit-b16_lora-r16_bs32_3ep_digits --repo alice/vit-b16.digits-lora --dry-run
  HF_TOKEN=hf_... lmt hub push runs/vit-b16_lora-r16_bs32_3ep_digits --repo alice/vit-b16.digits-lora --revision v1
  lmt hub pull alice/vit-b16.digits-lora --revision v1 --local-dir adapters/digits
"""


def add_hub_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hub", help="push a training run to the Hugging Face Hub, pull a repository",
        description="Publish a finished training run folder as a Hub model repository, or download one.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=HUB_EPILOG,
    )
    commands = parser.add_subparsers(dest="hub_command", metavar="SUBCOMMAND", required=True)
    push = commands.add_parser(
        "push", help="upload a run folder to a model repository",
        description="Upload a run folder (model card, weights, lmt_run.json, plots; never checkpoints/) to a Hub "
        "model repository, created if missing. The token comes from HF_TOKEN or `hf auth login` and is never printed.",
    )
    push.add_argument("run_dir", metavar="RUN", help="the run folder that `lmt train` wrote")
    push.add_argument("--repo", required=True, metavar="USER/NAME", help="the model repository, e.g. alice/vit-lora")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", metavar="BRANCH", help="upload to this branch (created if missing)")
    push.add_argument("--base-model", metavar="ORG/NAME", help="Hub id of the base model, when lmt_run.json has none")
    push.add_argument("--dry-run", action="store_true", help="print the upload plan; send nothing")
    push.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    push.set_defaults(run=run_hub_push)
    pull = commands.add_parser(
        "pull", help="download a model or adapter repository",
        description="Download a Hub repository (optionally pinned to a revision) and print its folder.",
    )
    pull.add_argument("repo", metavar="USER/NAME", help="the repository, e.g. alice/vit-lora")
    pull.add_argument("--revision", help="branch, tag or 40-character commit (default: main)")
    pull.add_argument("--local-dir", metavar="DIR", help="also copy the files into DIR")
    pull.set_defaults(run=run_hub_pull)


def run_hub_push(args: argparse.Namespace) -> int:
    from lmt.hub.publish import push_run

    plan = push_run(
        args.run_dir, args.repo, private=args.private, revision=args.revision, base_model=args.base_model,
        dry_run=args.dry_run,
    )
    if args.json:
        print(json.dumps(plan.to_dict(), ensure_ascii=False, indent=2))
        return 0
    for path, size in plan.files:
        print(f"{_size(size):>10}  {path}")
    if plan.excluded:
        print(f"\nNot uploaded: {', '.join(plan.excluded)}")
    where = f"'{plan.repo_id}'" + (f" (branch {plan.revision})" if plan.revision else "")
    visibility = "private" if plan.private else "public"
    if plan.dry_run:
        print(
            f"\nDry run: would upload {len(plan.files)} files ({_size(plan.total_bytes)}) to the {visibility} model "
            f"repository {where}, base model {plan.base_model}. Nothing was sent."
        )
        return 0
    print(f"\nUploaded {len(plan.files)} files ({_size(plan.total_bytes)}) to {where}: {plan.url}")
    return 0


def run_hub_pull(args: argparse.Namespace) -> int:
    from lmt.hub.publish import pull

    print(pull(args.repo, revision=args.revision, local_dir=args.local_dir))
    return 0


# ---- lmt train ----------------------------------------------------------------------------------------------------
TRAIN_EPILOG = """examples:
  lmt data sample digits data/digits
  lmt train configs/train/vit-digits-full.yaml weights=tiny optim.epochs=1
  lmt train configs/train/vit-digits-lora.yaml --resume
  accelerate launch --cpu --num_processes 2 -m lmt.cli train configs/train/vit-digits-full.yaml
"""


def add_train_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="fine-tune a model (full, LoRA/DoRA, QLoRA, IA3, LoHa, LoKr) from a YAML config",
        description="Fine-tune a model as a YAML config says; key=value arguments override its keys. Every key is "
        "checked before work starts. Runs on CPU, GPU, NPU, or several processes with `accelerate launch`.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TRAIN_EPILOG,
    )
    parser.add_argument("config", help="the YAML config (see configs/train/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys, e.g. optim.lr=1e-4")
    parser.add_argument("--resume", action="store_true", help="continue from the run's newest complete checkpoint")
    parser.add_argument("--check", action="store_true", help="validate the config and print it; train nothing")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from lmt.train.config import config_to_yaml, load_config

    overrides = list(args.overrides) + (["run.resume=true"] if args.resume else [])
    config = load_config(args.config, overrides)
    if args.check:
        print(config_to_yaml(config), end="")
        return 0
    from lmt.train import train

    result = train(config)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in result.metrics.items())
    print(f"Run folder: {result.run_dir}")
    print(f"Best validation (epoch {(result.best_epoch or 0) + 1}): {metrics}")
    print(f"Trained {result.trainable_parameters:,} of {result.total_parameters:,} parameters "
          f"in {result.global_step} steps, {result.seconds:.0f} s.")
    return 0


# ---- lmt data -----------------------------------------------------------------------------------------------------
def add_data_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "data", help="dataset tools",
        description="Dataset tools: import, validate, split, augment, export and publish datasets; auto-annotate, "
        "embed and synthesise images.",
    )
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    sample = commands.add_parser(
        "sample", help="write a sample dataset (no download)",
        description="Write a sample dataset: 'digits' (scikit-learn's 1797 handwritten digits as an ImageFolder tree), "
        "'shapes' (synthetic shapes with exact masks, captions and questions).",
    )
    sample.add_argument("name", choices=("digits", "shapes", "shape-chat"), help="which sample dataset")
    sample.add_argument("folder", help="a new or empty folder to write to")
    sample.add_argument("--size", type=int, default=None, help="image side in pixels (digits 32, shapes 64)")
    sample.add_argument("--labelling", choices=("digit", "parity", "rotated"), default="digit",
                        help="digits: label by digit, by parity (even/odd), or digits rotated by 90 degrees")
    sample.add_argument("--count", type=int, default=64, help="shapes: how many scenes")
    sample.set_defaults(run=run_data_sample)
    validate = commands.add_parser(
        "validate", help="find corrupt, duplicate, leaked, tiny and odd images, class typos and imbalance",
        description="Validate a dataset (an ImageFolder tree or a .csv/.jsonl with image and label columns): "
        "corrupt or truncated images, exact and near duplicates, train/val leakage, tiny images, odd pixel modes, "
        "near-identical class names, class imbalance. Exits 0 when clean, 1 when anything is found. Never "
        "changes source files: --fix writes cleaned CSV manifests instead.",
    )
    validate.add_argument("source", help="the training set: a folder of <class>/<image> or a .csv/.jsonl file")
    validate.add_argument("--val", default=None, help="a validation set to check for leakage against the source")
    validate.add_argument("--out", default=None, help="write report.md, report.json and PNG histograms here")
    validate.add_argument("--fix", action="store_true",
                          help="with --out: write clean/train.csv (and clean/val.csv) without corrupt, tiny, "
                          "duplicate and leaked images")
    validate.add_argument("--json", action="store_true", help="print the report as one JSON document")
    validate.set_defaults(run=run_data_validate)
    split = commands.add_parser(
        "split", help="split a dataset into train/val/test CSV manifests (stratified, seeded, group-aware)",
        description="Split a dataset into train.csv, val.csv and test.csv that `lmt train` reads as data.train and "
        "data.val. Stratified by label; with --group-column (a .csv/.jsonl column such as patient or video) a "
        "group never straddles splits.",
    )
    split.add_argument("source", help="a folder of <class>/<image> or a .csv/.jsonl file")
    split.add_argument("--out", required=True, help="folder for train.csv, val.csv, test.csv")
    split.add_argument("--val", type=float, default=0.1, help="fraction for validation (default 0.1)")
    split.add_argument("--test", type=float, default=0.1, help="fraction for test (default 0.1)")
    split.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    split.add_argument("--group-column", default=None, help="keep records sharing this column's value together")
    split.set_defaults(run=run_data_split)
    add_data_annotate_parsers(commands)
    add_data_format_parsers(commands)
    add_data_augment_parsers(commands)


def run_data_sample(args: argparse.Namespace) -> int:
    from lmt.data.samples import write_digits, write_shape_chat, write_shapes

    if args.size is not None and not 8 <= args.size <= 1024:
        raise InvalidInputError("--size must lie in [8, 1024].", "--size 应在 [8, 1024] 之内。")
    if args.name == "digits":
        folder = write_digits(args.folder, size=args.size or 32, labelling=args.labelling)
    else:
        if not 1 <= args.count <= 100_000:
            raise InvalidInputError("--count must lie in [1, 100000].", "--count 应在 [1, 100000] 之内。")
        write = write_shape_chat if args.name == "shape-chat" else write_shapes
        folder = write(args.folder, count=args.count, size=args.size or 64)
    print(f"Wrote the '{args.name}' sample dataset to {folder}")
    return 0


def run_data_validate(args: argparse.Namespace) -> int:
    from lmt.data.validate import report_markdown, validate_dataset, write_clean_manifest, write_report

    if args.fix and not args.out:
        raise InvalidInputError("--fix needs --out DIR to write the cleaned manifests to.",
                                "--fix 需要 --out 目录来写入清洗后的清单。")
    report = validate_dataset(args.source, splits={"val": args.val} if args.val else None)
    if args.out:
        path = write_report(report, args.out)
        if args.fix:
            for split in ("train", "val") if args.val else ("train",):
                write_clean_manifest(report, Path(args.out) / "clean" / f"{split}.csv", split=split)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(report_markdown(report), end="")
        if args.out:
            print(f"Report: {path}")
    return 0 if report.ok else 1


def run_data_split(args: argparse.Namespace) -> int:
    from lmt.data.split import split_records, write_split_manifests
    from lmt.train.data import read_records

    columns = {"image": "image", "label": "label"}
    if args.group_column:
        if Path(args.source).is_dir():
            raise InvalidInputError("--group-column needs a .csv/.jsonl source; a folder has no columns.",
                                    "--group-column 需要 .csv/.jsonl 数据源；目录没有列。")
        columns[args.group_column] = args.group_column
    result = split_records(read_records(args.source, columns), val=args.val, test=args.test, seed=args.seed,
                           group_key=args.group_column)
    for name, path in write_split_manifests(result, args.out).items():
        print(f"{name}: {len(result.split(name))} images -> {path}")
    return 0


# ---- lmt data annotate / lmt data embed ---------------------------------------------------------------------------
ANNOTATE_EPILOG = """examples:
  lmt data annotate photos/ --out labels/ --classes "car:a photo of a car,person" --tiny
  lmt data annotate photos/ --out labels/ --ontology ontology.yaml --detector owlvit-b32 --no-masks
  lmt data annotate photos/ --out labels/ --classes car,person --resume
  accelerate launch --multi_gpu --num_processes 2 -m lmt.cli data annotate photos/ --out labels/ --classes car
  lmt data embed photos/ --out vectors/ --model dinov2-small --format safetensors
"""


def _add_shard_arguments(parser: argparse.ArgumentParser, chunk_size: int) -> None:
    parser.add_argument("--chunk-size", type=int, default=chunk_size,
                        help=f"images per shard file (default {chunk_size}); keep it when resuming")
    parser.add_argument("--resume", action="store_true", help="reuse finished shards whose manifest matches")
    parser.add_argument("--process-index", type=int, help="this process's index, without accelerate (e.g. SLURM)")
    parser.add_argument("--num-processes", type=int, help="how many processes share the work, with --process-index")
    parser.add_argument("--tiny", action="store_true", help="use the families' offline tiny random-weight variants")
    parser.add_argument("--revision", help="Hub revision of the model(s)")
    parser.add_argument("--device", help="cuda, npu, mps or cpu (default: accelerate's device, else the best)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")


def add_data_annotate_parsers(commands: Any) -> None:
    annotate = commands.add_parser(
        "annotate", help="auto-annotate images: text ontology -> detector boxes -> SAM masks -> COCO",
        description="Detect every class of a text ontology with an open-vocabulary detector (OWLv2, OWL-ViT), turn "
        "each box into a mask with SAM, and write OUT/annotations.json (COCO, RLE masks) plus a review gallery. "
        "Sharded into fixed-size chunks: runs data-parallel under `accelerate launch`, resumes with --resume, and "
        "merges to the same bytes for any process count.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ANNOTATE_EPILOG,
    )
    annotate.add_argument("images", help="a folder of images (searched recursively)")
    annotate.add_argument("--out", required=True, help="folder for annotations.json, shards/ and gallery/")
    ontology = annotate.add_mutually_exclusive_group(required=True)
    ontology.add_argument("--classes", help="'class:prompt' entries, comma-separated; a bare entry is both")
    ontology.add_argument("--ontology", help="a YAML/JSON file mapping prompt text to class name")
    annotate.add_argument("--detector", default="owlv2-b16", help="zero-shot detection model (default owlv2-b16)")
    annotate.add_argument("--segmenter", default="sam-vit-base", help="SAM model for masks (default sam-vit-base)")
    annotate.add_argument("--no-masks", action="store_true", help="boxes only: run no segmenter")
    annotate.add_argument("--box-threshold", type=float, default=0.1, help="detector score to keep a box (0.1)")
    annotate.add_argument("--nms-threshold", type=float, default=0.5, help="IoU merging boxes of one class (0.5)")
    annotate.add_argument("--mask-threshold", type=float, default=0.0, help="SAM mask logit threshold (0.0)")
    annotate.add_argument("--max-detections", type=int, default=100, help="most annotations per image (100)")
    annotate.add_argument("--gallery", type=int, default=24, metavar="N",
                          help="review gallery of the first N images (default 24; 0: none)")
    _add_shard_arguments(annotate, 64)
    annotate.set_defaults(run=run_data_annotate)
    embed = commands.add_parser(
        "embed", help="embed a folder of images into one matrix + index (sharded, resumable)",
        description="Embed every image of a folder with an image-feature-extraction model into OUT/embeddings.npy "
        "(or .safetensors) and OUT/index.json (the image of each row), sharded and merged like `data annotate`.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ANNOTATE_EPILOG,
    )
    embed.add_argument("images", help="a folder of images (searched recursively)")
    embed.add_argument("--out", required=True, help="folder for the embeddings, index.json and shards/")
    embed.add_argument("--model", "-m", default="dinov2-small", help="feature model (default dinov2-small)")
    embed.add_argument("--format", choices=("npy", "safetensors"), default="npy", help="matrix file (default npy)")
    embed.add_argument("--batch-size", type=int, default=1,
                       help="images per forward pass (default 1: bytes independent of --chunk-size)")
    _add_shard_arguments(embed, 256)
    embed.set_defaults(run=run_data_embed)


def _shard_line(shards: Any) -> str:
    done = f"computed {len(shards.computed)} chunk(s), reused {len(shards.reused)} of {shards.chunks}"
    where = f"process {shards.process.index + 1}/{shards.process.count}: " if shards.process.count > 1 else ""
    return where + done


def _print_partial(run: Any, args: argparse.Namespace) -> int:
    """A process that did not merge: silent under accelerate (the main process reports), else say what is left."""
    if run.shards.process.synchronised:
        return 0
    if args.json:
        print(json.dumps(run.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"{_shard_line(run.shards)}. Other chunks are not done yet: the last process to finish merges, or "
              "run the command again with --resume once they are.")
    return 0


def run_data_annotate(args: argparse.Namespace) -> int:
    from lmt.data.annotate import annotate_folder

    run = annotate_folder(
        args.images, args.out, args.classes if args.classes is not None else Path(args.ontology),
        detector=args.detector, segmenter=None if args.no_masks else args.segmenter,
        weights="tiny" if args.tiny else "real", revision=args.revision, device=args.device,
        box_threshold=args.box_threshold, nms_threshold=args.nms_threshold, mask_threshold=args.mask_threshold,
        max_detections=args.max_detections, chunk_size=args.chunk_size, resume=args.resume,
        process_index=args.process_index, num_processes=args.num_processes, gallery=args.gallery,
    )
    if run.coco_path is None:
        return _print_partial(run, args)
    if args.json:
        print(json.dumps(run.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"{run.images} images, {run.annotations} annotations, {run.skipped} skipped ({_shard_line(run.shards)})")
    print(f"COCO: {run.coco_path}")
    if run.gallery:
        print(f"Gallery: {run.gallery}")
    return 0


def run_data_embed(args: argparse.Namespace) -> int:
    from lmt.data.embed import embed_folder

    run = embed_folder(
        args.images, args.out, model=args.model, weights="tiny" if args.tiny else "real", revision=args.revision,
        device=args.device, batch_size=args.batch_size, chunk_size=args.chunk_size, resume=args.resume,
        process_index=args.process_index, num_processes=args.num_processes, file_format=args.format,
    )
    if run.embeddings is None:
        return _print_partial(run, args)
    if args.json:
        print(json.dumps(run.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"{run.count} images embedded (dim {run.dim}), {run.skipped} skipped ({_shard_line(run.shards)})")
    print(f"Embeddings: {run.embeddings}\nIndex: {run.index}")
    return 0


# ---- lmt data import / export / stats / push ---------------------------------------------------------------------
DATA_FORMATS_EPILOG = """examples:
  lmt data import data/digits --out data/digits-ds
  lmt data import annotations.json --images images/ --out data/det-ds
  lmt data export data/det-ds --format yolo --out exports/det-yolo
  lmt data stats data/digits-ds --out stats/
  lmt data push data/digits-ds --repo alice/digits --dry-run --out preview/
"""


def add_data_format_parsers(commands: Any) -> None:
    """``lmt data import|export|stats|push``: the logic lives in lmt.data.importers/exporters/stats/publish."""
    from lmt.data.formats import EXPORT_FORMATS, IMPORT_FORMATS

    raw = argparse.RawDescriptionHelpFormatter
    imp = commands.add_parser(
        "import", help="import ImageFolder, CSV/JSONL, COCO, YOLO or image+mask pairs as a typed datasets folder",
        description="Read a dataset (ImageFolder tree, .csv/.jsonl of image + label|caption|question,answer|mask, "
        "COCO JSON, YOLO folder, images/ + masks/ pairs) and save it as a Hugging Face datasets folder "
        "(save_to_disk) with typed features (ClassLabel, Image), the images stored byte for byte. `lmt train` reads "
        "the folder as data.train.", formatter_class=raw, epilog=DATA_FORMATS_EPILOG,
    )
    imp.add_argument("source", help="a folder, or a .json (COCO), .csv, .jsonl or data.yaml (YOLO) file")
    imp.add_argument("--out", required=True, help="a new or empty folder for the dataset")
    imp.add_argument("--format", choices=("auto", *IMPORT_FORMATS), default="auto",
                     help="the source's format (default: auto, from what the source holds)")
    imp.add_argument("--split", default="train", help="split name when the source has no split folders (default train)")
    imp.add_argument("--images", default=None, help="COCO: the images folder, when not beside the JSON file")
    imp.add_argument("--json", action="store_true", help="print the result as one JSON document")
    imp.set_defaults(run=run_data_import)
    exp = commands.add_parser(
        "export", help="export a dataset folder to ImageFolder, COCO or YOLO",
        description="Write a dataset folder (from `lmt data import`) as an ImageFolder tree (classification), COCO "
        "JSON or YOLO txt + data.yaml (detection). COCO -> import -> COCO is identical; YOLO keeps classes and "
        "boxes only.", formatter_class=raw, epilog=DATA_FORMATS_EPILOG,
    )
    exp.add_argument("dataset", help="a dataset folder written by `lmt data import`")
    exp.add_argument("--format", choices=EXPORT_FORMATS, required=True, help="the format to write")
    exp.add_argument("--out", required=True, help="a new or empty folder")
    exp.add_argument("--json", action="store_true", help="print the result as one JSON document")
    exp.set_defaults(run=run_data_export)
    stats = commands.add_parser(
        "stats", help="class counts, image sizes and the mean/std for normalisation",
        description="Count images (or objects) per class and split, summarise image sizes, and measure the "
        "per-channel mean/std of the train split for an image processor's image_mean/image_std.",
        formatter_class=raw, epilog=DATA_FORMATS_EPILOG,
    )
    stats.add_argument("source", help="a dataset folder, an ImageFolder tree or a .csv/.jsonl file")
    stats.add_argument("--out", default=None, help="also write stats.json and stats.md here")
    stats.add_argument("--max-images", type=int, default=0,
                       help="measure mean/std on a seeded sample of this many images (default 0: all)")
    stats.add_argument("--seed", type=int, default=0, help="seed of that sample (default 0)")
    stats.add_argument("--json", action="store_true", help="print the statistics as one JSON document")
    stats.set_defaults(run=run_data_stats)
    push = commands.add_parser(
        "push", help="push a dataset folder to a Hub dataset repository, with a dataset card",
        description="Upload a dataset folder as Parquet shards (images embedded, typed features) plus a dataset "
        "card (README.md) to a Hub dataset repository, created if missing. --dry-run writes exactly those files "
        "into --out and touches no network. The token comes from HF_TOKEN or `hf auth login` and is never printed.",
        formatter_class=raw, epilog=DATA_FORMATS_EPILOG,
    )
    push.add_argument("dataset", help="a dataset folder written by `lmt data import`")
    push.add_argument("--repo", required=True, metavar="USER/NAME", help="the dataset repository, e.g. alice/digits")
    push.add_argument("--license", default="unknown", help="the dataset's license for the card (default unknown)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", metavar="BRANCH", help="upload to this branch (created if missing)")
    push.add_argument("--dry-run", action="store_true", help="write what would be uploaded into --out; send nothing")
    push.add_argument("--out", default=None, help="with --dry-run: a new or empty folder for the files")
    push.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    push.set_defaults(run=run_data_push)


def run_data_import(args: argparse.Namespace) -> int:
    from lmt.data.formats import dataset_kind, read_meta
    from lmt.data.importers import import_dataset

    dataset = import_dataset(args.source, args.out, format=args.format, split=args.split, images=args.images)
    summary = {"out_dir": str(Path(args.out)), "format": read_meta(args.out).get("source_format"),
               "kind": dataset_kind(next(iter(dataset.values())).features),
               "splits": {name: len(part) for name, part in dataset.items()},
               "features": {name: str(feature) for name, feature in next(iter(dataset.values())).features.items()}}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    print(f"Imported {summary['format']} as a {summary['kind']} dataset ({splits}) into {args.out}")
    for name, feature in summary["features"].items():
        print(f"  {name}: {feature[:100]}")
    return 0


def run_data_export(args: argparse.Namespace) -> int:
    from lmt.data.exporters import export_dataset

    result = export_dataset(args.dataset, args.format, args.out)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    splits = ", ".join(f"{name} {count}" for name, count in result.images.items())
    print(f"Exported {splits} images as {result.format} to {result.out_dir}")
    if result.skipped_crowd:
        print(f"Left out {result.skipped_crowd} crowd annotations (iscrowd=1): YOLO cannot mark them.")
    return 0


def run_data_stats(args: argparse.Namespace) -> int:
    from lmt.data.stats import dataset_stats, stats_markdown, write_stats

    stats = dataset_stats(args.source, max_images=args.max_images, seed=args.seed)
    if args.out:
        write_stats(stats, args.out)
    if args.json:
        print(json.dumps(stats.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(stats_markdown(stats), end="")
    return 0


def run_data_push(args: argparse.Namespace) -> int:
    from lmt.data.publish import push_dataset

    plan = push_dataset(args.dataset, args.repo, dry_run=args.dry_run, out=args.out, private=args.private,
                        revision=args.revision, license=args.license)
    if args.json:
        print(json.dumps(plan.to_dict(), ensure_ascii=False, indent=2))
        return 0
    for path, size in plan.files:
        print(f"{_size(size):>10}  {path}")
    where = f"'{plan.repo_id}'" + (f" (branch {plan.revision})" if plan.revision else "")
    if plan.dry_run:
        print(f"\nDry run: wrote the {len(plan.files)} files ({_size(plan.total_bytes)}) that would go to the "
              f"dataset repository {where} into {plan.out_dir}. Nothing was sent.")
        return 0
    print(f"\nUploaded {len(plan.files)} files ({_size(plan.total_bytes)}) to {where}: {plan.url}")
    return 0


# ---- lmt data augment / lmt data synth ----------------------------------------------------------------------------
AUGMENT_EPILOG = """examples:
  lmt data augment data/digits --out data/digits-aug --preset light --copies 2
  lmt data augment data/shapes/shapes.csv --out data/shapes-aug --set rotate=30 scale=0.8,1.2
  lmt data augment labels/annotations.json --out labels-aug --preset strong --no-originals
  lmt data synth text --classes zebra,okapi --count 8 --out synthetic/ --tiny
  lmt data synth text --balance data/train --out synthetic/ --tiny
  lmt data synth inpaint street.png --box 40,60,120,140 --prompt "a red bicycle" --label bicycle --out inpainted/ --tiny
"""


def add_data_augment_parsers(commands: Any) -> None:
    augment = commands.add_parser(
        "augment", help="write augmented copies of a dataset; boxes and masks move with the images",
        description="Write COPIES augmented versions of every image of SOURCE into OUT (new files, never touching "
        "the source) with OUT/manifest.csv (or OUT/annotations.json for COCO) and OUT/preview.png. SOURCE is a "
        "folder of <class>/<image>, a .csv/.jsonl manifest (image, label; a mask column is moved with its image) or "
        "a COCO .json (boxes and segmentations are moved). --set KEY=VALUE ... overrides preset parameters, "
        "e.g. --set rotate=30 scale=0.8,1.2 crop_scale=none.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=AUGMENT_EPILOG,
    )
    augment.add_argument("source", help="ImageFolder tree, .csv/.jsonl manifest or COCO .json")
    augment.add_argument("--out", required=True, help="a new or empty folder to write to")
    augment.add_argument("--preset", choices=("light", "default", "strong"), default="default",
                         help="how strong the augmentation is (default: default)")
    augment.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                         help="preset parameters to replace: hflip, vflip, rotate, scale, translate, crop_scale, "
                         "crop_p, brightness, contrast, saturation, hue, color_p, blur_p, grayscale_p, min_visibility")
    augment.add_argument("--copies", type=int, default=2, help="augmented copies per image (default 2)")
    augment.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    augment.add_argument("--no-originals", action="store_true", help="list only the new images in the manifest")
    augment.add_argument("--image-root", help="COCO: folder the file names are relative to (default: the file's)")
    augment.add_argument("--json", action="store_true", help="print the result as one JSON document")
    augment.set_defaults(run=run_data_augment)

    synth = commands.add_parser(
        "synth", help="synthesize training images with diffusers (text-to-image, inpainting)",
        description="Generate images with Stable Diffusion: 'text' draws COUNT images per class (or as many as "
        "--balance says each class lacks); 'inpaint' repaints a region of each image given by a mask, or by a box "
        "or clicks that SAM turns into a mask. Writes OUT/manifest.csv and OUT/synthesis.json. The real models "
        "want a GPU; --tiny runs offline tiny pipelines whose images are noise.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=AUGMENT_EPILOG,
    )
    modes = synth.add_subparsers(dest="synth_command", metavar="MODE", required=True)
    text = modes.add_parser("text", help="text-to-image: new images of each class",
                            description="Draw COUNT images per class from 'a photo of a {class}' (see --template).")
    classes = text.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", help="class names, comma-separated")
    classes.add_argument("--balance", metavar="SOURCE",
                         help="a dataset (folder or .csv/.jsonl): top up every class to the largest one's count")
    text.add_argument("--count", type=int, default=4, help="images per class with --classes (default 4)")
    text.add_argument("--template", default="a photo of a {}", help="prompt template; {} is the class name")
    text.add_argument("--model", help="sd-v1-5 (default), a Hub id or a pipeline folder")
    _add_synth_options(text)
    text.set_defaults(run=run_data_synth)
    paint = modes.add_parser("inpaint", help="inpainting: paint an object into a region of each image",
                             description="Repaint a region of each image with PROMPT. Give the region as --mask "
                             "(one PNG per image), --box (one per image, SAM cuts the mask) or --point (clicks, "
                             "SAM cuts the mask; one image).")
    paint.add_argument("images", nargs="+", help="image files")
    region = paint.add_mutually_exclusive_group(required=True)
    region.add_argument("--mask", action="append", help="a mask PNG (non-zero = repaint); once per image")
    region.add_argument("--box", action="append", help="x0,y0,x1,y1 in pixels; once per image")
    region.add_argument("--point", action="append", help="x,y or x,y,label (1 include, 0 exclude); one image")
    paint.add_argument("--prompt", required=True, help="what to paint, e.g. 'a red bicycle'")
    paint.add_argument("--label", required=True, help="the class name the manifest gives the new images")
    paint.add_argument("--count", type=int, default=1, help="variants per image (default 1)")
    paint.add_argument("--dilate", type=int, default=0, help="grow the mask by this many pixels first")
    paint.add_argument("--feather", type=int, default=0, help="soften the pasted-back seam over this many pixels")
    paint.add_argument("--strength", type=float, default=1.0, help="how much of the region is redrawn (0-1]")
    paint.add_argument("--sam-model", default="sam-vit-base", help="SAM model for --box/--point (sam-vit-base)")
    paint.add_argument("--model", help="sd-v1-5-inpainting (default), a Hub id or a pipeline folder")
    _add_synth_options(paint)
    paint.set_defaults(run=run_data_synth)


def _add_synth_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="a new or empty folder to write to")
    parser.add_argument("--negative-prompt", help="what the images should not show")
    parser.add_argument("--size", type=int, help="image side in pixels, a multiple of 8 (real 512, tiny 32)")
    parser.add_argument("--steps", type=int, help="denoising steps (real 30, tiny 2)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (7.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image (default 0)")
    parser.add_argument("--tiny", action="store_true", help="use the offline tiny pipelines (and tiny SAM)")
    parser.add_argument("--device", help="cuda, npu, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16 (default: fp16 on GPUs, fp32 on CPUs)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")



def run_data_augment(args: argparse.Namespace) -> int:
    from lmt.data.augment import augment_dataset, parse_overrides

    result = augment_dataset(
        args.source, args.out, augment=args.preset, copies=args.copies, seed=args.seed,
        include_originals=not args.no_originals, image_root=args.image_root, **parse_overrides(args.overrides),
    )
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"Wrote {result.written} augmented {result.kind} images ({result.originals} sources x {result.copies}) "
          f"to {result.out_dir}")
    if result.dropped_boxes:
        print(f"{result.dropped_boxes} boxes left the image and were dropped")
    print(f"Manifest: {result.manifest}")
    if result.preview:
        print(f"Preview: {result.preview}")
    return 0


def run_data_synth(args: argparse.Namespace) -> int:
    from lmt.data import synth

    common = {
        "negative_prompt": args.negative_prompt, "size": args.size, "steps": args.steps, "guidance": args.guidance,
        "seed": args.seed, "model": args.model, "weights": "tiny" if args.tiny else "real", "device": args.device,
        "dtype": args.dtype,
    }
    if args.synth_command == "text":
        if args.balance:
            classes: Any = synth.balance_counts(args.balance)
            if not classes:
                print(f"Every class of {args.balance} already has as many images as the largest; nothing to do.")
                return 0
        else:
            classes = [name.strip() for name in args.classes.split(",") if name.strip()]
        result = synth.synthesize(classes, args.out, count=args.count, template=args.template, **common)
    else:
        regions: dict[str, Any] = {}
        if args.mask:
            regions["masks"] = args.mask
        elif args.box:
            regions["boxes"] = [_numbers(box, (4,), "--box") for box in args.box]
        else:
            if len(args.images) != 1:
                raise InvalidInputError("--point clicks belong to one image; give exactly one image with --point.",
                                        "--point 的点击属于同一张图片；使用 --point 时只能给一张图片。")
            regions["points"] = [[_numbers(point, (2, 3), "--point") for point in args.point]]
        result = synth.inpaint(
            args.images, args.out, prompt=args.prompt, label=args.label, count=args.count, dilate=args.dilate,
            feather=args.feather, strength=args.strength, sam_model=args.sam_model, **regions, **common,
        )
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    per_label = ", ".join(f"{label} {n}" for label, n in result.per_label.items())
    print(f"Wrote {result.written} images ({per_label}) with {result.model} ({result.weights} weights, "
          f"{result.steps} steps) to {result.out_dir}")
    if result.flagged:
        print(f"{result.flagged} images were blanked by the safety checker and not written")
    print(f"Manifest: {result.manifest}")
    return 0


# ---- lmt export ---------------------------------------------------------------------------------------------------
EXPORT_EPILOG = """examples:
  lmt export vit-b16 --tiny --out build/vit-onnx
  lmt export clip-vit-b32 --tiny --quantize int8 --out build/clip-onnx --json
  lmt export owlv2-b16 --tiny --format onnx --out build/owlv2-onnx
  lmt export sam-vit-base --tiny --quantize int8 --out build/sam-onnx
  lmt export resnet-50 --tiny --quantize int8 --calibration examples/images --out build/resnet-onnx
"""


def add_export_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model to ONNX (optionally int8/fp16) and check it against PyTorch",
        description="Export a model to ONNX files in DIR, run them with onnxruntime on a sample batch and report "
        "the largest difference from PyTorch. Families: vit, resnet, dinov2, clip (image and text towers), "
        "owlv2/owlvit (text and detector graphs), sam (image encoder and prompt decoder graphs).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXPORT_EPILOG,
    )
    parser.add_argument("model", help="registry name, Hub id or local folder, e.g. vit-b16")
    parser.add_argument("--tiny", action="store_true", help="use the family's offline tiny random-weight variant")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    parser.add_argument("--quantize", choices=("int8", "fp16"), help="also write <graph>.int8.onnx or .fp16.onnx")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    parser.add_argument("--calibration", metavar="DIR",
                        help="folder of typical input images: calibrates ResNet's static INT8 (--quantize int8)")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder to write to")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from lmt.deploy.bench import calibration_folder
    from lmt.deploy.export import export_onnx

    result = export_onnx(
        args.model, weights="tiny" if args.tiny else "real", out=args.out, quantize=args.quantize, opset=args.opset,
        calibration_images=calibration_folder(args.calibration) if args.calibration else None,
    )
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    for graph in result.graphs:
        outputs = ", ".join(f"{o.name}{list(o.shape)}" for o in graph.outputs)
        line = f"{graph.file}: {outputs}, max |onnx - torch| = {graph.max_abs_diff:.2e}"
        if graph.quantized_file:
            quantized = graph.quantized_max_abs_diff
            line += f"; {graph.quantized_file}: " + (f"{quantized:.2e}" if quantized is not None else "not run here")
            if graph.quantized_recipe:
                line += f" ({graph.quantized_recipe['method']} INT8" + (
                    f", {graph.quantized_recipe['fusion']} fusions)" if graph.quantized_recipe["fusion"] else ")")
        print(line)
    for name, size in result.sizes.items():
        print(f"{_size(size):>10}  {name}")
    print(f"\nExported {result.model} ({result.weights} weights) to {result.out_dir}")
    return 0


# ---- lmt bench ----------------------------------------------------------------------------------------------------
BENCH_EPILOG = """examples:
  lmt bench vit-b16 --tiny --batch 1,2 --rounds 2
  lmt bench resnet-50 --backends torch,onnx,onnx-int8 --batch 1,8 --threads 2 --out bench/resnet50
  lmt bench clip-vit-b32 --device cuda --backends torch,torch-fp16,onnx,onnx-fp16 --batch 1,32
"""


def add_bench_parser(subparsers: Any) -> None:
    # literals, not imports: `lmt --help` must stay fast (tests check they match lmt.deploy.bench's constants)
    parser = subparsers.add_parser(
        "bench", help="measure a model on torch / ONNX / INT8 back-ends (latency, throughput, memory, GFLOP/s)",
        description="Measure a model's image encoder on several back-ends in one run: latency p50/p95, throughput, "
        "peak memory, model size, GFLOP/s against a matmul ceiling measured in the same run, and agreement with "
        "eager float32. Back-ends: torch, torch-fp16, torch-bf16, torch-int8, onnx, onnx-int8, onnx-fp16.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=BENCH_EPILOG,
    )
    parser.add_argument("model", help="registry name, task name, Hub id or local folder, e.g. vit-b16")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8", help="comma-separated (default: %(default)s)")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, npu, mps or auto (default: cpu)")
    parser.add_argument("--tiny", action="store_true", help="use the family's offline tiny random-weight variant")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime (default: torch's count)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per batch size (default: 5)")
    parser.add_argument("--calibration", metavar="DIR", help="folder of images to calibrate static INT8 with")
    parser.add_argument("--out", metavar="DIR", help="write bench.json, bench.md and bench.png here")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    parser.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from lmt.deploy.bench import bench, calibration_folder, render_markdown

    result = bench(
        args.model, backends=args.backends, batches=args.batch, device=args.device, tiny=args.tiny,
        threads=args.threads, rounds=args.rounds,
        calibration_images=calibration_folder(args.calibration) if args.calibration else None, out=args.out,
    )
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(render_markdown(result), end="")
    if args.out:
        print(f"\nWrote bench.json, bench.md and bench.png to {args.out}")
    return 0


# ---- the parser ----------------------------------------------------------------------------------------------------
#: Sub-commands, in the order `lmt --help` lists them. Later features append their own add_*_parser here.
COMMANDS: list[Callable[[Any], None]] = [
    add_models_parser, add_predict_parser, add_chat_parser, add_env_parser, add_space_parser, add_gallery_parser,
    add_spaces_parser, add_hub_parser, add_train_parser, add_data_parser, add_export_parser, add_bench_parser,
]


def build_parser() -> argparse.ArgumentParser:
    from lmt import __version__

    parser = argparse.ArgumentParser(
        prog="lmt",
        description="Large-Model-Tutorial: vision large models from the command line (大模型教程命令行工具).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"lmt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except LmtError as err:
        if getattr(args, "json", False):
            print(json.dumps(err.to_dict(), ensure_ascii=False))
        print(f"error: {err.bilingual()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
