"""A content-addressed store of rendered frames (PNG), safe to share between runs.

A frame's key hashes everything that decides its pixels. Entries are written atomically
and verified on read: a truncated or corrupt PNG is reported, removed and rendered again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from otpc.atomic import write_with

log = logging.getLogger(__name__)


def frame_key(context: str, conditioning: Sequence[torch.Tensor | None], latent_seed: int) -> str:
    """Key of the frame rendered from ``conditioning`` with noise ``latent_seed``.

    ``context`` describes the model and every render setting (see ``Renderer.context``);
    ``conditioning`` is the embedding (and SDXL's pooled vector).
    """
    h = hashlib.sha256()
    h.update(context.encode())
    h.update(str(latent_seed).encode())
    for tensor in conditioning:
        if tensor is not None:
            h.update(str(tuple(tensor.shape)).encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def read_png(path: Path) -> np.ndarray:
    """Decode a PNG fully; raises ``ValueError`` naming the file if it is damaged."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{path}: damaged or truncated PNG ({err})") from err


class FrameCache:
    """Frames stored as ``root/ab/abcdef....png``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the frame ``key`` is stored (whether or not it exists)."""
        return self.root / key[:2] / f"{key}.png"

    def has(self, key: str) -> bool:
        """True if a valid frame is stored; a damaged entry is removed and reported."""
        path = self.path(key)
        if not path.exists():
            return False
        try:
            read_png(path)
        except ValueError as err:
            log.warning("corrupt cache entry, rendering it again: %s", err)
            path.unlink(missing_ok=True)
            return False
        return True

    def put(self, key: str, image: np.ndarray) -> None:
        """Store an (H, W, 3) uint8 image; encoded into a temporary file, then renamed, so
        an error or crash while writing leaves no entry."""
        write_with(self.path(key), lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))

    def get(self, key: str) -> np.ndarray:
        """The stored frame; ``ValueError`` if it is damaged."""
        return read_png(self.path(key))
