"""LightningModules: thin training logic around the plain models."""

from neurop_diff.lit.diffusion import DiffusionModule
from neurop_diff.lit.operator import OperatorModule

__all__ = ["DiffusionModule", "OperatorModule"]
