"""How a sample is drawn: one record shared by validation, test and predict (``DiffusionModule``) and by the
upscaler (``inference``), read from a checkpoint's hyper-parameters with the caller's overrides on top."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .consistency import LRConsistency
from .ksamplers import SAMPLERS, Sampler
from .sampling import Spacing

__all__ = ["SamplingOptions"]

#: SamplingOptions field -> the DiffusionModule hyper-parameter that records it.
_HPARAM = {"steps": "sampling_steps"}


@dataclass(frozen=True)
class SamplingOptions:
    """``sampler`` over ``steps`` levels spaced by ``spacing`` (``ddpm``: all T levels), DDIM's ``eta`` in [0, 1],
    ``lr_consistency`` (``project``: every clean estimate projected onto the LR), the first sample's ``seed``
    (an image's sample does not depend on its batch) and ``samples`` drawn per image (seeds seed..seed+K-1)."""

    sampler: Sampler = "ddim"
    steps: int = 50
    eta: float = 0.0
    spacing: Spacing = "leading"
    lr_consistency: LRConsistency = "none"
    seed: int = 0
    samples: int = 1

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {tuple(SAMPLERS)}, got {self.sampler!r}")
        if self.spacing not in Spacing.__args__:
            raise ValueError(f"spacing must be one of {Spacing.__args__}, got {self.spacing!r}")
        if self.lr_consistency not in LRConsistency.__args__:
            raise ValueError(
                f"lr_consistency must be one of {LRConsistency.__args__}, got {self.lr_consistency!r}"
            )
        if int(self.steps) < 1:
            raise ValueError(f"sampling_steps must be >= 1, got {self.steps}")
        if not 0 <= float(self.eta) <= 1:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if int(self.samples) < 1:
            raise ValueError(f"samples must be >= 1 (samples drawn per image), got {self.samples}")

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], **overrides: Any) -> SamplingOptions:
        """The options a DiffusionModule recorded (absent keys, from older checkpoints: the defaults), with
        ``overrides`` (None values ignored) on top."""
        names = [f.name for f in dataclasses.fields(cls)]
        recorded = {n: hparams[_HPARAM.get(n, n)] for n in names if _HPARAM.get(n, n) in hparams}
        return cls(**{**recorded, **{k: v for k, v in overrides.items() if v is not None}})

    def replace(self, **overrides: Any) -> SamplingOptions:
        """A copy with ``overrides`` (None values ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def calls(self, timesteps: int) -> int:
        """UNet evaluations per sample: DDPM visits every one of ``timesteps``, Heun evaluates twice per step
        but the last, the others once per step."""
        return {"ddpm": timesteps, "heun": 2 * self.steps - 1}.get(self.sampler, self.steps)

    def sample_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``NeurOpDiff.sample`` (the seed given per draw)."""
        return {"sampler": self.sampler, "steps": int(self.steps), "eta": float(self.eta),
                "spacing": self.spacing, "lr_consistency": self.lr_consistency}  # fmt: skip
