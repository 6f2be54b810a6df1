"""LPIPS: the pretrained-backbone loading path (offline, from a torch hub cache we fill with
deterministic weights of the right shapes), the untrained fallback, and inputs in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torchvision

from otpc.perceptual import (
    BACKBONE_WEIGHTS,
    backbone_checkpoint,
    load_lpips,
    step_distances,
    to_lpips_input,
)

BUILDERS = {
    "alex": torchvision.models.alexnet,
    "vgg": torchvision.models.vgg16,
    "squeeze": torchvision.models.squeezenet1_1,
}
CHECKPOINTS = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def fake_imagenet_weights(net: str) -> dict[str, torch.Tensor]:
    """A state dict with the backbone's exact keys and shapes and seeded values. Tensors
    above 1M entries (AlexNet's and VGG's classifiers, unused by LPIPS) repeat one seeded row,
    so the file stays small."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in BUILDERS[net]().state_dict().items()}
    gen = torch.Generator().manual_seed(1234)
    out = {}
    for key, shape in shapes.items():
        if shape.numel() > 1 << 20:
            out[key] = (0.01 * torch.randn(shape[-1], generator=gen)).expand(shape)
        else:
            out[key] = 0.05 * torch.randn(shape, generator=gen)
    return out


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def images(seed: int, n: int = 3, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("net", sorted(BACKBONE_WEIGHTS))
def test_pretrained_backbone_is_loaded_from_the_hub_cache(net: str, torch_home: Path) -> None:
    path = backbone_checkpoint(net)
    assert path == torch_home / "hub" / "checkpoints" / CHECKPOINTS[net]
    assert not load_lpips(net).pretrained_backbone  # nothing there yet
    written = fake_imagenet_weights(net)
    path.parent.mkdir(parents=True)
    torch.save(written, path)
    metric = load_lpips(net)
    assert metric.pretrained_backbone and metric.net == net
    features = dict(metric.model.net.named_parameters())  # "slice1.0.weight" = "features.0.weight"
    assert len(features) > 0
    for name, param in features.items():
        assert torch.equal(param, written["features." + name.split(".", 1)[1]]), name
    heads = torch.load(
        Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth", map_location="cpu"
    )
    for key, value in heads.items():  # the package's trained linear heads
        assert torch.equal(metric.model.state_dict()[key], value), key
    x = to_lpips_input(images(0))
    d = metric.distance(x, x.flip(0))
    assert d.shape == (3,) and d[1] == 0 and (d[[0, 2]] > 0).all()


def test_untrained_fallback_is_deterministic(torch_home: Path) -> None:
    rng_before = torch.random.get_rng_state()
    first, second = load_lpips("alex"), load_lpips("alex")
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert not first.pretrained_backbone and not second.pretrained_backbone
    for (name, a), b in zip(
        first.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    frames = images(1, n=5)
    assert np.array_equal(step_distances(first, frames), step_distances(second, frames))


def test_inputs_are_in_minus_one_to_one() -> None:
    frames = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    frames[1] = 255
    frames[0, 0, 0] = (0, 128, 255)
    x = to_lpips_input(frames)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1 and torch.all(x[1] == 1)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)


def test_step_distances_follow_the_path(torch_home: Path) -> None:
    metric = load_lpips("alex")
    frames = images(2, n=4)
    frames[2] = frames[1]
    d = step_distances(metric, frames, batch_size=2)
    x = to_lpips_input(frames)
    assert d.shape == (3,) and d[1] == 0
    assert np.allclose(d, metric.distance(x[:-1], x[1:]).numpy(), atol=1e-6)
