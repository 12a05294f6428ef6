"""neurop-diff: continuous super-resolution of remote-sensing images with NeurOp-Diff."""

__version__ = "0.1.0"
