"""Plain nn.Modules (no Lightning): the EDSR encoder, the two neural operators (SRNO, LIIF), the UNet."""

from .encoder import EDSREncoder
from .galerkin import GalerkinBlock
from .liif import LIIF, Operator
from .operator import SRNO
from .unet import UNet

__all__ = ["LIIF", "SRNO", "EDSREncoder", "GalerkinBlock", "Operator", "UNet"]
