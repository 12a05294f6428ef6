"""Inference on real scenes: the `upscale` Python API, tiled large-scene sampling, image and GeoTIFF I/O."""

from neurop_diff.inference.upscale import (
    LoadedModel,
    OutOfDistributionScaleWarning,
    clear_model_cache,
    load_model,
    upscale,
    upscale_file,
    upscale_tensor,
)

__all__ = [
    "LoadedModel",
    "OutOfDistributionScaleWarning",
    "clear_model_cache",
    "load_model",
    "upscale",
    "upscale_file",
    "upscale_tensor",
]
