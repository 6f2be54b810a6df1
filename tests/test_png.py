"""otpc's PNG writer: exact pixels, text records, and bytes that depend only on the content."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from otpc import png


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (64, 48, 3), (9, 11, 4), (6, 6)])
def test_pillow_reads_back_the_exact_pixels(shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = png.encode(image, {"otpc-frame": "key digest", "b": "2"})
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        np.testing.assert_array_equal(np.asarray(img).reshape(shape), image)
        assert img.text == {"otpc-frame": "key digest", "b": "2"}
    pixels, text = png.decode(data)
    assert pixels.shape == (*shape[:2], 3) and text["b"] == "2"


def test_bytes_depend_only_on_pixels_and_text() -> None:
    """The same content gives the same file in any process (no hash seeds, times or versions)."""
    code = (
        "import numpy as np, hashlib; from otpc import png; "
        "x = np.arange(3 * 40 * 30, dtype=np.uint32).reshape(40, 30, 3).astype(np.uint8); "
        "print(hashlib.sha256(png.encode(x, {'k': 'v', 'a': 'b'})).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(digests) == 1
    x = np.zeros((4, 4, 3), np.uint8)
    assert png.encode(x, {"k": "v", "a": "b"}) == png.encode(x, {"a": "b", "k": "v"})


def test_damaged_data_names_its_source() -> None:
    data = png.encode(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"frame\.png: damaged or truncated PNG"):
        png.decode(data[: len(data) // 2], "frame.png")
    # cut after its pixels and text: Pillow alone would read it, pixels intact
    with pytest.raises(ValueError, match=r"frame\.png: damaged or truncated PNG \(it does not"):
        png.decode(data[:-20], "frame.png")
    with pytest.raises(TypeError, match="uint8"):
        png.encode(np.zeros((2, 2, 3), np.float32))
