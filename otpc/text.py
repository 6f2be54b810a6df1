"""Text: reading a UTF-8 file, what counts as an empty prompt, how to quote a long one."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from otpc.errors import OtpcError


def is_blank(text: str | None) -> bool:
    """True if ``text`` shows nothing: empty, or only spaces, control and format characters
    (zero-width space, joiners, BOM) and combining marks."""
    return text is None or all(unicodedata.category(ch)[0] in "CZM" for ch in text)


def shorten(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters for messages (a prompt may be very long)."""
    return text if len(text) <= width else f"{text[: width - 3]}..."


def read_utf8(path: Path, error: type[OtpcError]) -> str:
    """The text of ``path`` (a leading BOM dropped); ``error`` naming the file, and the line of
    the first invalid byte, if it is missing or not UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise error(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from None
