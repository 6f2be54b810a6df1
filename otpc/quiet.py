"""Keep diffusers' and transformers' notices and loading bars off the user's console.

What they print while otpc loads a model or encodes prompts is not the user's business
(per-component loading bars, deprecation notices, the text a long prompt loses to
truncation, which otpc records itself as the ``truncated`` flag); real errors still raise.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within the block: diffusers and transformers log errors only and show no bars."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in (dlog, tlog)]
    for lib, _, _ in before:
        lib.set_verbosity(logging.ERROR)
        lib.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lib, level, bars in before:
            lib.set_verbosity(level)
            if bars:
                lib.enable_progress_bar()


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, logger ``name`` (e.g. MLflow's notes on creating its database)
    passes on ``level`` and above only."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
