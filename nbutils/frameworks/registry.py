"""The one list of frameworks the course trains with, and a model registry per framework.

Every place that needs "the frameworks" reads :data:`FRAMEWORKS`: reloading a saved
model (:func:`nbutils.inference.load_classifier`), validating run records, the runs
notebook 05 expects, the Grad-CAM backends of notebook 06 and the benchmarks of
``python -m nbutils.bench``. Adding a framework is one :func:`register_framework`
call here plus its own modules. The table holds module *names*, so reading it
imports no framework.

Each framework also keeps a :class:`ModelRegistry` of the architectures its
``load_classifier`` can rebuild (in the spirit of timm's ``register_model``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["Framework", "FRAMEWORKS", "UnknownFrameworkError", "register_framework",
           "get_framework", "frameworks", "framework_ids", "training_notebooks",
           "framework_of_notebook", "benchmarks", "gradcam_backends", "onnx_exporters",
           "ModelRegistry"]


class UnknownFrameworkError(KeyError):
    """A framework id, notebook or benchmark name that the registry does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Framework:
    """One framework of the course.

    Attributes:
        id: the name in run records and ``classifier.json`` (``pytorch``).
        label: how a person names it (``PyTorch``).
        module: the module with ``fit`` (returning a ``FitResult``),
            ``save_classifier``, ``load_classifier`` and ``predict_proba``.
        notebook: the notebook that trains its model (``02_pytorch_alexnet``); empty
            for a framework that only reloads models.
        gradcam_backend: the module with its Grad-CAM hooks.
        benchmark: the short name of its benchmark (``python -m nbutils.bench NAME``).
        benchmark_module: the module whose ``main(argv)`` runs that benchmark.
        native_modules: module prefixes of its native model classes, which tell
            Grad-CAM which backend explains a model passed in directly.
        onnx_exporter: the module whose ``export_graph(classifier, path, source_size)``
            writes the model's ONNX graph (``python -m nbutils.export``).
    """

    id: str
    label: str
    module: str
    notebook: str = ""
    gradcam_backend: str = ""
    benchmark: str = ""
    benchmark_module: str = ""
    native_modules: tuple[str, ...] = ()
    onnx_exporter: str = ""

    @property
    def prefix(self) -> str:
        """The notebook's number (``02``)."""
        return self.notebook[:2]

    def load_module(self) -> ModuleType:
        """Import the framework's training/saving module (imports the framework)."""
        return importlib.import_module(self.module)


FRAMEWORKS: dict[str, Framework] = {}


def register_framework(framework: Framework) -> Framework:
    """Add ``framework`` to the table (replacing an entry with the same id)."""
    FRAMEWORKS[framework.id] = framework
    return framework


def _unknown(kind: str, name: str, valid: list[str]) -> UnknownFrameworkError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"Did you mean '{close[0]}'?" if close else f"Known: {', '.join(valid) or 'none'}"
    return UnknownFrameworkError(f"Unknown {kind} {name!r}. {hint}")


def gradcam_backends() -> dict[str, str]:
    """Framework id -> its Grad-CAM backend module."""
    return {f.id: f.gradcam_backend for f in frameworks() if f.gradcam_backend}


def onnx_exporters() -> dict[str, str]:
    """Framework id -> the module that exports its models to ONNX."""
    return {f.id: f.onnx_exporter for f in frameworks() if f.onnx_exporter}


def get_framework(framework_id: str) -> Framework:
    """The entry for ``framework_id``; an error naming the known ones otherwise."""
    if framework_id not in FRAMEWORKS:
        raise _unknown("framework", framework_id, sorted(FRAMEWORKS))
    return FRAMEWORKS[framework_id]


def frameworks() -> list[Framework]:
    """Every framework, in notebook order (those without a training notebook last)."""
    return sorted(FRAMEWORKS.values(), key=lambda f: (not f.notebook, f.notebook, f.id))


def framework_ids() -> tuple[str, ...]:
    """The ids of every framework, in notebook order."""
    return tuple(f.id for f in frameworks())


def training_notebooks() -> dict[str, Framework]:
    """Notebook number prefix -> framework, for every training notebook."""
    return {f.prefix: f for f in frameworks() if f.notebook}


def framework_of_notebook(notebook: str) -> Framework:
    """The framework whose training notebook is ``notebook`` (name or number prefix)."""
    for f in training_notebooks().values():
        if notebook in (f.notebook, f.prefix):
            return f
    raise _unknown("training notebook", notebook, [f.notebook for f in frameworks()])


def benchmarks() -> dict[str, str]:
    """Benchmark name -> module, for ``python -m nbutils.bench``."""
    return {f.benchmark: f.benchmark_module for f in frameworks() if f.benchmark}


class ModelRegistry:
    """Architectures one framework can build and rebuild, by family name.

    ``@registry.register("alexnet", config=AlexNetConfig)`` on a builder records it;
    :meth:`build` makes a model from a config (or its JSON dict) and :meth:`config_from_dict`
    turns a saved ``model_config.json`` back into the config object.
    """

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self._builders: dict[str, tuple[Callable[..., Any], type | None]] = {}

    def register(self, family: str, config: type | None = None) -> Callable[[Callable], Callable]:
        """Decorator: ``builder(config) -> model`` for ``family`` (its config class optional)."""
        def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
            self._builders[family] = (builder, config)
            return builder
        return decorate

    def __contains__(self, family: object) -> bool:
        return family in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def names(self) -> list[str]:
        """The registered families."""
        return sorted(self._builders)

    def entry(self, family: str) -> tuple[Callable[..., Any], type | None]:
        """``(builder, config class)`` of ``family``; a clear error when unknown."""
        if family not in self._builders:
            raise _unknown(f"{self.framework} model family", family, self.names())
        return self._builders[family]

    def config_from_dict(self, family: str, values: dict[str, Any]) -> Any:
        """The config object of ``family`` from its JSON dict (the dict itself if no class)."""
        _, config_cls = self.entry(family)
        if config_cls is None:
            return dict(values)
        if hasattr(config_cls, "from_dict"):
            return config_cls.from_dict(values)
        return config_cls(**values)

    def build(self, family: str, config: Any) -> Any:
        """Build a model of ``family`` from its config object or dict."""
        builder, _ = self.entry(family)
        if isinstance(config, dict):
            config = self.config_from_dict(family, config)
        return builder(config)


register_framework(Framework(
    id="pytorch", label="PyTorch", notebook="02_pytorch_alexnet", module="nbutils.torch_train",
    gradcam_backend="nbutils.gradcam.torch_backend", benchmark="torch",
    benchmark_module="nbutils.benchmarks.torch_bench", native_modules=("torch.nn.",),
    onnx_exporter="nbutils.export.torch_onnx"))
register_framework(Framework(
    id="keras", label="Keras", notebook="03_keras_cnn", module="nbutils.keras_train",
    gradcam_backend="nbutils.gradcam.keras_backend", benchmark="keras",
    benchmark_module="nbutils.benchmarks.keras_bench", native_modules=("keras.", "tf_keras."),
    onnx_exporter="nbutils.export.keras_onnx"))
register_framework(Framework(
    id="huggingface", label="Hugging Face", notebook="04_hf_transfer_learning",
    module="nbutils.hf_train", gradcam_backend="nbutils.gradcam.hf_backend", benchmark="hf",
    benchmark_module="nbutils.benchmarks.hf_bench", native_modules=("transformers.",),
    onnx_exporter="nbutils.export.torch_onnx"))
# exported models: no training notebook, reloaded with ONNX Runtime alone
register_framework(Framework(id="onnx", label="ONNX Runtime", module="nbutils.export.runtime"))
