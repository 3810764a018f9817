"""The spectral contrastive loss (HaoChen, Wei, Gaidon & Ma, "Provable Guarantees for
Self-Supervised Deep Learning with Spectral Contrastive Loss", NeurIPS 2021)."""

from tricl.methods.base import register_method
from tricl.methods.contrastive import KernelMethod


class Spectral(KernelMethod):
    name = "spectral"
    label = "Spectral"
    color = "#54A24B"
    description = "spectral contrastive loss (HaoChen et al. 2021)"
    kernel = "spectral"
    rank = 30


register_method(Spectral())
