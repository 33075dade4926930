"""No file lavt loads can run code; checkpoints shaped like the official ones still load; writes
are atomic. A malicious pickle (``__reduce__`` -> write a marker file) is fed to every entry point
that reads a torch file: the marker must never appear and the error must be one line."""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lavt.apps.cli import main  # noqa: E402
from lavt.config import LAVTConfig, TextEncoderConfig  # noqa: E402
from lavt.engine.checkpoint import load_training_checkpoint  # noqa: E402
from lavt.errors import CheckpointError  # noqa: E402
from lavt.io.torch_files import load_torch_file, save_torch_atomic  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402
from lavt.weights.inflate import inflate_image_lavt  # noqa: E402
from lavt.weights.official import load_official_checkpoint  # noqa: E402
from lavt.weights.swin import init_backbone_from_swin, init_backbone_from_video_swin  # noqa: E402
from lavt.weights.unified import init_unified  # noqa: E402

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity" / "lavt_ris_tiny_w7.pth"


class _Payload:
    """Pickles as a call of ``function(argument)``: what a booby-trapped checkpoint does."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return (self.function, (self.argument,))


def write_malicious(path: Path, marker: Path, kind: str) -> Path:
    """A .pth whose loading (with weights_only=False) creates ``marker``."""
    if kind == "system":  # the classic: os.system in a torch.save'd dict beside real tensors
        state = {"model": {"backbone.patch_embed.proj.weight": torch.zeros(1)}, "x": _Payload(os.system, f"touch {marker}")}
        torch.save(state, path)
    elif kind == "exec":  # builtins.exec, whole file is the payload (torch zip format)
        torch.save(_Payload(exec, f"open({str(marker)!r}, 'w').close()"), path)
    elif kind == "legacy":  # a plain pickle, not torch's zip format (the legacy loader path)
        with open(path, "wb") as f:
            pickle.dump({"model": _Payload(os.system, f"touch {marker}")}, f)
    else:
        raise AssertionError(kind)
    return path


KINDS = ("system", "exec", "legacy")


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def tiny_config(**extra) -> LAVTConfig:
    return LAVTConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=7, lang_dim=384, **extra)


def one_line_cli_error(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("lavt: error:"), err
    return err[0]


@pytest.mark.parametrize("kind", KINDS)
def test_the_payload_is_real(tmp_path, marker, kind):
    # the files below do run code when loaded the unsafe way: the other tests can fail
    path = write_malicious(tmp_path / "evil.pth", marker, kind)
    try:
        torch.load(path, weights_only=False)
    except Exception:
        pass
    assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_python_entry_points_refuse_code(tmp_path, marker, kind):
    evil = write_malicious(tmp_path / "evil.pth", marker, kind)
    image_model = LAVT.from_config(tiny_config())
    video_model = LAVT.from_config(tiny_config(video=True, temporal_window=2))
    unified_model = LAVT.from_config(tiny_config(video=True, temporal_window=2, unified=True))
    calls = {
        "load_official_checkpoint": lambda: load_official_checkpoint(evil),
        "load_torch_file": lambda: load_torch_file(evil),
        "load_training_checkpoint": lambda: load_training_checkpoint(evil),
        "init_backbone_from_swin": lambda: init_backbone_from_swin(image_model, evil),
        "init_backbone_from_video_swin": lambda: init_backbone_from_video_swin(video_model, evil),
        "inflate_image_lavt": lambda: inflate_image_lavt(video_model, evil),
        "init_unified": lambda: init_unified(unified_model, image_model=evil),
    }
    for name, call in calls.items():
        with pytest.raises(CheckpointError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message, (name, message)
        if kind == "system":  # torch's zip format: the refused function is named
            assert "refusing to load" in message and "system" in message, (name, message)
        else:  # a bare pickle is not a torch file: the weights-only unpickler stops at its first opcode
            assert "refusing to load" in message or "not a readable torch file" in message, (name, message)
        assert not marker.exists(), f"{name} ran the payload"


def test_from_pretrained_with_a_pickle_for_weights(tmp_path, marker):
    directory = LAVT.from_config(tiny_config()).save_pretrained(tmp_path / "m")
    write_malicious(directory / "model.safetensors", marker, "system")
    with pytest.raises(CheckpointError, match="cannot read") as info:
        LAVT.from_pretrained(directory)
    assert "\n" not in str(info.value) and not marker.exists()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from test_refer import build_fixture

    return build_fixture(tmp_path_factory.mktemp("refer"))


def train_overrides(data_root: Path, out: Path) -> list[str]:
    return [
        "model.embed_dim=16", "model.depths=[1,1,1,1]", "model.num_heads=[1,1,1,1]", "model.window_size=7",
        "model.lang_dim=384", "model.text_encoder={name_or_path: minilm}", f"data.root={data_root}",
        "data.dataset=refcoco", "data.synthetic=null",
        "data.image_size=32", "data.num_workers=0", f"train.output_dir={out}", "train.epochs=1",
        "train.batch_size=2", "train.text_encoder_layers=none", "eval.batch_size=4",
    ]


@pytest.mark.parametrize("kind", ["system", "legacy"])
def test_cli_entry_points_refuse_code(tmp_path, marker, capsys, data_root, kind):
    evil = write_malicious(tmp_path / "evil.pth", marker, kind)
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_malicious(run_dir / "last.pt", marker, kind)
    args = train_overrides(data_root, run_dir)
    commands = {
        "predict": ["predict", "--model", evil, "--image", image, "--text", "a", "--out", tmp_path / "o"],
        "convert": ["convert", evil, tmp_path / "converted"],
        "eval": ["eval", "demo", *train_overrides(data_root, tmp_path / "e")[6:], "--model", evil],
        "eval (official .pth)": ["eval", "demo", f"data.root={data_root}", "data.dataset=refcoco", "--model", evil],
        "train --resume (file)": ["train", "demo", *args, "--resume", run_dir / "last.pt"],
        "train --resume (dir)": ["train", "demo", *args, "--resume", run_dir],
        "train.init_from": ["train", "demo", *train_overrides(data_root, tmp_path / "r1"), f"train.init_from={evil}"],
        "train.init_swin": ["train", "demo", *train_overrides(data_root, tmp_path / "r2"), f"train.init_swin={evil}"],
    }
    for name, argv in commands.items():
        line = one_line_cli_error(capsys, argv)
        assert "refusing to load" in line or (kind == "legacy" and "not a readable torch file" in line), (name, line)
        assert not marker.exists(), f"`lavt {name}` ran the payload"
    assert not (tmp_path / "converted").exists() and not (tmp_path / "o").exists()


def test_official_shaped_checkpoint_with_args_optimizer_and_scheduler_loads(tmp_path):
    """Official LAVT-RIS/RS files: {'model', 'optimizer', 'epoch', 'args' (argparse.Namespace), 'lr_scheduler'}."""
    if not PARITY.is_file():
        pytest.skip(f"{PARITY} not available")
    model_sd = torch.load(PARITY, map_location="cpu", weights_only=True)["model"]
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}], lr=5e-5)
    params[0].sum().backward()
    params[1].sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - it / 100) ** 0.9)
    args = argparse.Namespace(
        model="lavt", swin_type="base", window12=True, lr=5e-05, epochs=40, batch_size=8, img_size=480,
        pretrained_swin_weights="./pretrained_weights/swin_base_patch4_window12_384_22k.pth", fusion_drop=0.0,
        splits=["val", "testA"], ck_bert="bert-base-uncased", resume="", local_rank=0,
    )
    path = tmp_path / "model_best_refcoco.pth"
    torch.save({"model": model_sd, "optimizer": optimizer.state_dict(), "epoch": 39, "args": args,
                "lr_scheduler": scheduler.state_dict()}, path)
    loaded = load_torch_file(path)
    assert isinstance(loaded["args"], argparse.Namespace) and loaded["args"].window12 is True
    assert loaded["lr_scheduler"]["lr_lambdas"] == [None, None] and loaded["epoch"] == 39
    model = load_official_checkpoint(path)
    plain = load_official_checkpoint(PARITY)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    assert model.preprocessing is not None and model.preprocessing.image_size == 480  # official input size


def test_a_namespace_cannot_smuggle_code(tmp_path, marker):
    """argparse.Namespace is allowed, but what it holds is still checked."""
    path = tmp_path / "ns.pth"
    torch.save({"model": {}, "args": argparse.Namespace(x=_Payload(os.system, f"touch {marker}"))}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_torch_file(path)
    assert not marker.exists()


def test_unreadable_files_are_one_line_and_not_called_unsafe(tmp_path):
    cases = {
        "empty.pth": b"",
        "text.pth": b"just some text\n",
        "truncated.pth": None,  # a real checkpoint cut in half
    }
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.randn(64, 64)}}, good)
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data if data is not None else good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(CheckpointError, match="cannot read") as info:
            load_torch_file(path)
        assert "\n" not in str(info.value) and "refusing" not in str(info.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torch_file(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_torch_file(tmp_path)


def test_atomic_save_leaves_no_temporary_file_and_keeps_the_old_one_on_failure(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_torch_atomic({"a": torch.ones(2)}, path)
    save_torch_atomic({"a": torch.zeros(2)}, path)
    assert list(tmp_path.iterdir()) == [path]
    assert torch.equal(load_torch_file(path)["a"], torch.zeros(2))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_torch_atomic({"a": torch.ones(2), "b": Unpicklable()}, path)
    assert list(tmp_path.iterdir()) == [path]  # the failed save left nothing behind
    assert torch.equal(load_torch_file(path)["a"], torch.zeros(2))  # and the old file is intact


def test_model_directory_without_tokenizer_files_is_an_error(tmp_path):
    model = LAVT.from_config(tiny_config(text_encoder=TextEncoderConfig("minilm")))
    directory = model.save_pretrained(tmp_path / "m")
    LAVT.from_pretrained(directory)  # complete: loads
    for name in ("tokenizer.json", "vocab.txt"):
        (directory / "text_encoder" / name).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="no tokenizer vocabulary"):
        LAVT.from_pretrained(directory)
