"""Where the study's files are: the stages' outputs (the paths dvc.yaml passes explicitly),
the file names inside them, and the caches under the project root."""

from pathlib import Path

PAIRS = Path("outputs/pairs.parquet")
EMBEDDINGS = Path("outputs/embeddings")
COUPLINGS = Path("outputs/couplings.parquet")
RENDER = Path("outputs/render")
SCORES = Path("outputs/scores.parquet")
METRICS = Path("metrics")
LOGGED = Path("outputs/mlflow.json")  # the log stage's record: experiment and results hash

INDEX = "index.parquet"  # the table inside the embeddings and render folders
SUMMARY = "summary.json"
HEADLINE = "headline.json"  # DVC's metrics file: a dozen numbers of the summary
GROUP_CSV = "ppl_by_group.csv"
FIG_PPL = "fig_ppl_cost.png"
FIG_STRIPS = "fig_strips.png"
FIG_TREND = "fig_effect_trend.png"
FIG_TRUTH = "fig_truth.png"
RESULT_FILES = (SUMMARY, HEADLINE, GROUP_CSV, FIG_PPL, FIG_TREND, FIG_TRUTH, FIG_STRIPS)

# Under the project root (DVC_ROOT under `dvc exp run --temp`), shared by all experiments.
SCORE_CACHE = Path(".otpc_cache/scores")
MLFLOW_LOCK = Path(".otpc_cache/mlflow.lock")


def logged_outputs(
    pairs: Path = PAIRS, couplings: Path = COUPLINGS, scores: Path = SCORES, render: Path = RENDER
) -> dict[str, Path]:
    """The outputs an MLflow run carries: tables, and strips/frames from the render folder."""
    return {"pairs": pairs, "couplings": couplings, "scores": scores, "render": render}
