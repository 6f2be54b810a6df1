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


def family_class(parts: dict[str, str], pipeline: str) -> type[Family]:
    """The family of a pipeline (class name ``pipeline``) whose components have these class
    names (``parts``); ``InputError`` naming it if none fits."""
    for family in FAMILIES:
        if family.matches(parts):
            return family
    names = ", ".join(f.name for f in FAMILIES)
    raise InputError(f"{pipeline} is not of a model family otpc renders ({names})")


def family_for(pipe: Any) -> Family:
    """The family of a loaded pipeline, over it."""
    parts = {
        name: type(part).__name__ for name, part in pipe.components.items() if part is not None
    }
    return family_class(parts, type(pipe).__name__)(pipe)


__all__ = ["FAMILIES", "Conditioning", "Family", "cat", "family_class", "family_for"]
