"""Helpers the dataset tests share: a dataset built once per test module, a private copy of it
for tests that damage files, a stand-in tokenizer and the one-line error check."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


def built_once(build: Callable[[Path], Path], folder: str):
    """A module-scoped fixture: the dataset ``build(root)`` writes into a new temporary
    ``folder`` (building is the slow part, so tests that only read share one)."""

    @pytest.fixture(scope="module")
    def dataset_root(tmp_path_factory) -> Path:
        return build(tmp_path_factory.mktemp(folder))

    return dataset_root


def fresh_copy(root_fixture: str, folder: str):
    """A fixture: a copy (at ``tmp_path / folder``) of the dataset of the fixture named
    ``root_fixture``, for a test that edits or deletes files."""

    @pytest.fixture
    def dataset_copy(request, tmp_path) -> Path:
        return Path(shutil.copytree(request.getfixturevalue(root_fixture), tmp_path / folder))

    return dataset_copy


class FakeTokenizer:
    """Callable like lavt.models.text.Tokenizer: list of strings -> (input_ids, attention_mask),
    ``length`` ids each: 101, one id per word (1000 + its length), 102, zero padding."""

    length = 8

    def __call__(self, texts):
        ids = torch.zeros(len(texts), self.length, dtype=torch.int64)
        mask = torch.zeros(len(texts), self.length, dtype=torch.int64)
        for i, t in enumerate(texts):
            toks = [101] + [1000 + len(w) for w in t.split()][: self.length - 2] + [102]
            ids[i, : len(toks)] = torch.tensor(toks)
            mask[i, : len(toks)] = 1
        return ids, mask


def one_line(err: pytest.ExceptionInfo, *parts: object) -> str:
    """The raised error's message, checked to be one line that names every one of ``parts``."""
    msg = str(err.value)
    assert "\n" not in msg
    for p in parts:
        assert str(p) in msg, (p, msg)
    return msg
