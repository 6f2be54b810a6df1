"""Nothing unpickles untrusted files; servers otpc documents bind to 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from otpc.models import ModelSpec, load_pipeline
from tests.project import ROOT


def test_pickled_weights_are_refused(tiny, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    tiny.pipe.save_pretrained(folder, safe_serialization=False)
    assert (folder / "unet/diffusion_pytorch_model.bin").exists()
    assert not (folder / "unet/diffusion_pytorch_model.safetensors").exists()
    with pytest.raises(RuntimeError, match="safetensors"):
        load_pipeline(ModelSpec(str(folder)))


def test_safetensors_copy_of_the_same_model_loads(tiny, tmp_path: Path) -> None:
    folder = tmp_path / "safe"
    tiny.pipe.save_pretrained(folder, safe_serialization=True)
    loaded = load_pipeline(ModelSpec(str(folder)))
    for name, tensor in tiny.pipe.unet.state_dict().items():
        assert torch.equal(loaded.pipe.unet.state_dict()[name], tensor), name


def test_documented_servers_bind_to_loopback() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = [
        line
        for line in readme.splitlines()
        if ("mlflow ui " in line or "mlflow server " in line) and " --" in line
    ]
    assert commands
    assert all("--host 127.0.0.1" in line for line in commands)
