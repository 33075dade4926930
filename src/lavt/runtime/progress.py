"""Progress bars (tqdm) that stay quiet where nobody watches them.

On a terminal they draw as usual; when stderr is redirected to a file or a pipe (batch jobs,
``2> log``), tqdm's automatic mode turns them off instead of writing thousands of redraws, and
the trainer's one line per epoch (printed with ``tqdm.write``) is what remains.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable[Any] | None = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, drawn only when ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)
