"""Where the stages read and write by default (the paths dvc.yaml passes explicitly)."""

from pathlib import Path

PAIRS = Path("outputs/pairs.parquet")
EMBEDDINGS = Path("outputs/embeddings")
COUPLINGS = Path("outputs/couplings.parquet")
RENDER = Path("outputs/render")
SCORES = Path("outputs/scores.parquet")
METRICS = Path("metrics")
LOGGED = Path("outputs/mlflow.json")  # the log stage's record: experiment and results hash
SCORE_CACHE = Path(".otpc_cache/scores")  # under the project root, shared by experiments


def logged_outputs(pairs: Path = PAIRS, couplings: Path = COUPLINGS, scores: Path = SCORES,
                   render: Path = RENDER) -> dict[str, Path]:
    """The outputs an MLflow run carries: tables, and strips/frames from the render folder."""
    return {"pairs": pairs, "couplings": couplings, "scores": scores, "render": render}
