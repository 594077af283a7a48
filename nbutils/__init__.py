"""nbutils: the shared machinery behind the image-classification course notebooks.

The numpy core (config, data, metrics, run records) never imports a deep learning
framework; the framework helpers live in their own modules (``nbutils.torch_train``,
``nbutils.keras_train``, ``nbutils.hf_train``) and are imported only by the
notebook that teaches that framework.
"""

from .config import ConfigError, RunConfig, load_config
from .setup import setup

__version__ = "0.1.0"
__all__ = ["ConfigError", "RunConfig", "load_config", "setup", "__version__"]
