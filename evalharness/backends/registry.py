"""Backends by name: ``--backend hf`` (the default), or a ``name:model`` prefix on --model.

Each backend has its own typed options (device, dtype, batch size for the local one; a server
URL for a remote one), split out of the run's settings; an option the backend does not take
is a one-line error with "did you mean".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evalharness.backends.protocol import Backend
from evalharness.core.errors import EvalHarnessError
from evalharness.core.registry import Registry, did_you_mean

DEFAULT_BACKEND = "hf"


@dataclass(frozen=True)
class BackendSpec:
    """How to build one kind of backend: ``factory(model, options)`` and the options it takes."""

    factory: Callable[[str, Mapping[str, Any]], Backend]
    options: frozenset[str]
    description: str


BACKENDS: Registry[BackendSpec] = Registry("backend", hint="choose one of `--backend` hf, …")


def register_backend(name: str, options: frozenset[str], description: str) -> Callable[
    [Callable[[str, Mapping[str, Any]], Backend]], Callable[[str, Mapping[str, Any]], Backend]
]:
    def decorator(factory: Callable[[str, Mapping[str, Any]], Backend]) -> Callable[[str, Mapping[str, Any]], Backend]:
        BACKENDS.register(name)(BackendSpec(factory, options, description))
        return factory

    return decorator


def split_model(model: str, backend: str | None) -> tuple[str, str]:
    """(backend, model): ``--backend NAME`` wins; else a known ``NAME:`` prefix; else hf."""
    _load_builtin()
    if backend:
        BACKENDS.get(backend)
        return backend, model
    prefix, sep, rest = model.partition(":")
    if sep and prefix in BACKENDS and rest:
        return prefix, rest
    return DEFAULT_BACKEND, model


def build_backend(name: str, model: str, options: Mapping[str, Any]) -> Backend:
    _load_builtin()
    spec = BACKENDS.get(name)
    unknown = sorted(set(options) - spec.options)
    if unknown:
        raise EvalHarnessError(
            f"backend {name} has no setting {unknown[0]!r}{did_you_mean(unknown[0], sorted(spec.options))}"
        )
    return spec.factory(model, options)


def _load_builtin() -> None:
    """Import the built-in backends, each registering itself (imported lazily: torch is heavy)."""
    import evalharness.backends.endpoint  # noqa: F401
    import evalharness.backends.hf.backend  # noqa: F401
    import evalharness.backends.openai_compat  # noqa: F401
