"""``lavt predict``: images (PyTorch or the torch-free ONNX runtime) and videos. Checks what the
user typed first (no torch import until they pass), then runs one predictor and writes the
prediction folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..io.inputs import model_source, validate_expressions
from ..io.outputs import check_output_folder, check_writable_folder


def image_size_flag(args: argparse.Namespace) -> int | None:
    if args.image_size is None:
        return None
    from ..config import check_image_size

    return check_image_size(args.image_size, "--image-size")


def _need_torch() -> None:
    """One line instead of an ImportError where only the torch-free runtime is installed."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ConfigError("PyTorch is not installed: the torch backend needs it (pip install torch); an ONNX export "
                          "runs without it: lavt predict --backend onnxruntime --model EXPORT_DIR")


def _precision_flag(args: argparse.Namespace) -> str | None:
    """--precision (--bf16 is its short form); None = the predictor's default for the device."""
    if args.bf16:
        if args.precision not in ("auto", "bf16"):
            raise ConfigError(f"--bf16 contradicts --precision {args.precision}")
        return "bf16"
    return None if args.precision == "auto" else args.precision


def _source_name(path: str) -> tuple[str, str]:
    """(output folder name, source as recorded) for an input path: the file or folder name,
    extension kept (photo.jpg and photo.png must not share a folder)."""
    p = Path(path).expanduser()
    resolved = p.resolve()
    return (resolved.name or "input"), str(resolved)


def cmd_predict(args: argparse.Namespace) -> int:
    if args.video is not None:
        return _cmd_predict_video(args)
    video_only = [
        flag for flag, value in (("--window", args.window), ("--max-frames", args.max_frames), ("--mp4", args.mp4),
                                 ("--submission", args.submission), ("--video-id", args.video_id),
                                 ("--exp-id", args.exp_id)) if value not in (None, False)
    ]
    if video_only:
        raise ConfigError(f"{video_only[0]} applies to videos only (--video PATH), not to --image")
    if args.out is None:
        raise ConfigError("give the output directory with --out DIR")
    # cheap checks first (no torch import yet): a typo costs a fraction of a second
    image_size = image_size_flag(args)
    texts = validate_expressions(args.text)
    from ..io.images import load_image

    image = load_image(args.image)
    name, source = _source_name(args.image)
    folder = Path(args.out) / name
    check_output_folder(folder, source)  # before inference: a bad --out must not cost a model run
    from ..io.outputs import save_prediction

    if args.backend == "onnxruntime":
        predictor = _onnx_predictor(args, image_size)
    else:
        if args.int8:
            raise ConfigError("--int8 runs the int8 ONNX graph: add --backend onnxruntime (and an export directory)")
        model_source(args.model)
        _need_torch()
        from ..predict import Predictor

        predictor = Predictor(
            args.model, device=args.device, precision=_precision_flag(args), image_size=image_size,
            exact=args.exact,
        )
    pred = predictor.predict(image, texts, return_probs=args.probs)
    info = {"model": args.model, "backend": args.backend, "image_size": predictor.image_size,
            "precision": predictor.precision}
    for path in save_prediction(pred, image, folder, source=source, info=info):
        print(path)
    return 0


def _onnx_predictor(args: argparse.Namespace, image_size: int | None):
    """The torch-free predictor of an export directory; flags of the PyTorch path are refused."""
    torch_only = [flag for flag, value in (("--precision", _precision_flag(args)), ("--exact", args.exact), ("--device", args.device))
                  if value not in (None, False)]
    if torch_only:
        raise ConfigError(f"{torch_only[0]} applies to the PyTorch backend, not to --backend onnxruntime")
    from ..onnx_runtime import OnnxPredictor

    predictor = OnnxPredictor(args.model, precision="int8" if args.int8 else "fp32")
    if image_size is not None and image_size != predictor.image_size:
        raise ConfigError(f"this ONNX export runs at {predictor.image_size} px only; export again with "
                          f"--image-size {image_size} for another size")
    return predictor


def _cmd_predict_video(args: argparse.Namespace) -> int:
    if args.backend == "onnxruntime" or args.int8:
        raise ConfigError("--backend onnxruntime / --int8 run image models only; predict videos with the torch backend")
    if args.out is None and args.submission is None:
        raise ConfigError("give an output directory: --out DIR and/or --submission DIR")
    if args.submission is None and (args.video_id is not None or args.exp_id is not None):
        raise ConfigError("--video-id / --exp-id name the --submission layout; add --submission DIR")
    if args.window is not None and args.window < 1:
        raise ConfigError(f"--window must be a positive number of frames, got {args.window}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be a positive number of frames, got {args.max_frames}")
    # cheap checks first (no torch import yet): inputs, outputs, then the model path
    image_size = image_size_flag(args)
    texts = validate_expressions(args.text)
    exp_ids = args.exp_id if args.exp_id is not None else [str(k) for k in range(len(texts))]
    if len(exp_ids) != len(texts):
        raise ConfigError(f"{len(exp_ids)} --exp-id values for {len(texts)} --text expressions; give one per expression")
    from ..io.videos import load_video

    source = Path(args.video)
    frames, names, fps = load_video(source, max_frames=args.max_frames)
    name, recorded = _source_name(args.video)
    folder = Path(args.out) / name if args.out is not None else None
    if folder is not None:
        check_output_folder(folder, recorded)
    if args.submission is not None:
        check_writable_folder(args.submission, "--submission")
    model_source(args.model)
    _need_torch()
    from ..data.ytvos import write_submission
    from ..io.outputs import save_video_prediction
    from ..predict import Predictor

    predictor = Predictor(
        args.model, device=args.device, precision=_precision_flag(args), image_size=image_size,
        exact=args.exact,
    )
    pred = predictor.predict_video(
        frames, texts, frame_names=names, fps=fps, window=args.window, return_probs=args.probs, progress=True
    )
    if folder is not None:
        info = {"model": args.model, "image_size": predictor.image_size, "precision": predictor.precision,
                "window": args.window}
        shown: list[Path] = []
        for path in save_video_prediction(pred, frames, folder, mp4=args.mp4, source=recorded, info=info):
            item = path.parent if path.suffix == ".png" else path  # one line per mask folder
            if item not in shown:
                shown.append(item)
                print(item)
    if args.submission is not None:
        video_id = args.video_id if args.video_id is not None else (source.stem or source.resolve().name)
        for k, exp_id in enumerate(exp_ids):
            paths = write_submission(args.submission, video_id, exp_id, names, pred.masks[k])
            print(paths[0].parent)
    return 0
