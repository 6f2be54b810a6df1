"""A content-addressed store of rendered frames (PNG), safe to share between runs.

A frame's key hashes everything that decides its pixels. Each entry records, in a PNG text
chunk, its key and a digest of its pixels; an entry is used only if both match, so a
truncated or corrupt file, or another valid frame copied over it, is reported, removed and
rendered again. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from otpc import png
from otpc.atomic import write_bytes
from otpc.errors import InputError

log = logging.getLogger(__name__)
CHUNK = "otpc-frame"  # PNG tEXt keyword: "<key> <pixel digest>"


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


def pixel_digest(image: np.ndarray) -> str:
    """sha256 of an image's shape and pixel bytes."""
    h = hashlib.sha256(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


class FrameCache:
    """Frames stored as ``root/ab/abcdef....png``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the frame ``key`` is stored (whether or not it exists)."""
        return self.root / key[:2] / f"{key}.png"

    def read(self, key: str) -> tuple[bytes, np.ndarray]:
        """The stored file and its pixels, verified; ``InputError`` naming the file if it is
        damaged or holds pixels other than those recorded for ``key``;
        ``FileNotFoundError`` if absent."""
        path = self.path(key)
        data = path.read_bytes()
        pixels, text = png.decode(data, path)
        recorded = text.get(CHUNK, "").split()
        if recorded[:1] != [key]:
            raise InputError(
                f"{path}: holds the frame of another key "
                f"({recorded[0] if recorded else 'none recorded'})"
            )
        if recorded[1:] != [pixel_digest(pixels)]:
            raise InputError(f"{path}: its pixels are not the ones recorded for its key")
        return data, pixels

    def has(self, key: str) -> bool:
        """True if a valid frame is stored; a damaged or foreign entry is removed and reported."""
        try:
            self.read(key)
        except FileNotFoundError:
            return False
        except InputError as err:
            log.warning("bad cache entry, rendering it again: %s", err)
            self.path(key).unlink(missing_ok=True)
            return False
        return True

    def put(self, key: str, image: np.ndarray) -> None:
        """Store an (H, W, 3) uint8 image, written to a temporary file and renamed, so an
        error or crash while writing leaves no entry."""
        write_bytes(self.path(key), png.encode(image, {CHUNK: f"{key} {pixel_digest(image)}"}))

    def get(self, key: str) -> np.ndarray:
        """The stored frame's pixels, verified (see ``read``)."""
        return self.read(key)[1]
