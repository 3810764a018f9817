"""Class-name prompts for zero-shot classification (standard CLIP evaluation), per caption dataset.

Zero-shot accuracy embeds a few prompts per class with the run's text encoder, averages their
L2-normalised features per class and predicts, for each image, the class whose averaged prompt is
most similar (:mod:`tricl.analysis.image_text`). The templates, one :class:`PromptSet` per caption
dataset name (:data:`PROMPT_SETS`):

- ``mnist5k-captions`` (digits): the captions' own wording without the factor words, with the
  numeral and the digit's name: "a handwritten {digit}", "the number {digit}", "handwritten
  {word}", "the number {word}", "a digit {word}", "a number {word}" ({digit} "3", {word} "three").
- ``captions`` (a CSV with a label column): "a photo of a {label}" and "{label}", CLIP's plainest
  two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The digits' names, shared with the caption generator (tricl.text.captions); defined here so that
# reading a prompt set (an analysis artifact's parameters) never imports torch.
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = (
    "a handwritten {digit}",
    "the number {digit}",
    "handwritten {word}",
    "the number {word}",
    "a digit {word}",
    "a number {word}",
)
LABEL_TEMPLATES = ("a photo of a {label}", "{label}")


def _digit_fields(name: str) -> dict[str, str]:
    """Template fields of a digit class named ``"0"``..``"9"``."""
    if name not in {str(d) for d in range(len(DIGIT_WORDS))}:
        raise ValueError(f"digit class {name!r} is not one of 0..9; use the label templates")
    return {"digit": name, "word": DIGIT_WORDS[int(name)]}


@dataclass(frozen=True)
class PromptSet:
    """The zero-shot prompts of one caption dataset.

    Attributes:
        templates: format strings, each filled with the class's fields.
        fields: ``fields(class_name) -> {field: text}`` for the templates.
    """

    templates: tuple[str, ...]
    fields: Callable[[str], dict[str, str]]

    def prompts(self, class_name: str) -> list[str]:
        """Every template filled in for one class."""
        values = self.fields(class_name)
        return [t.format(**values) for t in self.templates]


PROMPT_SETS: dict[str, PromptSet] = {
    "mnist5k-captions": PromptSet(DIGIT_TEMPLATES, _digit_fields),
    "captions": PromptSet(LABEL_TEMPLATES, lambda name: {"label": name}),
}


def class_prompts(dataset_name: str, classes: Sequence[str]) -> list[list[str]]:
    """The prompts of every class, ``out[c][t]`` = template t for class c.

    Args:
        dataset_name: a caption dataset's name (the spec without its path), a key of
            :data:`PROMPT_SETS`.
        classes: the class names, label order.

    Raises:
        ValueError: a dataset without prompts, or a class name its templates cannot take.
    """
    if dataset_name not in PROMPT_SETS:
        raise ValueError(
            f"no zero-shot prompts for dataset {dataset_name!r}; add a PromptSet to"
            f" tricl.text.prompts.PROMPT_SETS (known: {sorted(PROMPT_SETS)})"
        )
    prompt_set = PROMPT_SETS[dataset_name]
    return [prompt_set.prompts(c) for c in classes]
