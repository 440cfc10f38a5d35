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
    elif task == "mask-generation":
        if args.points:
            options["points"] = [_numbers(p, (2, 3), "point") for p in args.points]
        if args.boxes:
            options["boxes"] = [_numbers(b, (4,), "box") for b in args.boxes]
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.top_k is not None:
        options["top_k"] = args.top_k
    if task in ("image-to-text", "visual-question-answering"):
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
    )
    images = args.image
    results = task(images if len(images) > 1 else images[0], **options)
    results = results if isinstance(results, list) else [results]
    if args.json:
        document = {
            "task": args.task,
            "model": task.loaded.name,
            "weights": task.loaded.weights,
            "results": [{"image": image, **result.to_dict()} for image, result in zip(images, results, strict=True)],
        }
        print(json.dumps(document, ensure_ascii=False))
    else:
        for image, result in zip(images, results, strict=True):
            print(f"== {image} ({task.loaded.name}, {task.loaded.weights} weights)")
            print(_describe(result))
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
        "train", help="fine-tune a model (full, LoRA, QLoRA) from a YAML config",
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
        "data", help="dataset tools", description="Dataset tools: write sample datasets, validate a dataset, split it into train/val/test.",
    )
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    sample = commands.add_parser(
        "sample", help="write a sample dataset (no download)",
        description="Write a sample dataset: 'digits' (scikit-learn's 1797 handwritten digits as an ImageFolder tree), "
        "'shapes' (synthetic shapes with exact masks, captions and questions).",
    )
    sample.add_argument("name", choices=("digits", "shapes"), help="which sample dataset")
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


def run_data_sample(args: argparse.Namespace) -> int:
    from lmt.data.samples import write_digits, write_shapes

    if args.size is not None and not 8 <= args.size <= 1024:
        raise InvalidInputError("--size must lie in [8, 1024].", "--size 应在 [8, 1024] 之内。")
    if args.name == "digits":
        folder = write_digits(args.folder, size=args.size or 32, labelling=args.labelling)
    else:
        if not 1 <= args.count <= 100_000:
            raise InvalidInputError("--count must lie in [1, 100000].", "--count 应在 [1, 100000] 之内。")
        folder = write_shapes(args.folder, count=args.count, size=args.size or 64)
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


# ---- lmt export ---------------------------------------------------------------------------------------------------
EXPORT_EPILOG = """examples:
  lmt export vit-b16 --tiny --out build/vit-onnx
  lmt export clip-vit-b32 --tiny --quantize int8 --out build/clip-onnx --json
"""


def add_export_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model to ONNX (optionally int8/fp16) and check it against PyTorch",
        description="Export a model to ONNX files in DIR, run them with onnxruntime on a sample batch and report "
        "the largest difference from PyTorch. Families: vit, resnet, dinov2, clip (image and text towers).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXPORT_EPILOG,
    )
    parser.add_argument("model", help="registry name, Hub id or local folder, e.g. vit-b16")
    parser.add_argument("--tiny", action="store_true", help="use the family's offline tiny random-weight variant")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    parser.add_argument("--quantize", choices=("int8", "fp16"), help="also write <graph>.int8.onnx or .fp16.onnx")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder to write to")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from lmt.deploy.export import export_onnx

    result = export_onnx(
        args.model, weights="tiny" if args.tiny else "real", out=args.out, quantize=args.quantize, opset=args.opset
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
        print(line)
    for name, size in result.sizes.items():
        print(f"{_size(size):>10}  {name}")
    print(f"\nExported {result.model} ({result.weights} weights) to {result.out_dir}")
    return 0


# ---- the parser ----------------------------------------------------------------------------------------------------
#: Sub-commands, in the order `lmt --help` lists them. Later features append their own add_*_parser here.
COMMANDS: list[Callable[[Any], None]] = [
    add_models_parser, add_predict_parser, add_env_parser, add_space_parser, add_gallery_parser,
    add_spaces_parser, add_hub_parser, add_train_parser, add_data_parser, add_export_parser,
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
