"""The toy world and the small text-to-image model trained on it (otpc's embedded default)."""

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"  # the trained weights otpc ships (model.name: toy)
