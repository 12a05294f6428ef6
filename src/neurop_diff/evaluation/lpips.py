"""LPIPS (Zhang et al. 2018) with an offline fallback: a missing backbone means one warning and no LPIPS.

torchmetrics' LPIPS takes its ImageNet backbone from torchvision, i.e. from the torch hub cache
(`$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth` or `vgg16-397923af.pth`), and its linear layers from
files shipped inside the torchmetrics package. torchvision would download a missing backbone without any
timeout; we fetch it ourselves with a short timeout, so an offline machine neither hangs nor crashes.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from neurop_diff.files import atomic_write

LpipsNet = Literal["alex", "vgg"]

_TORCHVISION_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}
_WARNED: set[str] = set()  # one warning per expected file and process


def backbone_url(net: LpipsNet = "alex") -> str:
    """Download URL of torchvision's ImageNet weights that LPIPS uses as its backbone."""
    if net not in _TORCHVISION_WEIGHTS:
        raise ValueError(f"lpips net must be 'alex' or 'vgg', got {net!r}")
    import torchvision

    return getattr(torchvision.models, _TORCHVISION_WEIGHTS[net]).IMAGENET1K_V1.url


def backbone_path(net: LpipsNet = "alex") -> Path:
    """Where torchvision looks for the backbone: `<torch.hub.get_dir()>/checkpoints/<file>` ($TORCH_HOME/hub/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(backbone_url(net))


def _download(url: str, dest: Path, timeout_s: float) -> None:
    """Fetch `url` to `dest` atomically, checking the SHA-256 prefix in the file name (torchvision's scheme)."""
    prefix = dest.stem.rsplit("-", 1)[-1]
    sha = hashlib.sha256()
    with atomic_write(dest, suffix=".partial", mode=0o600) as tmp:
        with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=timeout_s) as response:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                sha.update(chunk)
        if not sha.hexdigest().startswith(prefix):
            raise OSError(f"checksum mismatch for {url}: sha256 does not start with {prefix}")


def _warn_once(path: Path, net: str, reason: str) -> None:
    if str(path) in _WARNED:
        return
    _WARNED.add(str(path))
    warnings.warn(
        f"LPIPS disabled: its {net} backbone weights are not available ({reason}). Expected file: {path}. "
        f"Provide it by downloading {backbone_url(net)} (e.g. on a machine with network) and placing it at that "
        "path, or set the TORCH_HOME environment variable to a folder whose hub/checkpoints/ holds it. "
        "Metrics go on without LPIPS.",
        UserWarning,
        stacklevel=3,
    )


class LPIPS(nn.Module):
    """Per-image LPIPS distance of images `(B, 3, H, W)` in [-1, 1] -> `(B,)`; lower is more similar. Frozen."""

    def __init__(self, net: LpipsNet = "alex") -> None:
        super().__init__()
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        # Only the metric's network is kept: its own state would accumulate every score.
        self.net = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=False).net
        self.net_type = net
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"LPIPS expects two (B, 3, H, W) batches, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        return self.net(x.float().clamp(-1, 1), y.float().clamp(-1, 1)).flatten()


def load_lpips(net: LpipsNet = "alex", *, download: bool = True, timeout_s: float = 10.0) -> LPIPS | None:
    """LPIPS on the torch hub cache's backbone, or None (with one warning per process) when it is unavailable.

    A missing backbone is fetched once (`download`) with a `timeout_s` network timeout; any failure, including
    an unreadable file, disables LPIPS instead of failing the run.
    """
    path = backbone_path(net)
    if not path.is_file():
        if not download:
            _warn_once(path, net, "file missing, download disabled")
            return None
        try:
            _download(backbone_url(net), path, timeout_s)
        except Exception as err:  # offline, DNS, proxy, checksum: never fatal for an evaluation run
            _warn_once(path, net, f"file missing and download failed: {err}")
            return None
    try:
        return LPIPS(net)
    except Exception as err:
        _warn_once(path, net, f"loading failed: {type(err).__name__}: {err}")
        return None
