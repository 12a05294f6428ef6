"""neurop-diff: continuous super-resolution of remote-sensing images with NeurOp-Diff."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `neurop_diff.upscale(...)` without importing Lightning and the models on `import neurop_diff`.
    if name == "upscale":
        from neurop_diff.inference import upscale

        return upscale
    raise AttributeError(f"module 'neurop_diff' has no attribute {name!r}")
