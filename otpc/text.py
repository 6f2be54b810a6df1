"""Prompt text: what counts as empty, and how to show a long one in a message."""

from __future__ import annotations

import unicodedata


def is_blank(text: str | None) -> bool:
    """True if ``text`` shows nothing: empty, or only spaces, control and format characters
    (zero-width space, joiners, BOM) and combining marks."""
    return text is None or all(unicodedata.category(ch)[0] in "CZM" for ch in text)


def shorten(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters for messages (a prompt may be very long)."""
    return text if len(text) <= width else f"{text[: width - 3]}..."
