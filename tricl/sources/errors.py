"""The error every source raises (its own module, so the file readers need nothing else)."""


class SourceError(ValueError):
    """An encoder cannot be imported or rebuilt; the one-line message names the fix."""
