"""A run directory read back: :class:`Run` (config, weights, encoders, metrics), listing runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricl.config import RunConfig
from tricl.io import file_sha256, first_line
from tricl.runs.files import (
    STATE_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    RunError,
    check_state_file,
    read_metrics,
    read_weights,
    read_weights_header,
    weights_epoch,
)
from tricl.runs.record import (
    default_runs_root,
    is_image_text,
    is_shipped,
    load_run_tokenizer,
    read_run_info,
    read_text_config,
)

if TYPE_CHECKING:
    import torch


@dataclass
class BrokenRun:
    """A folder under the runs root that is not a usable run, and why."""

    path: Path
    reason: str

    @property
    def name(self) -> str:
        return self.path.name


class Run:
    """One run directory. Use :meth:`Run.load`; nothing is read until asked for."""

    def __init__(self, path: Path, config: RunConfig, info: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        self.info = info
        self._hash_key: tuple[int, int] | None = None
        self._hash = ""

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Open a run directory and check it cheaply: config complete, weights and train state
        structurally whole (headers only; :meth:`state_dict` reads the tensors)."""
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"run directory {path} does not exist; list runs with `tricl runs`")
        info, config = read_run_info(path)
        if not (path / WEIGHTS_FILE).is_file():
            raise RunError(
                f"{path} has no {WEIGHTS_FILE} yet (training stopped before its first epoch ended);"
                f" continue with `tricl train --resume {path}` or delete the folder"
            )
        read_weights_header(path / WEIGHTS_FILE)
        aligned = info.get("aligned") is not None  # an aligned copy keeps only the image side
        own_text = not getattr(config, "source", None)  # an import's text side: its source's
        needs = is_image_text(config) and own_text and not aligned
        if needs and not (path / TOKENIZER_FILE).is_file():
            raise RunError(
                f"{path} has no {TOKENIZER_FILE}, which its {config.method} text encoder needs;"
                " restore the run's tokenizer.json or retrain"
            )
        if (path / STATE_FILE).exists():
            check_state_file(path / STATE_FILE)
        return cls(path, config, info)

    @property
    def shipped(self) -> bool:
        """Whether this is one of the runs shipped with the repository."""
        return is_shipped(self.path)

    @property
    def aligned(self) -> bool:
        """Whether ``tricl align`` derived this run (its features: its parent's spectral basis)."""
        return self.info.get("aligned") is not None

    @property
    def aligned_dim(self) -> int:
        """Features of an aligned run's fixed aligner layer (0: not an aligned run)."""
        return int(self.info["aligned"]["dim"]) if self.aligned else 0

    @property
    def parent(self) -> dict[str, Any] | None:
        """The run this one was derived from (``name``, ``path``, ``weights_hash`` as recorded), or
        None."""
        parent = self.info.get("parent")
        if isinstance(parent, str):  # recorded as a bare path
            return {"name": Path(parent).name, "path": parent}
        return dict(parent) if isinstance(parent, dict) else None

    @property
    def own_preprocessing(self) -> bool:
        """Whether the encoder applies its model's own preprocessing (an encoder opened with
        ``tricl import SOURCE``: grey to RGB, resize, crop, the model's mean/std, per batch), so it
        reads images of any size scaled to [0, 1]."""
        return bool(getattr(self.config, "source", None))

    def input_data(self, data: Any) -> Any:
        """The dataset (:class:`~tricl.data.ImageData`) as this run's encoder reads it: normalised
        with the dataset's mean/std for a trained encoder; scaled to [0, 1] only (mean 0, std 1)
        for one that applies its model's own preprocessing (:attr:`own_preprocessing`).
        ``preprocess`` and ``build_augmentation`` of the result give the encoder's input."""
        if not self.own_preprocessing:
            return data
        import dataclasses

        return dataclasses.replace(data, mean=(0.0,) * data.channels, std=(1.0,) * data.channels)

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def weights_hash(self) -> str:
        """SHA-256 of ``model.safetensors`` (first 16 hex digits); cached per file version."""
        st = self.weights_path.stat()
        key = (st.st_mtime_ns, st.st_size)
        if key != self._hash_key:
            self._hash = file_sha256(self.weights_path)[:16]
            self._hash_key = key
        return self._hash

    @property
    def dataset_info(self) -> dict[str, Any]:
        return self.info.get("dataset", {})

    @property
    def in_channels(self) -> int:
        return int(self.dataset_info.get("in_channels", 3))

    @property
    def classes(self) -> list[str]:
        return list(self.dataset_info.get("classes", []))

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return read_weights(self.weights_path)

    @property
    def epochs_done(self) -> int:
        """The epochs the weights hold (from their header, not from the metrics log)."""
        return weights_epoch(self.weights_path)

    @property
    def image_text(self) -> bool:
        """Whether the run trained on image-caption pairs (clip, triclip)."""
        return is_image_text(self.config)

    def _load_into(self, module, tensors: Mapping[str, torch.Tensor]) -> None:
        skip = _statistics_keys(module)  # e.g. tri-eigen's head.steps, infinite after its refit
        bad = next(
            (
                k
                for k, v in tensors.items()
                if k not in skip and v.is_floating_point() and not v.isfinite().all()
            ),
            None,
        )
        if bad is not None:  # NaN or inf weights would only surface later, as NaN features
            raise RunError(
                f"{self.weights_path} holds NaN or infinite values in {bad}; the file is damaged:"
                " restore it from a backup or train the run again"
            )
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise RunError(
                f"{self.weights_path} does not match config.json ({first_line(exc)}); the files"
                " come from different runs: restore the matching pair"
            ) from None

    def _weights(self, prefix: str) -> dict[str, torch.Tensor]:
        """The weights under ``prefix`` (image-text runs; ``""``: all of them), prefix removed."""
        tensors, _ = self.state_dict()
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """The image encoder's tensors, as :meth:`encoder` loads them (an image-text run keeps
        them under ``image.``; an aligned copy of one holds only its image encoder)."""
        return self._weights("image." if self.image_text and not self.aligned else "")

    def encoder(self, device: str | torch.device = "cpu"):
        """The trained image encoder in eval mode, rebuilt from ``config.json`` and the weights.

        For an image-text run this is its image encoder, so every image analysis reads it as it
        reads a two-view run's encoder.
        """
        from tricl.methods import build_encoder

        enc = build_encoder(self.config, self.in_channels, aligned_dim=self.aligned_dim)
        self._load_into(enc, self.encoder_weights())
        return enc.to(device).eval()

    def _require_image_text(self, what: str) -> None:
        if not self.image_text:
            how, fix = (
                ("imported", "import an open_clip model on a caption dataset for one")
                if self.own_preprocessing
                else ("trained", "train clip or triclip for one")
            )
            raise RunError(
                f"{self.path} is a {self.config.method} run, {how} on images only, so it has no"
                f" {what}; {fix}"
            )
        if self.aligned:
            raise RunError(
                f"{self.path} is an aligned copy of {self.parent['name']} holding only its image"
                f" encoder, so it has no {what}; read it from the parent run"
            )

    def tokenizer(self):
        """The run's tokenizer (image-text runs): its
        :class:`~tricl.text.tokenizer.TextTokenizer`, or an imported run's own (open_clip's),
        which has the same ``encode`` / ``pieces`` / ``context_length``.

        Raises:
            RunError: not an image-text run, or a tokenizer.json that does not match the weights.
        """
        self._require_image_text("tokenizer")
        if self.own_preprocessing:
            return self._imported_text("rebuild_tokenizer")
        return load_run_tokenizer(self.path, read_text_config(self.path))

    def _imported_text(self, what: str):
        """An imported run's tokenizer or text encoder, rebuilt from its source record."""
        from tricl import sources

        try:
            return getattr(sources, what)(self.config.backbone, self.config.source)
        except sources.SourceError as exc:
            raise RunError(f"{self.path}: {exc}") from None

    def text_encoder(self, device: str | torch.device = "cpu"):
        """The trained text encoder in eval mode (image-text runs): token ids (B, L') -> (B, k).

        A :class:`~tricl.text.encoder.TextEncoder` rebuilt from config.json's ``text_encoder``
        record and checked against tokenizer.json, or an imported run's own text tower (open_clip's
        ``encode_text``), rebuilt from its source record.

        Raises:
            RunError: not an image-text run, or weights, config and tokenizer that do not match.
        """
        from tricl.text.encoder import TextEncoder

        self._require_image_text("text encoder")
        if self.own_preprocessing:
            enc = self._imported_text("rebuild_text")
            self._load_into(enc, self._weights("text."))
            return enc.to(device).eval()
        text_config = read_text_config(self.path)
        load_run_tokenizer(self.path, text_config)
        tensors = self._weights("text.")
        rows = tensors.get("token_embedding.weight")
        if rows is not None and rows.shape[0] != text_config.vocab_size:
            raise RunError(
                f"{self.path / TOKENIZER_FILE} has {text_config.vocab_size} tokens but"
                f" {self.weights_path} has {rows.shape[0]} embedding rows; restore the matching"
                " pair"
            )
        enc = TextEncoder.from_config(text_config)
        self._load_into(enc, tensors)
        return enc.to(device).eval()

    def logit_scale(self) -> float:
        """The learned ``exp(logit_scale)`` = 1/T of an image-text run."""
        self._require_image_text("logit scale")
        tensors, _ = self.state_dict()
        return float(tensors["logit_scale"].exp())

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows of ``metrics.jsonl`` up to the epoch the weights hold."""
        return read_metrics(self.path, upto=self.epochs_done)

    def load_data(self, **kwargs: Any):
        """The run's images, an :class:`~tricl.data.ImageData` (see
        :func:`tricl.data.load_dataset`); for an image-text run, the images of its captions."""
        kwargs.setdefault("image_size", self.config.image_size)
        if self.image_text:
            return self.load_image_text(image_size=kwargs["image_size"]).images
        from tricl.data import load_dataset

        return load_dataset(self.config.dataset, **kwargs)

    def load_image_text(self, **kwargs: Any):
        """The images with their captions, :class:`~tricl.text.captions.ImageTextData`."""
        from tricl.text.captions import load_image_text

        self._require_image_text("captions")
        kwargs.setdefault("image_size", self.config.image_size)
        return load_image_text(self.config.dataset, **kwargs)

    def summary(self) -> dict[str, Any]:
        """One row for run tables: method, dataset, seed, epochs, final loss."""
        done = self.epochs_done
        rows = read_metrics(self.path, upto=done)
        last = rows[-1] if rows and rows[-1]["epoch"] == done else {}
        return {
            "run": self.name,
            "method": self.config.method,
            "dataset": self.config.dataset,
            "backbone": self.config.backbone,
            "k": self.config.proj_dim,
            "seed": self.config.seed,
            "epochs": f"{done}/{self.config.epochs}",
            "final_loss": last.get("loss"),
            "shipped": self.shipped,
            "aligned": self.aligned,
        }


def list_runs(root: str | Path | None = None) -> list[Run | BrokenRun]:
    """Every run under ``root`` (folders starting with ``_`` or ``.`` are skipped), by name."""
    root = Path(root) if root is not None else default_runs_root()
    if not root.is_dir():
        return []
    out: list[Run | BrokenRun] = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name.startswith(("_", ".")):
            continue
        try:
            out.append(Run.load(p))
        except RunError as exc:
            out.append(BrokenRun(p, str(exc)))
    return out


def _statistics_keys(module) -> set[str]:
    """State-dict keys of the buffers that ``module``'s parts declare as running statistics
    (``statistics_buffers``, e.g. :class:`tricl.heads.EigenHead`'s), which may be non-finite."""
    return {
        f"{name}.{buf}" if name else buf
        for name, part in module.named_modules()
        for buf in getattr(part, "statistics_buffers", ())
    }
