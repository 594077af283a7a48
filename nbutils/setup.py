"""``nbutils.setup``: the first call of every notebook."""

from __future__ import annotations

from typing import Any

from .config import RunConfig, load_config
from .seeding import seed_everything

__all__ = ["setup"]


def setup(profile: str = "auto", model: str | None = None, verbose: bool = True,
          **overrides: Any) -> RunConfig:
    """Resolve the profile and overrides, seed everything, pick the device, print a summary.

    Args:
        profile: ``auto`` (``$NBUTILS_PROFILE``, else chosen from the hardware) or a
            profile name from ``configs/profiles/``.
        model: the notebook's settings file in ``configs/models/`` (e.g. ``"alexnet"``).
        verbose: print the one-screen summary.
        **overrides: any config key (``dataset=...``, ``image_size=...``, ``epochs=...``
            or dotted ``data.image_size=...``); ``None`` means "keep the profile's value".

    Returns:
        The validated :class:`~nbutils.config.RunConfig`.
    """
    cfg = load_config(profile, model=model, **overrides)
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    if verbose:
        print(cfg.summary())
    return cfg
