"""Plain nn.Modules (no Lightning): the EDSR encoder and the SRNO neural operator."""

from .encoder import EDSREncoder
from .operator import SRNO, GalerkinBlock

__all__ = ["SRNO", "EDSREncoder", "GalerkinBlock"]
