"""The frameworks of the course: one registry (see :mod:`nbutils.frameworks.registry`)."""

from .registry import (
    FRAMEWORKS,
    Framework,
    ModelRegistry,
    UnknownFrameworkError,
    benchmarks,
    framework_ids,
    framework_of_notebook,
    frameworks,
    get_framework,
    gradcam_backends,
    register_framework,
    training_notebooks,
)

__all__ = ["FRAMEWORKS", "Framework", "ModelRegistry", "UnknownFrameworkError", "benchmarks",
           "framework_ids", "framework_of_notebook", "frameworks", "get_framework", "gradcam_backends",
           "register_framework", "training_notebooks"]
