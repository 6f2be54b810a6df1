"""Seeds derived from names, so that no result depends on row order, platform or run."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts``: sha256 of their ``str`` joined by ``/``.

    Stable across runs, platforms and orderings; e.g. ``derive_seed(0, "latent", pair_id)``.
    """
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def latent_seed(seed: int, pair_id: str) -> int:
    """The noise seed of every frame of every path of a pair."""
    return derive_seed(seed, "latent", pair_id)


def coupling_seed(seed: int, pair_id: str, method: str, replicate: int) -> int:
    """The seed of a pair's coupling by ``method`` (replicate ``replicate``)."""
    return derive_seed(seed, pair_id, method, replicate)
