"""Errors the user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations


class EvalHarnessError(Exception):
    """Base class: bad input, missing files, unknown names. Never a bug in the harness."""

    exit_code = 2


class UnknownNameError(EvalHarnessError):
    """An unknown task, metric, backend or template name."""


class DataError(EvalHarnessError):
    """A data file is missing, unreadable or malformed."""


class ModelLoadError(EvalHarnessError):
    """A model path or hub id could not be loaded."""


class TemplateError(EvalHarnessError):
    """A prompt template could not be found or rendered."""


class CacheError(EvalHarnessError):
    """The response cache file cannot be used: not ours, locked, read-only or unwritable."""
