"""triCL, tri-SimCLR: NT-Xent with every similarity through a learned diagonal S, plus the
decorrelation term (Zhang, Wang & Wang, "Identifiable Contrastive Learning with Automatic Feature
Importance Discovery", NeurIPS 2023). The paper's method."""

from tricl.methods.base import register_method
from tricl.methods.contrastive import KernelMethod
from tricl.methods.trifactor import TriFactorOptions


class TriCL(KernelMethod):
    name = "tricl"
    label = "triCL"
    color = "#E4572E"
    description = "tri-SimCLR: NT-Xent through S + decorrelation"
    kernel = "nt_xent"
    has_s = True
    options = (TriFactorOptions,)
    rank = 20


register_method(TriCL())
