"""The benchmark scripts' shared command line: run options, defaults, checks and child dispatch."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


# command line
# =========================================================================================
def make_parser(doc: str, configs_help: str | None = None) -> argparse.ArgumentParser:
    """The script's parser, described by its docstring's first paragraph; with ``configs_help``, ``--configs``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    if configs_help:
        ap.add_argument("--configs", default=None, help=configs_help)
    return ap


def add_run_options(
    ap: argparse.ArgumentParser, *, runs: str, repeats: int | None, repeats_help: str, seed: bool = True
) -> None:
    """The options every timing script has; ``runs`` names what one run is ("forward", "step")."""
    ap.add_argument("--warmup", type=int, default=1, help=f"untimed {runs}s before timing (default 1)")
    ap.add_argument("--repeats", type=int, default=repeats, help=f"timed {runs}s; the median is reported ({repeats_help})")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--text-len", type=int, default=20, help="words (tokens) per expression (default 20)")
    ap.add_argument("--real-words", type=int, default=12, help="unmasked words (tokens) per expression (default 12)")
    if seed:
        ap.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and dropout (default 0)")
    ap.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def add_interleave_options(ap: argparse.ArgumentParser) -> None:
    """``--separate`` (the old timing: each configuration alone, one after the other) and the group child's flag."""
    ap.add_argument(
        "--separate", action="store_true",
        help="time every configuration alone in its own process, one after the other (default: the configurations "
        "compared take turns in one process, the order rotated every round; memory is measured alone either way)",
    )  # fmt: skip
    ap.add_argument("--child-group", type=lambda names: names.split(","), default=None, help=argparse.SUPPRESS)


def fill_defaults(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Options left unset take ``defaults`` (which differ with --quick)."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def check_options(ap: argparse.ArgumentParser, args: argparse.Namespace, positive: str, configs: Any = None) -> None:
    """The checks every timing script needs; ``positive`` names options (dests) that must be >= 1.

    With ``configs`` (the known names), ``--configs a,b`` becomes the list ``args.configs``, and a
    child must run exactly one of them.
    """
    if configs is not None:
        args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in args.configs if c not in configs]
        if unknown or not args.configs:
            ap.error(f"--configs: unknown {unknown or 'empty list'}; choose from {','.join(configs)}")
        if args.child and len(args.configs) != 1:
            ap.error("--child runs exactly one configuration")
    if args.repeats < 1 or args.warmup < 0:
        ap.error("need --repeats >= 1 and --warmup >= 0")
    if not 1 <= args.real_words <= args.text_len:
        ap.error("--real-words must be between 1 and --text-len")
    for name in positive.split():
        value = getattr(args, name)
        if min(value if isinstance(value, list) else [value]) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive")


def dispatch(args: argparse.Namespace, run_parent: Callable[[argparse.Namespace], int], **children: Any) -> int:
    """Run the child a hidden flag asks for (``child=run_child``: ``--child``), else the parent; the exit code."""
    for flag, run_child in children.items():
        if getattr(args, flag):
            run_child(args)
            return 0
    return run_parent(args)


# =========================================================================================
