"""tri-CLIP: CLIP with every image-caption similarity through a learned diagonal S, plus the
decorrelation term of both modalities (the tri-factor form of Zhang, Wang & Wang, NeurIPS 2023)."""

from tricl.methods.base import register_method
from tricl.methods.image_text import ImageTextMethod, TextOptions
from tricl.methods.trifactor import TriFactorOptions


class TriCLIP(ImageTextMethod):
    name = "triclip"
    label = "triCLIP"
    color = "#9D755D"
    description = "tri-CLIP: image-caption similarities through S + decorrelation"
    has_s = True
    options = (TriFactorOptions, TextOptions)
    rank = 60


register_method(TriCLIP())
