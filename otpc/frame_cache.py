"""A content-addressed store of rendered frames (PNG), safe to share between runs and
machines.

A frame's key hashes everything that decides its pixels. Each entry records, in a PNG text
chunk, its key and a digest of its pixels; an entry is used only if both match, so a
truncated or corrupt file, or another valid frame copied over it, is reported, removed and
rendered again. Entries are written atomically: a local file is written beside its place
and renamed; an object store (``s3://bucket/otpc-frames``, GCS, Azure) takes an object whole
or not at all, in one request; at any other fsspec URL an entry is written under a temporary
key and moved onto its own. No reader ever sees half of one. Workers on several machines
may write the same entry: its bytes are the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from otpc import png
from otpc.atomic import write_bytes
from otpc.errors import InputError

log = logging.getLogger(__name__)
CHUNK = "otpc-frame"  # PNG tEXt keyword: "<key> <pixel digest>"
# Object stores where an object appears whole or not at all: an entry is put in one request.
ATOMIC_PUTS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


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


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL (``protocol://...``) rather than a local path."""
    return "://" in str(location)


class FrameCache:
    """Frames stored as ``root/ab/abcdef....png``; ``root`` is a local folder or a URL that
    fsspec can write (``s3://bucket/prefix``; S3 endpoints and credentials come from the
    usual environment, e.g. ``AWS_ENDPOINT_URL_S3``)."""

    def __init__(self, root: str | Path) -> None:
        self.url = is_url(root)
        self.root: Any = str(root).rstrip("/") if self.url else Path(root)
        self.atomic_puts = False
        if self.url:
            import fsspec

            self.fs, _ = fsspec.core.url_to_fs(self.root)
            protocol = self.fs.protocol
            names = {protocol} if isinstance(protocol, str) else set(protocol)
            self.atomic_puts = bool(names & ATOMIC_PUTS)

    def path(self, key: str) -> Any:
        """Where the frame ``key`` is stored (whether or not it exists): a ``Path``, or for
        a URL cache its URL."""
        if self.url:
            return f"{self.root}/{key[:2]}/{key}.png"
        return self.root / key[:2] / f"{key}.png"

    def _load(self, key: str) -> bytes:
        """The entry's bytes; ``FileNotFoundError`` if absent."""
        if self.url:
            return bytes(self.fs.cat_file(self.path(key)))
        return self.path(key).read_bytes()

    def remove(self, key: str) -> None:
        """Remove the entry ``key`` if there is one."""
        if self.url:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path(key))
        else:
            self.path(key).unlink(missing_ok=True)

    def read(self, key: str) -> tuple[bytes, np.ndarray]:
        """The stored file and its pixels, verified; ``InputError`` naming the file if it is
        damaged or holds pixels other than those recorded for ``key``;
        ``FileNotFoundError`` if absent."""
        path = self.path(key)
        data = self._load(key)
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
            self.remove(key)
            return False
        return True

    def put(self, key: str, image: np.ndarray) -> None:
        """Store an (H, W, 3) uint8 image, written under a temporary name and moved onto its
        own, so an error or crash while writing leaves no entry."""
        data = png.encode(image, {CHUNK: f"{key} {pixel_digest(image)}"})
        if not self.url:
            write_bytes(self.path(key), data)
            return
        target = self.path(key)
        if self.atomic_puts:
            self.fs.pipe_file(target, data)
            return
        temporary = f"{target.rsplit('/', 1)[0]}/.{key}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.pipe_file(temporary, data)
            self.fs.mv(temporary, target)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(temporary)
            raise

    def get(self, key: str) -> np.ndarray:
        """The stored frame's pixels, verified (see ``read``)."""
        return self.read(key)[1]
