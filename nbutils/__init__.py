"""nbutils: the shared machinery behind the image-classification course notebooks.

The numpy core (config, data, metrics, run records) never imports a deep learning
framework; the framework helpers live in their own modules (``nbutils.torch_train``,
``nbutils.keras_train``, ``nbutils.hf_train``) and are imported only by the
notebook that teaches that framework.
"""

import os as _os

from .hardware import apple_silicon as _apple_silicon

if _apple_silicon():  # operations the Apple GPU lacks run on the CPU (read when torch loads)
    _os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

from .config import ConfigError, RunConfig, load_config  # noqa: E402
from .setup import setup

__version__ = "0.1.0"
__all__ = ["ConfigError", "RunConfig", "load_config", "setup", "__version__"]
