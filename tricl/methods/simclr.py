"""SimCLR: NT-Xent over two augmented views (Chen, Kornblith, Norouzi & Hinton, "A Simple
Framework for Contrastive Learning of Visual Representations", ICML 2020)."""

from tricl.methods.base import register_method
from tricl.methods.contrastive import KernelMethod


class SimCLR(KernelMethod):
    name = "simclr"
    label = "SimCLR"
    color = "#4C78A8"
    description = "SimCLR NT-Xent (Chen et al. 2020)"
    kernel = "nt_xent"
    rank = 10


register_method(SimCLR())
