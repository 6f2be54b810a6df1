"""A training's saved state, so that a stopped training continues where it stopped.

One file, ``state.pt`` in the checkpoint folder, replaced atomically: the phase and the next
step, the modules' and the optimiser's state, every random generator's state, the loss log so
far and the seconds spent. It is read back with ``torch.load(weights_only=True)`` (tensors
and plain containers only: nothing else is unpickled), and only by the same code, settings,
torch version and thread count that wrote it (``identity``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from otpc.atomic import atomic_path
from otpc.errors import InputError

STATE = "state.pt"
Generator = np.random.Generator | torch.Generator


def _generator_state(g: Generator) -> Any:
    return g.get_state() if isinstance(g, torch.Generator) else json.dumps(g.bit_generator.state)


def _set_generator_state(g: Generator, state: Any) -> None:
    if isinstance(g, torch.Generator):
        g.set_state(state)
    else:
        g.bit_generator.state = json.loads(state)


class Checkpoints:
    """The state of one training (``identity``: its settings and code version) in
    ``folder``, saved every ``every`` steps."""

    def __init__(self, folder: Path, identity: dict[str, Any], every: int) -> None:
        self.folder = folder
        # the same bytes need the same kernels: torch's version and thread count too
        machine = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        self.identity = json.dumps(identity | machine, sort_keys=True)
        self.every = every
        self.started, self.before = time.perf_counter(), 0.0

    def seconds(self) -> float:
        """The training's time so far, with that of the runs before a restart."""
        return self.before + time.perf_counter() - self.started

    def due(self, done: int, total: int) -> bool:
        """Whether to save after ``done`` of a phase's ``total`` steps."""
        return done % self.every == 0 and done < total

    def load(self) -> dict[str, Any] | None:
        """The saved state, or ``None`` when there is none; an error naming the folder if it
        was made by other settings or code."""
        path = self.folder / STATE
        if not path.exists():
            return None
        state = torch.load(path, weights_only=True)
        if state.get("identity") != self.identity:
            raise InputError(
                f"{self.folder} holds the checkpoint of a training with other settings or "
                "code; remove it to start this one from nothing"
            )
        self.before = float(state["seconds"])
        return state

    def save(
        self,
        phase: str,
        step: int,
        modules: Mapping[str, torch.nn.Module],
        optimiser: torch.optim.Optimizer,
        generators: Mapping[str, Generator],
        **extra: Any,
    ) -> None:
        """Save the state after ``step`` steps of ``phase`` (with the global torch
        generator's and the time so far)."""
        state = {
            "identity": self.identity,
            "phase": phase,
            "step": step,
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimiser": optimiser.state_dict(),
            "generators": {k: _generator_state(g) for k, g in generators.items()},
            "torch_global": torch.get_rng_state(),
            "seconds": self.seconds(),
            **extra,
        }
        with atomic_path(self.folder / STATE) as tmp:
            torch.save(state, tmp)

    @staticmethod
    def restore(
        state: dict[str, Any],
        modules: Mapping[str, torch.nn.Module],
        optimiser: torch.optim.Optimizer,
        generators: Mapping[str, Generator],
    ) -> int:
        """Put ``state`` back into the modules, optimiser and generators; returns the step
        to continue from."""
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        optimiser.load_state_dict(state["optimiser"])
        for name, g in generators.items():
            _set_generator_state(g, state["generators"][name])
        torch.set_rng_state(state["torch_global"])
        return int(state["step"])

    def remove(self) -> None:
        """Forget the state (the training is finished)."""
        shutil.rmtree(self.folder, ignore_errors=True)
