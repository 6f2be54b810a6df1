"""Model families: one class per kind of diffusers pipeline, each saying how that pipeline
encodes prompts, guides, shapes latents and decodes (``otpc.families.base.Family``)."""

from __future__ import annotations

from typing import Any

from otpc.errors import InputError
from otpc.families.base import Conditioning, Family, cat
from otpc.families.flux import FluxFamily
from otpc.families.sd3 import SD3Family
from otpc.families.unet import UNetFamily

FAMILIES: tuple[type[Family], ...] = (UNetFamily, SD3Family, FluxFamily)


def family_for(pipe: Any) -> Family:
    """The family of a loaded pipeline; ``InputError`` naming the pipeline if none fits."""
    for family in FAMILIES:
        if family.matches(pipe):
            return family(pipe)
    names = ", ".join(f.name for f in FAMILIES)
    raise InputError(f"{type(pipe).__name__} is not a model family otpc renders ({names})")


__all__ = ["FAMILIES", "Conditioning", "Family", "cat", "family_for"]
