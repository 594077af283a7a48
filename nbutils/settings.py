"""Typed settings for a trainer, read from a notebook's ``cfg.model`` in one way.

Every trainer (``torch_train.TrainConfig``, ``keras_train.KerasTrainConfig``,
``hf_train.TransferConfig``) is a dataclass derived from :class:`Settings`, so the
path from YAML to a trainer is always ``Config.from_settings(cfg.model, **changes)``:
the YAML defaults and the profile were merged and type-checked by
:func:`nbutils.setup`, and the dataclass picks its own fields and checks their ranges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

__all__ = ["Settings"]

S = TypeVar("S", bound="Settings")


class Settings:
    """Mixin for settings dataclasses: ``from_settings``, ``to_dict`` and range checks.

    Every field named in the config's range table (:func:`nbutils.config.range_problem`)
    is checked on construction, so a trainer built without a notebook's config refuses
    ``epochs=0`` the way :func:`nbutils.setup` does; :meth:`validate` adds a class's own
    checks.
    """

    def __post_init__(self) -> None:
        from .config import range_problem

        for f in fields(self):  # type: ignore[arg-type]
            problem = range_problem(f.name, getattr(self, f.name))
            if problem is not None:
                raise ValueError(f"{type(self).__name__}: {problem}")
        self.validate()

    def validate(self) -> None:
        """Checks beyond the shared ranges (none by default)."""

    @classmethod
    def field_names(cls) -> set[str]:
        """The settings this class holds."""
        return {f.name for f in fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls: type[S], settings: Mapping[str, Any] | None = None,
                      **changes: Any) -> S:
        """The matching keys of ``settings`` (e.g. ``cfg.model``), then ``changes``.

        Keys of ``settings`` that this class does not hold are ignored (a notebook's
        settings also hold what is not training); a key in ``changes`` that it does
        not hold is an error.
        """
        names = cls.field_names()
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(names))}")
        given = dict(settings or {})
        values = {k: given[k] for k in names if k in given}
        values.update(changes)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)  # type: ignore[call-overload]
