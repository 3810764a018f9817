"""CLIP: symmetric InfoNCE between images and their captions with a learnable temperature
(Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
ICML 2021)."""

from tricl.methods.base import register_method
from tricl.methods.image_text import ImageTextMethod, TextOptions


class CLIP(ImageTextMethod):
    name = "clip"
    label = "CLIP"
    color = "#F2A900"
    description = "CLIP image-caption InfoNCE, learnable temperature (Radford et al. 2021)"
    options = (TextOptions,)
    rank = 50


register_method(CLIP())
