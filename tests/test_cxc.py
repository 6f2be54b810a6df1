"""CxC STS pairs joined with Karpathy's captions: real CxC rows, a small Karpathy-format JSON."""

from __future__ import annotations

import http.server
import json
import threading
import zipfile
from pathlib import Path

import polars as pl
import pytest

from otpc.cxc import (
    CAPTIONS_URL,
    cached_captions_path,
    cxc_pair_id,
    download,
    read_cxc_pairs,
    read_sts,
    sentid,
)
from otpc.errors import InputError
from otpc.pairs import sample_groups
from otpc.params import DataParams
from otpc.study.sample import sample

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "cxc"
STS = pl.read_csv(FIXTURE / "sts_val.csv")


def expected_text(caption_id: str) -> str:
    return f"Stand-in text for COCO sentid {caption_id.rsplit(':', 1)[1]}."


def params(**kw: object) -> DataParams:
    return DataParams(source="cxc", captions=str(FIXTURE / "dataset_coco.json"), **kw)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty otpc home, so nothing is cached."""
    monkeypatch.setenv("OTPC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_rows_join_their_captions() -> None:
    pairs = read_cxc_pairs(params(), FIXTURE)
    assert pairs.columns == ["pair_id", "prompt_a", "prompt_b", "score", "line", "sampling_method"]
    assert len(pairs) == len(STS)
    rows = zip(pairs.iter_rows(named=True), STS.iter_rows(), strict=True)
    for line, (row, (a, b, score, method)) in enumerate(rows, start=2):
        assert row["pair_id"] == cxc_pair_id(a, b)
        assert (row["prompt_a"], row["prompt_b"]) == (expected_text(a), expected_text(b))
        assert row["score"] == score
        assert row["sampling_method"] == method
        assert row["line"] == line  # of the STS file, for error messages


def test_pair_ids_come_from_caption_ids() -> None:
    assert cxc_pair_id("COCO_val2014:sentid:98", "COCO_val2014:sentid:480512") == "cxc-98-480512"
    assert cxc_pair_id("COCO_val2014:sentid:480512", "COCO_val2014:sentid:98") == "cxc-98-480512"
    with pytest.raises(InputError, match="COCO_val2014:98"):
        cxc_pair_id("COCO_val2014:98", "COCO_val2014:sentid:1")


@pytest.mark.parametrize("method", ["c2c_cocaption", "c2c_isim"])
def test_sampling_method_filters(method: str) -> None:
    pairs = read_cxc_pairs(params(sampling_method=method), FIXTURE)
    wanted = STS.filter(pl.col("sampling_method") == method)
    assert set(pairs["pair_id"]) == {
        cxc_pair_id(a, b) for a, b in wanted.select("caption1", "caption2").iter_rows()
    }


def test_symmetric_duplicates_count_once(tmp_path: Path) -> None:
    first = STS.row(0)
    lines = (FIXTURE / "sts_val.csv").read_text().splitlines()
    lines.append(f"{first[1]},{first[0]},4.9,{first[3]}")  # (B, A) of the first pair
    (tmp_path / "sts_val.csv").write_text("\n".join(lines) + "\n")
    pairs = read_cxc_pairs(params(), tmp_path)
    assert len(pairs) == len(STS)
    kept = pairs.filter(pl.col("pair_id") == cxc_pair_id(first[0], first[1])).row(0, named=True)
    assert (kept["prompt_a"], kept["score"]) == (expected_text(first[0]), first[2])


def test_caption_whitespace_is_stripped() -> None:
    raw = json.loads((FIXTURE / "dataset_coco.json").read_text())
    assert raw["images"][0]["sentences"][0]["raw"].endswith(" \n")
    prompts = set(read_cxc_pairs(params(), FIXTURE)[["prompt_a", "prompt_b"]].to_numpy().ravel())
    assert all(p == p.strip() for p in prompts)


def test_reads_the_zip_as_distributed(tmp_path: Path) -> None:
    archive = tmp_path / "caption_datasets.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(FIXTURE / "dataset_coco.json", "dataset_coco.json")
        zf.writestr("dataset_flickr8k.json", '{"images": []}')
    from_zip = read_cxc_pairs(DataParams(source="cxc", captions=str(archive)), FIXTURE)
    assert from_zip.equals(read_cxc_pairs(params(), FIXTURE))


def test_missing_sentid_is_an_error_naming_it(tmp_path: Path) -> None:
    doc = json.loads((FIXTURE / "dataset_coco.json").read_text())
    gone = STS.row(3)[1]  # COCO_val2014:sentid:480512
    sid = int(gone.rsplit(":", 1)[1])
    for image in doc["images"]:
        image["sentences"] = [s for s in image["sentences"] if s["sentid"] != sid]
    (tmp_path / "dataset_coco.json").write_text(json.dumps(doc))
    data = DataParams(source="cxc", captions=str(tmp_path / "dataset_coco.json"))
    with pytest.raises(InputError, match=f"1 caption id.*{gone}"):
        read_cxc_pairs(data, FIXTURE)
    # the id is only needed when its row is selected
    assert (
        len(read_cxc_pairs(data.model_copy(update={"sampling_method": "c2c_cocaption"}), FIXTURE))
        == 5
    )


def test_wrong_json_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"annotations": [{"id": 1, "caption": "a cat"}]}')
    with pytest.raises(InputError, match="not Karpathy's caption format"):
        read_cxc_pairs(DataParams(source="cxc", captions=str(tmp_path / "other.json")), FIXTURE)


def test_named_captions_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "caption_datasets.zip"
    with pytest.raises(InputError, match=f"{missing} not found.*{CAPTIONS_URL}"):
        read_cxc_pairs(DataParams(source="cxc", captions=str(missing)), FIXTURE)


def test_offline_without_captions_names_url_and_place(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTPC_OFFLINE", "1")
    with pytest.raises(InputError) as err:
        read_cxc_pairs(DataParams(source="cxc"), FIXTURE)
    assert CAPTIONS_URL in str(err.value)
    assert str(home / "data" / "caption_datasets.zip") in str(err.value)
    assert not (home / "data" / "caption_datasets.zip").exists()


def test_unreachable_url_is_an_error_naming_url_and_place(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "caption_datasets.zip"
    url = (tmp_path / "no-such.zip").as_uri()
    with pytest.raises(InputError, match=f"could not download.*{url}.*{dest}"):
        download(url, dest)
    assert not dest.exists()


class _Truncating(http.server.BaseHTTPRequestHandler):
    """Promises 1 MB, sends 10 bytes, hangs up: a download cut off half-way."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"PK\x03\x04 cut")
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_interrupted_download_leaves_nothing(tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Truncating)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    dest = tmp_path / "cache" / "caption_datasets.zip"
    try:
        with pytest.raises(InputError, match="could not download"):
            download(f"http://127.0.0.1:{server.server_port}/caption_datasets.zip", dest)
    finally:
        thread.join(10)
        server.server_close()
    assert list(dest.parent.iterdir()) == []  # neither the file nor a temporary sibling


def test_download_fills_the_cache_used_when_captions_is_unset(home: Path, tmp_path: Path) -> None:
    served = tmp_path / "served.zip"
    with zipfile.ZipFile(served, "w") as zf:
        zf.write(FIXTURE / "dataset_coco.json", "dataset_coco.json")
    cached = download(served.as_uri(), cached_captions_path())
    assert cached == home / "data" / "caption_datasets.zip"
    assert cached_captions_path().read_bytes() == served.read_bytes()
    assert [p.name for p in cached_captions_path().parent.iterdir()] == ["caption_datasets.zip"]
    served.unlink()  # from now on only the cache can answer
    from_cache = read_cxc_pairs(DataParams(source="cxc"), FIXTURE)
    assert from_cache.equals(read_cxc_pairs(params(), FIXTURE))


def test_study_sampling_draws_one_pair_per_group() -> None:
    pairs = read_cxc_pairs(params(), FIXTURE)
    table = sample_groups(pairs, [0, 1, 2, 3, 4, 5], 1, 0, "CxC val")
    assert table["group"].to_list() == ["[0,1)", "[1,2)", "[2,3)", "[3,4)", "[4,5]"]
    assert table["pair_id"].str.starts_with("cxc-").all()


def test_real_sts_files_have_well_formed_ids() -> None:
    """Every caption id in the shipped CxC files parses (no captions needed for this)."""
    for split in ("val", "test"):
        sts = read_sts(ROOT / "data" / "cxc" / f"sts_{split}.csv", "both")
        ids = {sentid(c) for c in sts["caption1"].to_list() + sts["caption2"].to_list()}
        assert len(ids) == 25000
        assert sts["agg_score"].is_between(0, 5).all()


def test_download_that_is_not_a_zip_is_rejected(tmp_path: Path) -> None:
    page = tmp_path / "login.html"
    page.write_text("<html>please sign in</html>")
    dest = tmp_path / "cache" / "caption_datasets.zip"
    with pytest.raises(InputError, match="not a zip file"):
        download(page.as_uri(), dest)
    assert list(dest.parent.iterdir()) == []


def test_sample_stage_on_the_real_val_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study's sample step on all of data/cxc/sts_val.csv, with a Karpathy-format file
    that has a (stand-in) caption for each of its 25,000 ids."""
    sts = pl.read_csv(ROOT / "data" / "cxc" / "sts_val.csv")
    ids = sorted({int(c.rsplit(":", 1)[1]) for c in pl.concat([sts["caption1"], sts["caption2"]])})
    doc = {
        "images": [
            {"imgid": i, "sentences": [{"sentid": s, "raw": expected_text(f"x:{s}")}]}
            for i, s in enumerate(ids)
        ]
    }
    (tmp_path / "dataset_coco.json").write_text(json.dumps(doc))
    monkeypatch.chdir(ROOT)  # the stage reads data/cxc/ from the project root
    data = DataParams(
        source="cxc",
        captions=str(tmp_path / "dataset_coco.json"),
        n_per_group=2,
        sampling_method="c2c_isim",
    )
    table = sample(data, tmp_path / "pairs.parquet")
    assert table.equals(pl.read_parquet(tmp_path / "pairs.parquet"))
    assert table["group"].value_counts()["count"].to_list() == [2] * 5
    isim = {cxc_pair_id(a, b): (a, b, s) for a, b, s, m in sts.iter_rows() if m == "c2c_isim"}
    for row in table.iter_rows(named=True):
        a, b, score = isim[row["pair_id"]]
        assert (row["prompt_a"], row["prompt_b"], row["score"]) == (
            expected_text(a),
            expected_text(b),
            score,
        )
