"""The ``lavt`` command: predict, convert, train, eval, demo. Thin: the work is in ``lavt.predict``
and ``lavt.engine``.

User errors (:class:`lavt.errors.LAVTError`) print one line ``lavt: error: <message>`` and exit
with status 2; user-facing warnings print ``lavt: warning: <message>``. Any other exception is a
bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, LAVTError

PROG = "lavt"


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("lavt")
    except (ImportError, PackageNotFoundError):  # pragma: no cover - running from a bare checkout
        return "unknown"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------------
def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import Predictor, load_image, save_prediction, validate_expressions

    texts = validate_expressions(args.text)  # cheap checks first, before loading the model
    image = load_image(args.image)
    predictor = Predictor(
        args.model,
        device=args.device,
        precision="bf16" if args.bf16 else "fp32",
        image_size=args.image_size,
    )
    pred = predictor.predict(image, texts, return_probs=args.logits)
    for path in save_prediction(pred, image, args.out, Path(args.image).stem):
        print(path)
    return 0


def _describe(model) -> list[str]:
    c = model.config
    te = c.text_encoder
    text = (
        f"{te.name_or_path} (max_tokens={te.max_tokens}, truncation={te.truncation})"
        if te is not None
        else "none (takes word features)"
    )
    return [
        f"  architecture: embed_dim={c.embed_dim} depths={list(c.depths)} heads={list(c.num_heads)} "
        f"window={c.window_size} lang_dim={c.lang_dim} decoder_hidden={c.hidden_dim}",
        f"  text encoder: {text}",
    ]


def _cmd_convert(args: argparse.Namespace) -> int:
    from .official import load_official_checkpoint

    model = load_official_checkpoint(args.checkpoint, text_encoder=args.text_encoder, max_tokens=args.max_tokens)
    if model.text_encoder is None and args.text_encoder is not None:
        raise ConfigError(
            f"{args.checkpoint} holds no text encoder (BERT) weights, so --text-encoder cannot apply; "
            f"convert without it (the model then takes word features)"
        )
    out = model.save_pretrained(args.out_dir)
    print(f"converted {args.checkpoint} -> {out}")
    for line in _describe(model):
        print(line)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_summary, run_demo

    parallel = {"auto": None, "yes": True, "no": False}[args.parallel]
    report = run_demo(args.out, data_root=args.data_root, overrides=args.overrides, parallel=parallel)
    print(format_summary(report))
    print(f"report: {Path(args.out) / 'index.html'}  ({report['seconds']['total'] / 60:.1f} min)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .engine.config import load_run_config
    from .engine.trainer import train

    cfg = load_run_config(args.config, args.overrides)
    train(cfg, resume=args.resume)
    print(f"run written to {cfg.train.output_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .engine.config import load_run_config
    from .engine.trainer import evaluate_checkpoint

    cfg = load_run_config(args.config, args.overrides)
    result = evaluate_checkpoint(cfg, args.model, out=args.out)
    keys = ("oIoU", "mIoU", "P@0.5", "P@0.7", "P@0.9", "n")
    print(json.dumps({k: result[k] for k in keys if k in result}))
    return 0


# --------------------------------------------------------------------------------------------
# Parser and entry point
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="LAVT: segment the object an English expression refers to in an image."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="segment an image for one or more expressions")
    p.add_argument("--model", required=True, help="lavt model directory, official .pth checkpoint or hub repo id")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument(
        "--text", required=True, action="append", metavar="EXPRESSION", help="referring expression (repeatable)"
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--bf16", action="store_true", help="run the model in bfloat16 autocast")
    p.add_argument("--image-size", type=int, default=480, help="square input side (official: 480)")
    p.add_argument("--logits", action="store_true", help="also save the object probability as 8-bit PNGs")
    p.set_defaults(func=_cmd_predict)

    c = sub.add_parser("convert", help="convert an official LAVT checkpoint to a lavt model directory")
    c.add_argument("checkpoint", help="official checkpoint (.pth)")
    c.add_argument("out_dir", help="output model directory")
    c.add_argument(
        "--text-encoder",
        default=None,
        help="architecture/tokenizer of the BERT weights in the checkpoint (hub id or local directory; "
        "default bert-base-uncased)",
    )
    c.add_argument("--max-tokens", type=int, default=20, help="expression length in tokens (official: 20)")
    c.set_defaults(func=_cmd_convert)

    t = sub.add_parser("train", help="train a model from a YAML config (torchrun for several GPUs)")
    t.add_argument("config", help="YAML run config (see configs/)")
    t.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    t.add_argument("--resume", default=None, help="training checkpoint (last.pt) or run directory to continue")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a model on the config's eval split with the official protocol")
    e.add_argument("config", help="YAML run config (its data and eval sections are used)")
    e.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    e.add_argument("--model", required=True, help="lavt model directory or official .pth")
    e.add_argument("--out", default=None, help="write the metrics JSON here")
    e.set_defaults(func=_cmd_eval)

    d = sub.add_parser(
        "demo",
        help="build the synthetic benchmark, train LAVT and a language-blind control on it, "
        "evaluate both and write a report (CPU, ~10 minutes)",
    )
    d.add_argument("overrides", nargs="*", metavar="section.key=value", help="overrides of configs/demo.yaml")
    d.add_argument("--out", default="lavt-demo", help="report folder (default: lavt-demo)")
    d.add_argument(
        "--data-root", default=None, help="where the synthetic set is cached (default: ~/.cache/lavt/synthetic-demo)"
    )
    d.add_argument(
        "--parallel", choices=("auto", "yes", "no"), default="auto",
        help="train the two runs side by side, one process each (auto: with 2+ CPU cores)",
    )
    d.set_defaults(func=_cmd_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    from .models.text import ExpressionTruncatedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", ExpressionTruncatedWarning)
            previous = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, UserWarning):  # lavt's own warnings: one line each
                    _show_warning(message, category, filename, lineno, file, line)
                else:
                    previous(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            return args.func(args)
    except LAVTError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
