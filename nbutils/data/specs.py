"""Dataset specs: short strings a person can type, such as ``cifar10`` or ``imagefolder:PATH``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetError", "DatasetSpec", "parse_spec", "KNOWN_KINDS"]

KNOWN_KINDS = ("cifar10", "cifar100", "imagefolder", "shapes")


class DatasetError(RuntimeError):
    """A dataset cannot be loaded; the message says what to do about it."""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec.

    Attributes:
        kind: one of :data:`KNOWN_KINDS`.
        arg: the part after the colon (a path for ``imagefolder``, images per class
            for ``shapes``), or ``None``.
        text: the spec as given.
    """

    kind: str
    arg: str | None
    text: str

    @property
    def slug(self) -> str:
        """A file-name-safe short name, e.g. ``imagefolder-cifar10-subset``."""
        if self.kind == "imagefolder" and self.arg:
            tail = self.arg.rstrip("/").split("/")[-1] or "root"
            base = f"imagefolder-{tail}"
        elif self.arg:
            base = f"{self.kind}-{self.arg}"
        else:
            base = self.kind
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in base)


def parse_spec(spec: str) -> DatasetSpec:
    """Parse ``cifar10``, ``cifar100``, ``imagefolder:PATH``, ``shapes`` or ``shapes:N``."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(
            f"A dataset spec is a non-empty string such as 'cifar10', got {spec!r}. "
            f"Known kinds: {', '.join(KNOWN_KINDS)}"
        )
    text = spec.strip()
    kind, _, arg = text.partition(":")
    kind = kind.lower()
    if kind not in KNOWN_KINDS:
        import difflib

        close = difflib.get_close_matches(kind, KNOWN_KINDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DatasetError(
            f"Unknown dataset spec '{text}'.{hint} Use one of: cifar10, cifar100, "
            "imagefolder:PATH, shapes, shapes:N"
        )
    if kind == "imagefolder" and not arg:
        raise DatasetError("imagefolder needs a path: 'imagefolder:/path/to/folder'")
    if kind in ("cifar10", "cifar100") and arg:
        raise DatasetError(f"'{kind}' takes no argument, got '{text}'")
    if kind == "shapes" and arg:
        if not arg.isdigit() or int(arg) < 4:
            raise DatasetError(f"'shapes:N' needs N (images per class) >= 4, got '{arg}'")
    return DatasetSpec(kind=kind, arg=arg or None, text=text)
