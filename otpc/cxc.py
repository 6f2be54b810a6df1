"""Crisscrossed Captions (CxC) STS pairs with their caption text.

CxC's ``sts_{split}.csv`` rates pairs of MS-COCO captions named by ids such as
``COCO_val2014:sentid:190268``; the number is the ``sentid`` of Karpathy's split file
``dataset_coco.json`` (inside ``caption_datasets.zip``), which holds the text. That file is
read from ``data.captions`` (the JSON or the zip), or downloaded once from ``CAPTIONS_URL``
into otpc's cache. Every caption id of the selected rows must be found: a missing one is an
error naming it, never a silent drop.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import polars as pl

from otpc.atomic import atomic_path
from otpc.errors import InputError
from otpc.params import DataParams
from otpc.project import otpc_home
from otpc.text import is_blank

CAPTIONS_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
CAPTIONS_MEMBER = "dataset_coco.json"
CXC_DIR = Path("data/cxc")
STS_COLUMNS = ("caption1", "caption2", "agg_score", "sampling_method")
SAMPLING_METHODS = ("c2c_cocaption", "c2c_isim")
_ID = re.compile(r"^COCO_(?:train|val)2014:sentid:(\d+)$")


def sentid(caption_id: str) -> int:
    """The Karpathy ``sentid`` in a CxC caption id; a malformed id is an error naming it."""
    match = _ID.match(caption_id)
    if match is None:
        raise InputError(
            f"CxC caption id {caption_id!r} is not of the form 'COCO_val2014:sentid:<number>'"
        )
    return int(match.group(1))


def cxc_pair_id(caption_a: str, caption_b: str) -> str:
    """A pair id from the two caption ids, the same for (A, B) and (B, A)."""
    lo, hi = sorted((sentid(caption_a), sentid(caption_b)))
    return f"cxc-{lo}-{hi}"


def cached_captions_path() -> Path:
    """Where a downloaded ``caption_datasets.zip`` is kept (under ``$OTPC_HOME``)."""
    return otpc_home() / "data" / "caption_datasets.zip"


def _offline() -> bool:
    return os.environ.get("OTPC_OFFLINE", "0").lower() not in ("", "0", "false", "no")


def download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` atomically (a partial download never lands at ``dest``).

    With ``OTPC_OFFLINE=1``, or when the fetch fails, the error names the URL and the place
    to put the file by hand.
    """
    how = (
        f"Download {url} on a machine with network access and put it at {dest}, or set "
        "data.captions to its path (the zip or the dataset_coco.json inside it)"
    )
    if _offline():
        raise InputError(
            f"Karpathy's captions are not available offline (OTPC_OFFLINE is set). {how}."
        )
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(response, fh, length=1 << 20)
            size, promised = tmp.stat().st_size, response.headers.get("Content-Length")
            if promised is not None and size != int(promised):
                raise OSError(f"the connection ended after {size} of {promised} bytes")
            if not zipfile.is_zipfile(tmp):
                raise OSError("what arrived is not a zip file")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise InputError(f"could not download Karpathy's captions ({err}). {how}.") from err
    return dest


def captions_file(data: DataParams) -> Path:
    """The captions file: ``data.captions`` if given, else the cache (downloaded if absent)."""
    if data.captions:
        path = Path(data.captions)
        if not path.is_file():
            raise InputError(
                f"data.captions: {path} not found; it should be Karpathy's "
                f"caption_datasets.zip (or its {CAPTIONS_MEMBER}) from {CAPTIONS_URL}"
            )
        return path
    cached = cached_captions_path()
    return cached if cached.is_file() else download(CAPTIONS_URL, cached)


@contextmanager
def _open_json(path: Path) -> Iterator[IO[bytes]]:
    """The Karpathy JSON as a byte stream, from the JSON itself or from the zip."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            yield fh
        return
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if Path(n).name == CAPTIONS_MEMBER]
        if not names:
            raise InputError(f"{path}: the zip has no {CAPTIONS_MEMBER}")
        with archive.open(names[0]) as fh:
            yield fh


def load_captions(path: Path, wanted: set[int]) -> dict[int, str]:
    """``sentid -> raw caption`` (whitespace stripped) for the ``wanted`` sentids.

    Sentences are filtered while the JSON is parsed: of the ~400 MB file only its text and
    the wanted captions are held, not its 600k sentence objects and their token lists.
    """
    found: dict[int, str] = {}
    sentences = 0

    def keep(obj: dict) -> dict | None:
        nonlocal sentences
        if "sentid" in obj and "raw" in obj:
            sentences += 1
            if obj["sentid"] in wanted:
                found[obj["sentid"]] = str(obj["raw"]).strip()
            return None
        return obj

    try:
        with _open_json(path) as fh:
            doc = json.load(fh, object_hook=keep)
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not readable as Karpathy's {CAPTIONS_MEMBER} ({err})") from err
    if not isinstance(doc, dict) or "images" not in doc or not sentences:
        raise InputError(
            f"{path}: not Karpathy's caption format "
            '({"images": [{"sentences": [{"sentid": .., "raw": ..}]}]})'
        )
    return found


def read_sts(path: Path, sampling_method: str) -> pl.DataFrame:
    """The STS rows of ``path`` for ``sampling_method`` (``both``: all rows)."""
    try:
        df = pl.read_csv(path, infer_schema=False)
    except FileNotFoundError as err:
        raise InputError(f"{path}: CxC STS file not found") from err
    missing = [c for c in STS_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; columns are {df.columns}")
    unknown = sorted(set(df["sampling_method"].to_list()) - set(SAMPLING_METHODS))
    if unknown:
        raise InputError(f"{path}: unknown sampling_method value(s) {unknown}")
    df = df.with_row_index("line", offset=2).with_columns(pl.col("line").cast(pl.Int64))
    if sampling_method != "both":
        df = df.filter(pl.col("sampling_method") == sampling_method)
    if df.is_empty():
        raise InputError(f"{path}: no rows with sampling_method {sampling_method!r}")
    return df.with_columns(pl.col("agg_score").cast(pl.Float64, strict=False))


def read_cxc_pairs(data: DataParams, folder: Path = CXC_DIR) -> pl.DataFrame:
    """CxC STS pairs of ``data.split`` as ``pair_id, prompt_a, prompt_b, score,
    sampling_method``.

    Rows are filtered by ``data.sampling_method``; a pair listed as both (A, B) and (B, A)
    is kept once, in its first orientation and with its first score.
    """
    path = folder / f"sts_{data.split}.csv"
    sts = read_sts(path, data.sampling_method)
    rows: dict[str, tuple[str, str, float, int, str]] = {}
    columns = ("caption1", "caption2", "agg_score", "line", "sampling_method")
    for a, b, score, line, method in sts.select(columns).iter_rows():
        if score is None:
            raise InputError(f"{path}: line {line}: pair ({a}, {b}) has no numeric agg_score")
        rows.setdefault(cxc_pair_id(a, b), (a, b, score, line, method))
    ids = {sentid(c): c for a, b, *_ in rows.values() for c in (a, b)}
    source = captions_file(data)
    text = load_captions(source, set(ids))
    absent = sorted(ids.keys() - text.keys())
    if absent:
        shown = ", ".join(ids[i] for i in absent[:5])
        raise InputError(
            f"{source}: {len(absent)} caption id(s) of {path} not found: {shown}"
            f"{', ...' if len(absent) > 5 else ''}; is it Karpathy's "
            f"{CAPTIONS_MEMBER}?"
        )
    empty = [ids[i] for i in sorted(ids) if is_blank(text[i])]
    if empty:
        raise InputError(f"{source}: caption {empty[0]} is empty")
    return pl.DataFrame(
        [
            {
                "pair_id": pid,
                "prompt_a": text[sentid(a)],
                "prompt_b": text[sentid(b)],
                "score": score,
                "line": line,
                "sampling_method": method,
            }
            for pid, (a, b, score, line, method) in rows.items()
        ],
        schema={
            "pair_id": pl.String,
            "prompt_a": pl.String,
            "prompt_b": pl.String,
            "score": pl.Float64,
            "line": pl.Int64,
            "sampling_method": pl.String,
        },
    )
