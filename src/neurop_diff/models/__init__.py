"""Plain nn.Modules (no Lightning): the EDSR encoder, the SRNO neural operator, the UNet."""

from .encoder import EDSREncoder
from .galerkin import GalerkinBlock
from .operator import SRNO
from .unet import UNet

__all__ = ["SRNO", "EDSREncoder", "GalerkinBlock", "UNet"]
