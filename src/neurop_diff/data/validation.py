"""Start-up checks of the data: every scale leaves an LR the model can use, every split decodes.

* **Smallest LR.** An evaluation scale ``s`` on ``hr_size`` px HR images gives an LR of
  ``round(hr_size / s)`` px (:func:`neurop_diff.data.degradation.lr_size`); a training scale up to
  ``scale_max`` gives LR patches of at least ``floor(hr_size / scale_max)`` px. Both must be at least
  :data:`MIN_LR_SIZE` px: below that the "x1000" of a report is an LR of one pixel, not a super-resolution.
* **Every split.** ``SRDataModule.setup("fit")`` decodes the train and val images and checks that every test
  image decodes too, so a truncated file fails at start-up, not after training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .degradation import lr_size

__all__ = ["MIN_LR_SIZE", "check_lr_sizes"]

#: The smallest LR side (pixels) a scale may leave (documented in the README, "Data").
MIN_LR_SIZE = 4


def check_lr_sizes(
    hr_size: int, scale_max: float, scales: dict[str, Sequence[float]], minimum: int = MIN_LR_SIZE
) -> None:
    """Raises ValueError naming the option, the scale and ``hr_size`` when an LR would be under ``minimum`` px.

    ``scales``: evaluation scale lists by option name (``{"val_scales": [...], "test_scales": [...]}``)."""
    for name, values in scales.items():
        for s in values:
            side = lr_size((hr_size, hr_size), float(s))[0]
            if side < minimum:
                raise ValueError(
                    f"{name}: scale x{float(s):g} on hr_size {hr_size} px images gives a {side} px LR, below the "
                    f"smallest LR of {minimum} px: use scales up to about x{hr_size / (minimum - 0.5):.3g} "
                    "here, or a larger hr_size"
                )
    if math.floor(hr_size / scale_max) < minimum:
        raise ValueError(
            f"scale_max: x{scale_max:g} on hr_size {hr_size} px images gives training LR patches of "
            f"{math.floor(hr_size / scale_max)} px, below the smallest LR of {minimum} px: use scale_max <= "
            f"x{hr_size / minimum:g} here, or a larger hr_size"
        )
