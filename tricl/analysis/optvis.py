"""Feature visualisation by optimisation: an image made to drive one feature as high as it goes.

The standard recipe of Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017 (lucid,
and its PyTorch port lucent), written out here for any number of channels:

- **Fourier parameterisation**: the image is the inverse real FFT of a learned spectrum scaled by
  ``1 / f^decay`` (lucid's ``fft_image``), so gradient steps move low frequencies as easily as
  high ones and the optimum is not high-frequency noise;
- **colour decorrelation** (3 channels): the channels are a fixed mix of decorrelated ones
  (lucid's ImageNet colour correlation's square root), then a sigmoid keeps pixels in [0, 1];
- **transformation robustness**: every step scores a small batch of randomly jittered, scaled and
  rotated copies (one affine warp each, reflected at the border), so the image must drive the
  feature wherever it sits;
- Adam on the spectrum, ``steps`` steps, the feature's mean over the batch as the objective.

The objective is one output of the encoder as given; :func:`visualize` (a run's feature, cached
by :mod:`tricl.analysis.featvis`) wraps it with :func:`tricl.analysis.saliency.in_basis` in a
rotated basis, so output r is the projection of ``z`` on the basis's direction r (a direction
objective: spectral features are not axis-aligned). Every random draw comes from one seeded
generator, so a seed gives the same image on the same machine.

torch-lucent (0.1.8, 2021) imports with today's torch only beside a pinned kornia <= 0.4.1, assumes
three colour channels and hooks named layers, so tricl does not depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricl.analysis.featvis import (
    FeatureVis,
    VisSettings,
    as_basis,
    cache_meta,
    check_feature,
    read_fresh,
    save_visualization,
    vis_path,
)
from tricl.analysis.pipeline import load_run
from tricl.analysis.saliency import in_basis
from tricl.analysis.spectral import spectral_basis
from tricl.analysis.stages import Progress
from tricl.analysis.store import locked
from tricl.bases import Basis
from tricl.data.core import normalize
from tricl.runs import Run

# lucid's colour correlation square root (ImageNet), each column scaled to at most unit norm
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MIX = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))
INIT_SD = 0.01  # spectrum's initial standard deviation (lucid's)
FFT_MAGIC = 4.0  # lucid divides the inverse FFT by 4 so that the sigmoid starts near grey


@dataclass(frozen=True, eq=False)
class Visualisation:
    """An optimised image and how the feature rose while it was made.

    Attributes:
        image: the image, uint8. Shape: (C, H, W).
        trace: the objective (mean over the transformed batch) at each step. Shape: (steps,).
    """

    image: np.ndarray
    trace: np.ndarray


class FourierImage(nn.Module):
    """Images parameterised by a ``1/f``-scaled spectrum, colours decorrelated, in [0, 1].

    Args:
        channels: image channels (3: colour decorrelation; otherwise each channel on its own).
        size: (H, W).
        decay: exponent of the ``1/f`` scaling.
        generator: draws the initial spectrum.
    """

    def __init__(
        self, channels: int, size: tuple[int, int], decay: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        h, w = size
        fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]  # (H, 1)
        fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]  # (1, W//2+1)
        freqs = torch.sqrt(fy**2 + fx**2)  # (H, W//2+1)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay
        self.size = size
        self.register_buffer("scale", scale.float())
        shape = (channels, h, w // 2 + 1, 2)  # real and imaginary parts
        self.spectrum = nn.Parameter(torch.randn(shape, generator=generator) * INIT_SD)
        self.mix = torch.tensor(COLOR_MIX, dtype=torch.float32) if channels == 3 else None

    def forward(self) -> Tensor:
        """The image. Shape: (1, C, H, W), values in (0, 1)."""
        spectrum = torch.view_as_complex(self.spectrum) * self.scale  # (C, H, W//2+1)
        x = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / FFT_MAGIC  # (C, H, W)
        if self.mix is not None:
            x = torch.einsum("chw,dc->dhw", x, self.mix)  # decorrelated -> RGB
        return torch.sigmoid(x)[None]  # (1, C, H, W)


def random_warps(x: Tensor, n: int, settings: VisSettings, generator: torch.Generator) -> Tensor:
    """``n`` copies of ``x``, each shifted, scaled and rotated at random (one affine warp).

    Args:
        x: one image. Shape: (1, C, H, W).
        n: copies.
        settings: the largest shift, zoom and rotation.
        generator: draws the transforms.

    Returns:
        The copies, reflected at the border. Shape: (n, C, H, W).
    """

    def uniform(half: float) -> Tensor:
        return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * half

    angle = uniform(math.radians(settings.rotate))  # (n,)
    zoom = 1.0 + uniform(settings.scale)  # (n,)
    shift = torch.stack([uniform(2 * settings.jitter), uniform(2 * settings.jitter)], 1)  # (n, 2)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(x.dtype)  # (n, 2, 3)
    grid = F.affine_grid(theta, [n, *x.shape[1:]], align_corners=False)  # (n, H, W, 2)
    return F.grid_sample(
        x.expand(n, -1, -1, -1), grid, padding_mode="reflection", align_corners=False
    )


def visualise(
    encoder: nn.Module,
    feature: int,
    shape: tuple[int, int, int],
    normalise: Callable[[Tensor], Tensor],
    settings: VisSettings,
    tick: Callable[[], None] | None = None,
) -> Visualisation:
    """Optimises an image to maximise output ``feature`` of ``encoder``.

    Args:
        encoder: images (B, C, H, W) -> features (B, k), run in eval mode (its BatchNorm uses
            running statistics, so the copies of a batch do not see each other); its parameters
            are not changed.
        feature: which output to maximise (0-based).
        shape: the image's (C, H, W), the encoder's input size.
        normalise: [0, 1] images -> the encoder's input (the dataset's mean/std), differentiable.
        settings: the recipe's settings (:class:`VisSettings`).
        tick: called after every step (a progress bar).

    Returns:
        The :class:`Visualisation`.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    device = next(encoder.parameters()).device
    image = FourierImage(shape[0], shape[1:], settings.decay, generator)
    opt = torch.optim.Adam(image.parameters(), lr=settings.lr)
    was_training = encoder.training
    frozen = [p for p in encoder.parameters() if p.requires_grad]
    encoder.eval().requires_grad_(False)  # gradients reach the image only
    trace = np.empty(settings.steps)
    try:
        for step in range(settings.steps):
            x = random_warps(image(), settings.batch, settings, generator)  # (B, C, H, W)
            value = encoder(normalise(x.to(device)))[:, feature].mean()
            opt.zero_grad(set_to_none=True)
            (-value).backward()
            opt.step()
            trace[step] = float(value.detach())
            if tick is not None:
                tick()
    finally:
        encoder.train(was_training)
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        pixels = (image()[0] * 255).round().to(torch.uint8)  # (C, H, W)
    return Visualisation(pixels.numpy(), trace)


def _input_shape(run: Run) -> tuple[tuple[int, int, int], object | None]:
    """The encoder's input (C, H, W), and the run's data if it had to be loaded to learn it."""
    size = int(run.dataset_info.get("image_size") or 0)  # recorded at training
    if size:
        return (run.in_channels, size, size), None
    data = run.input_data(run.load_data())
    return tuple(data.split("test")[0].shape[1:]), data


def visualize(
    run: Run | str | Path,
    feature: int,
    basis: str | Basis = "trained",
    settings: VisSettings | None = None,
    *,
    device: str = "cpu",
    force: bool = False,
    progress: bool = False,
) -> FeatureVis:
    """The visualisation of ``feature`` in ``basis``: read if stored, else made and stored
    (:mod:`tricl.analysis.featvis`).

    Args:
        run: a run or its folder.
        feature: index in the basis's outputs (0-based; spectral: rank - 1).
        basis: a basis name or :class:`~tricl.bases.Basis`; a rotated basis is estimated first
            if the run has none cached (about 20 s on a CPU).
        settings: the recipe's settings (default: ``VisSettings()``).
        device: where the encoder runs (the image itself is optimised on the CPU).
        force: make it again even if a fresh one is stored.
        progress: draw a progress bar over the steps.

    Returns:
        The :class:`~tricl.analysis.featvis.FeatureVis`.

    Raises:
        AnalysisError: the feature is out of range, the basis unknown or the run unreadable;
            raised before anything is written.
    """
    run, basis, feature = load_run(run), as_basis(basis), int(feature)
    settings = settings if settings is not None else VisSettings()
    rotation = spectral_basis(run, device=device) if basis.rotated else None
    encoder = run.encoder(device).eval()
    if rotation is not None:
        encoder = in_basis(encoder, rotation.as_linear()).eval()  # output r: direction r
    shape, data = _input_shape(run)
    with torch.no_grad():
        k = int(encoder(torch.zeros((1, *shape), device=device)).shape[1])
    check_feature(feature, k, basis)  # before the data loads and anything is written
    meta = cache_meta(run, basis, rotation, feature, settings)
    path = vis_path(run.path, basis, feature, settings)
    with locked(path.parent):
        if not force and (got := read_fresh(path, meta)) is not None:
            return got
        data = data if data is not None else run.input_data(run.load_data())
        bar = Progress(progress, f"visualize {run.name} #{feature} ({basis.label})")
        bar.add(settings.steps)
        try:
            vis = visualise(
                encoder,
                feature,
                shape,
                lambda x: normalize(x, data.mean, data.std),
                settings,
                bar.tick,
            )
        finally:
            bar.close()
        with torch.no_grad():  # the feature on the image as stored (uint8, untransformed)
            x = data.preprocess(torch.from_numpy(vis.image[None].copy())).to(device)
            activation = float(encoder(x)[0, feature])
        return save_visualization(path, meta, vis.image, vis.trace, activation)
