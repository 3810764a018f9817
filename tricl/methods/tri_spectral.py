"""tri-SCL: the spectral contrastive loss in its tri-factor form (learned S + decorrelation;
Zhang, Wang & Wang, NeurIPS 2023)."""

from tricl.methods.base import register_method
from tricl.methods.contrastive import KernelMethod
from tricl.methods.trifactor import TriFactorOptions


class TriSpectral(KernelMethod):
    name = "tri-spectral"
    label = "tri-Spectral"
    color = "#B279A2"
    description = "tri-SCL: spectral loss through S + decorrelation"
    kernel = "spectral"
    has_s = True
    options = (TriFactorOptions,)
    rank = 40


register_method(TriSpectral())
