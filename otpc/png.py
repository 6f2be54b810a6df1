"""PNG files whose bytes depend only on their pixels and text, on every machine.

Pillow compresses with zlib-ng, whose output may differ between processors (its authors
call that by design); this writer filters every row with Paeth and compresses with the
standard library's zlib at a fixed level, so the same image gives the same file, and DVC the
same hash, everywhere. Reading goes through Pillow.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from otpc.errors import InputError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth_filtered(image: np.ndarray) -> np.ndarray:
    """Rows filtered with PNG's Paeth predictor (filter type 4), each led by its type byte."""
    h, w, c = image.shape
    x = image.reshape(h, w * c).astype(np.int16)
    left = np.zeros_like(x)
    left[:, c:] = x[:, :-c]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    up_left = np.zeros_like(x)
    up_left[1:, c:] = x[:-1, :-c]
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    rows = ((x - predictor) % 256).astype(np.uint8)
    return np.concatenate([np.full((h, 1), 4, np.uint8), rows], axis=1)


def encode(image: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of a uint8 image (H, W), (H, W, 3) or (H, W, 4), with ``text`` as tEXt chunks."""
    if image.dtype != np.uint8:
        raise TypeError(f"PNG pixels must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in COLOR_TYPES:
        raise ValueError(f"PNG image must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    h, w, c = image.shape
    header = struct.pack(">IIBBBBB", w, h, 8, COLOR_TYPES[c], 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    for key, value in sorted((text or {}).items()):
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
    data = zlib.compress(_paeth_filtered(np.ascontiguousarray(image)).tobytes(), 6)
    chunks += [_chunk(b"IDAT", data), _chunk(b"IEND", b"")]
    return SIGNATURE + b"".join(chunks)


IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of every PNG: length 0, type, CRC


def decode(data: bytes, name: object = "PNG") -> tuple[np.ndarray, dict[str, str]]:
    """(RGB pixels (H, W, 3) uint8, tEXt chunks) of PNG ``data``; ``InputError`` naming
    ``name`` (e.g. the file) if it is damaged. A file must end with its IEND chunk: Pillow
    reads one cut short after its image data without a word."""
    if not data.endswith(IEND):
        raise InputError(f"{name}: damaged or truncated PNG (it does not end with IEND)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            text = dict(getattr(img, "text", {}))
            return np.asarray(img.convert("RGB")), text
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{name}: damaged or truncated PNG ({err})") from err


def read(path: Path) -> np.ndarray:
    """The RGB pixels of the PNG file ``path``; ``InputError`` naming it if it is damaged."""
    return decode(path.read_bytes(), path)[0]
