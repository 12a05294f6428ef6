"""Plain nn.Modules (no Lightning): the EDSR encoder, the two neural operators (SRNO, LIIF) and their
interface (``Operator``), the UNet."""

from .encoder import EDSREncoder
from .galerkin import GalerkinBlock
from .liif import LIIF
from .operator import Operator
from .srno import SRNO
from .unet import UNet

__all__ = ["LIIF", "SRNO", "EDSREncoder", "GalerkinBlock", "Operator", "UNet"]
