"""The ``lavt`` command: predict, export, convert, train, eval, demo, serve, data check. Thin: the work is in ``lavt.predict``
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
from typing import NoReturn

from ..errors import ConfigError, LAVTError, LAVTWarning, TrainingInterrupted
from ..io.inputs import model_source
from ..io.outputs import check_writable_folder
from .predict_cmd import cmd_predict, image_size_flag

PROG = "lavt"
# measured wall-clock times (README "The demo"; the same figures everywhere)
DEMO_MINUTES = "about 7 minutes"
VIDEO_DEMO_MINUTES = "about 14 minutes on 2 cores"

PREDICT_EXAMPLES = """examples:
  lavt predict --model lavt-demo/lavt/final_model --image photo.jpg \\
      --text "the red square on the left" --text "the small circle" --out out/
      -> out/photo.jpg/00.png, 01.png (masks), overlay.png, expressions.json
  lavt predict --model refcoco.pth --image photo.jpg --text "man in a blue shirt" --out out/ --probs
  lavt predict --model M --video clip.mp4 --text "the dog that jumps" --out out/ --mp4
"""


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
    if args.max_tokens < 2:
        raise ConfigError(f"--max-tokens must be at least 2 (room for [CLS] and [SEP]), got {args.max_tokens}")
    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "an existing file" if not out.is_dir() else "a folder that is not empty"
        raise ConfigError(f"output {out} is {what}; give a new folder for the converted model")
    check_writable_folder(out, "output folder")
    from ..weights.official import load_official_checkpoint

    model = load_official_checkpoint(args.checkpoint, text_encoder=args.text_encoder, max_tokens=args.max_tokens)
    if model.text_encoder is None and args.text_encoder is not None:
        raise ConfigError(
            f"{args.checkpoint} holds no text encoder (BERT) weights, so --text-encoder cannot apply; "
            f"convert without it (the model then takes word features)"
        )
    model.save_pretrained(out)
    print(f"converted {args.checkpoint} -> {out}")
    for line in _describe(model):
        print(line)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    image_size = image_size_flag(args)
    if args.frames < 1:
        raise ConfigError(f"--frames must be a positive number of frames, got {args.frames}")
    out = check_writable_folder(args.out_dir, "the export directory")  # before the model is loaded
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"{out} exists and is not empty; choose a new directory or pass --overwrite")
    model_source(args.model)
    from ..export.onnx import check_installed, export_onnx
    from ..predict import load_model

    check_installed()

    model = load_model(args.model)
    result = export_onnx(model, out, image_size=image_size, frames=args.frames, int8=args.int8,
                         overwrite=args.overwrite)
    print(result.summary())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import importlib

    kind = "unified" if args.unified else "video" if args.video else "image"
    # kind -> (module in lavt.apps, its run function, its summary formatter, default folder)
    module, run, summary, folder = {
        "image": ("demo", "run_demo", "format_summary", "lavt-demo"),
        "video": ("demo_video", "run_video_demo", "format_summary", "lavt-video-demo"),
        "unified": ("demo_video", "run_unified_demo", "format_unified", "lavt-unified-demo"),
    }[kind]
    demo = importlib.import_module(f".{module}", __package__)
    out = args.out or folder
    parallel = {"auto": None, "yes": True, "no": False}[args.parallel]
    report = getattr(demo, run)(
        out, data_root=args.data_root, overrides=args.overrides, parallel=parallel, overwrite=args.overwrite
    )
    print(getattr(demo, summary)(report))
    print(f"report: {Path(out) / 'index.html'}  ({report['seconds']['total'] / 60:.1f} min)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ..engine.config import load_run_config

    cfg = load_run_config(args.config, args.overrides)  # config errors before the torch import
    from ..engine.trainer import train

    try:
        train(cfg, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        import os
        import shlex

        if int(os.environ.get("RANK", "0")) == 0:
            again = ["lavt", "train", args.config, *args.overrides, "--resume", stop.output_dir]
            print(f"{PROG}: interrupted at step {stop.step}; resume with {shlex.join(again)}", file=sys.stderr)
        return 128 + stop.signum
    print(f"run written to {cfg.train.output_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from ..engine.config import load_run_config

    cfg = load_run_config(args.config, args.overrides)  # config errors before the torch import
    model_source(args.model)
    if args.out is not None:
        check_writable_folder(Path(args.out).parent, "--out")
    from ..engine.evaluate import evaluate_checkpoint

    explicit_size = any(o.split("=", 1)[0].strip() == "data.image_size" for o in args.overrides)
    explicit_model = {o.split("=", 1)[0].strip()[len("model."):].split(".")[0] for o in args.overrides
                      if o.strip().startswith("model.")}
    result = evaluate_checkpoint(
        cfg, args.model, out=args.out, image_size_given=explicit_size, model_fields_given=explicit_model
    )
    keys = ("J&F", "J", "F", "oIoU", "mIoU", "P@0.5", "P@0.7", "P@0.9", "n", "protocol")
    if "submission" in result:  # a split without ground truth: say what was written and what to do with it
        where = result.get("zip", result["submission"])
        print(
            f"wrote {result['masks']} masks for {result['expressions']} expressions of {result['videos']} videos "
            f"({result['split']}) to {where}; upload "
            + ("that zip" if "zip" in result else "a zip of its Annotations/ folder")
            + " to the Ref-YouTube-VOS evaluation server (CodaLab) to get J&F"
        )
        return 0
    print(json.dumps({k: result[k] for k in keys if k in result}))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..serve.app import require_app_extra

    require_app_extra()
    from ..serve.limits import Limits
    from ..serve.service import Service, default_model

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1..65535, got {args.port}")
    limits = Limits(
        max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_expressions=args.max_expressions,
        max_video_frames=args.max_video_frames, max_video_seconds=args.max_video_seconds,
        queue_size=args.queue_size, timeout_s=args.timeout,
    )
    model = args.model if args.model is not None else default_model()
    service = Service(model, limits=limits, device=args.device,
                      precision=None if args.precision == "auto" else args.precision)
    from ..serve.app import serve

    info = service.model_info()
    print(f"lavt serve: {info['architecture']} from {info['weights']} ({info['input_size']} px, {info['device']})")
    print(f"  page  http://{args.host}:{args.port}/    API  http://{args.host}:{args.port}/api/docs    (Ctrl-C stops)")
    serve(service, host=args.host, port=args.port)
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    import json

    from ..data.check import check_dataset

    report = check_dataset(args.name, args.root, full=args.full)
    if args.json_out is not None:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    for note in report.notes:
        print(f"{PROG}: note: {_one_line(note)}", file=sys.stderr)
    if report.ok:
        print(report.summary())
        return 0
    for problem in report.problems:
        print(_one_line(problem))
    print(f"{PROG}: {report.summary()}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------------
# Parser and entry point
# --------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with lavt's error format: one line ``lavt: error: ...`` (naming the command's
    --help) and exit status 2, like every other lavt error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="LAVT: segment the object an English expression refers to in an image or a video."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "predict",
        help="segment an image or a video for one or more expressions",
        description="Segment what each expression refers to. Each input gets its own folder OUT/<input file name>/ "
        "holding one mask PNG per expression (00.png, 01.png, ...), an overlay and expressions.json; running "
        "again on the same input replaces that folder whole.",
        epilog=PREDICT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="lavt model directory, official .pth checkpoint or hub repo id")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="image file")
    source.add_argument(
        "--video", metavar="PATH",
        help="video: a directory of frames (.jpg/.png, name order), a GIF/WebP, or a video file (mp4, ...; needs PyAV)",
    )
    p.add_argument(
        "--text", required=True, action="append", metavar="EXPRESSION", help="referring expression (repeatable)"
    )
    p.add_argument(
        "--out", default=None,
        help="output directory (created if missing); the results go to OUT/<input name>/; "
        "a video with --submission may omit it",
    )
    p.add_argument(
        "--backend", choices=["torch", "onnxruntime"], default="torch",
        help="torch (default) or onnxruntime: --model is then a directory written by `lavt export` (no PyTorch needed)",
    )
    p.add_argument("--int8", action="store_true", help="with --backend onnxruntime: the int8 graph (export --int8)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto",
        help="auto (default): bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX; < half the fp32 time), "
        "else fp32; --exact makes auto mean fp32",
    )
    p.add_argument("--bf16", action="store_true", help="same as --precision bf16")
    p.add_argument(
        "--exact", action="store_true",
        help="the official computation: fp32 (unless --precision bf16) with direct decoder convolutions "
        "(default on CPU: bf16 where native, else fp32 with Winograd convolutions via NNPACK)",
    )
    p.add_argument(
        "--image-size", type=int, default=None, metavar="PX",
        help="square input side (default: the size the model was trained at, from its model directory; "
        "480 for official checkpoints); another size runs with a warning",
    )
    p.add_argument(
        "--probs", action="store_true",
        help="also save each expression's object probability as an 8-bit PNG (kk_prob.png, 0-255)",
    )
    p.add_argument("--logits", action="store_true", dest="probs", help=argparse.SUPPRESS)  # old name of --probs
    v = p.add_argument_group("video options")
    v.add_argument(
        "--window", type=int, default=None, metavar="T",
        help="video models: run consecutive windows of T frames (default: the whole video in one pass, official)",
    )
    v.add_argument("--max-frames", type=int, default=None, metavar="N", help="use the first N frames only")
    v.add_argument("--mp4", action="store_true", help="also write the overlays as MP4 (needs PyAV)")
    v.add_argument(
        "--submission", default=None, metavar="DIR",
        help="also write Ref-YouTube-VOS submission masks DIR/Annotations/<video-id>/<exp-id>/<frame>.png",
    )
    v.add_argument("--video-id", default=None, help="submission video id (default: the video's file/folder name)")
    v.add_argument(
        "--exp-id", default=None, action="append", metavar="ID",
        help="submission expression id, one per --text in order (default: 0, 1, ...)",
    )
    p.set_defaults(func=cmd_predict)

    x = sub.add_parser(
        "export",
        help="export a model to ONNX (runs with onnxruntime, without PyTorch)",
        description="Write OUT_DIR/: lavt.onnx (image encoder + decoder; batch and words dynamic, the input side "
        "fixed), text_encoder.onnx, tokenizer/, lavt_onnx.json; each graph is checked against PyTorch before "
        "the command succeeds. Run it with `lavt predict --backend onnxruntime --model OUT_DIR` or "
        "lavt.onnx_runtime.OnnxPredictor.",
    )
    x.add_argument("model", help="lavt model directory, official .pth checkpoint or hub repo id")
    x.add_argument("out_dir", help="output directory (must be new or empty unless --overwrite)")
    x.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default onnx)")
    x.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="the input side the graph is built for (default: the model's own)")
    x.add_argument("--frames", type=int, default=8, help="video models: the clip length of the graph (default 8)")
    x.add_argument("--int8", action="store_true", help="also write lavt.int8.onnx (int8 MatMul weights)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing export in OUT_DIR")
    x.set_defaults(func=_cmd_export)

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
    t.add_argument(
        "--overwrite", action="store_true",
        help="train.output_dir holds an earlier run: delete its files (checkpoints, models, logs) and start again",
    )
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
        f"evaluate both and write a report (CPU: {DEMO_MINUTES} on 2 cores)",
    )
    d.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="overrides of configs/demo.yaml (demo_video.yaml)"
    )
    d.add_argument(
        "--video", action="store_true",
        help="the video demo: 3D PWAM vs naive video LAVT vs a per-frame image LAVT on synthetic videos "
        f"({VIDEO_DEMO_MINUTES})",
    )
    d.add_argument(
        "--unified", action="store_true",
        help="the unified demo: a unified LAVT trained jointly on synthetic images and videos vs separate models "
        "(about 19 minutes on 2 cores)",
    )
    d.add_argument("--out", default=None, help="report folder (default: lavt-demo, lavt-video-demo, lavt-unified-demo)")
    d.add_argument("--overwrite", action="store_true", help="replace an earlier demo report in the --out folder")
    d.add_argument(
        "--data-root", default=None,
        help="where the synthetic set is cached (default: ~/.cache/lavt/synthetic-demo or synthetic-video-demo)"
    )
    d.add_argument(
        "--parallel", choices=("auto", "yes", "no"), default="auto",
        help="train the two runs side by side, one process each (auto: with 2+ CPU cores)",
    )
    d.set_defaults(func=_cmd_demo)

    sv = sub.add_parser(
        "serve",
        help="a web page and an HTTP API for a model (pip install 'lavt[app]')",
        description="Serve a model: the page at http://HOST:PORT/ (image or video, expressions one per line), "
        "the HTTP API at /predict, /model, /health (docs at /api/docs). Without --model: the model `lavt demo` "
        "left in ./lavt-demo.",
    )
    sv.add_argument("--model", default=None, help="lavt model directory, official .pth, or hub id (default: ./lavt-demo's)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=7860)
    sv.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    sv.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"],
        help="auto (default): bf16 on CPUs with native bf16 (AVX512-BF16/AMX), else fp32",
    )
    sv.add_argument("--max-upload-mb", type=float, default=25.0, help="largest accepted file (default 25)")
    sv.add_argument("--max-pixels", type=int, default=16_000_000, help="largest image / frame in pixels")
    sv.add_argument("--max-expressions", type=int, default=8, help="expressions per request")
    sv.add_argument("--max-video-frames", type=int, default=240)
    sv.add_argument("--max-video-seconds", type=float, default=60.0)
    sv.add_argument("--queue-size", type=int, default=4, help="requests that may wait while one runs; more get 503")
    sv.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait for its turn")
    sv.set_defaults(func=_cmd_serve)

    dd = sub.add_parser("data", help="inspect datasets on disk")
    dsub = dd.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dc = dsub.add_parser(
        "check", help="check a dataset's files against its published layout and split sizes (exit 1 on problems)"
    )
    dc.add_argument("name", help="refcoco, refcoco+, refcocog, ytvos, a2d, jhmdb or davis")
    dc.add_argument("root", help="the dataset's root folder (the refer data root for the RefCOCO family)")
    dc.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="also write the full report as JSON")
    dc.add_argument("--full", action="store_true", help="decode every image and annotation (slow), not a sample")
    dc.set_defaults(func=_cmd_data_check)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # section.key=value overrides may also come after options (lavt eval CFG --model M eval.split=val)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", LAVTWarning)
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
