"""Hardware profiles and per-notebook settings, resolved into one validated config.

``configs/defaults.yaml`` lists every valid top-level key with its default (and so
its type); ``configs/models/<name>.yaml`` does the same for one notebook's model
settings. A profile (``configs/profiles/<name>.yaml``) overlays both; keyword
overrides from the notebook overlay the profile. A key that is not in the
defaults, or a value of the wrong type, is an error naming the key, the file and
the closest valid key.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .hardware import Hardware, detect_hardware
from .paths import configs_dir, resolve_path

__all__ = [
    "ConfigError",
    "Section",
    "RunConfig",
    "available_profiles",
    "choose_profile",
    "load_config",
    "model_settings",
    "variant_name",
    "range_problem",
]

PROFILE_ENV = "NBUTILS_PROFILE"
SMOKE_NOTE = ("smoke profile: tiny synthetic data and an epoch or two, so accuracy near chance "
              "is expected; it checks that everything runs, and shows nothing about the models")
LOWVRAM_LIMIT_GB = 8.0


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says how to fix it."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Plain YAML keeps the last one, so a second ``data:`` block would silently replace
    the first (and drop, say, a profile's caps).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"Config file not found: {path}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    return type(value).__name__


# keys whose default is null but whose values have a type
NULLABLE_TYPES: dict[str, type] = {"max_train_per_class": int, "max_test_per_class": int}


def _check_type(key: str, value: Any, default: Any, source: str) -> Any:
    """Return ``value`` if it fits the type of ``default`` (ints widen to floats)."""
    if value is None:
        return value
    if default is None:
        expected = NULLABLE_TYPES.get(key.rsplit(".", 1)[-1])
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise ConfigError(
                f"'{key}' in {source} must be {expected.__name__} or null, "
                f"got {_type_name(value)} {value!r}"
            )
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"'{key}' in {source} must be {_type_name(default)} (like {default!r}), "
            f"got {_type_name(value)} {value!r}"
        )
    return value


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if match:
        return f"Did you mean '{match[0]}'?"
    return f"Valid keys: {', '.join(sorted(valid))}"


def _merge(base: dict, overlay: Mapping, source: str, prefix: str = "") -> dict:
    """Overlay ``overlay`` on ``base`` (a copy), validating keys and types against ``base``."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(
                f"Unknown config key '{dotted}' in {source}. {_closest(key, list(base))}"
            )
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{dotted}' in {source} must be a mapping of keys to values")
            out[key] = _merge(default, value, source, prefix=f"{dotted}.")
        else:
            out[key] = _check_type(dotted, value, default, source)
    return out


class Section(Mapping):
    """Read-only attribute access to a nested config mapping: ``cfg.data.image_size``."""

    def __init__(self, values: Mapping[str, Any], name: str = "config") -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_name", name)

    def __getattr__(self, key: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if key not in values:
            name = object.__getattribute__(self, "_name")
            raise AttributeError(f"{name} has no key '{key}'. {_closest(key, list(values))}")
        value = values[key]
        return Section(value, f"{self._name}.{key}") if isinstance(value, dict) else value

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Configs are read-only: pass overrides to nbutils.setup(...)")

    def __getitem__(self, key: str) -> Any:
        try:
            return self.__getattr__(key)
        except AttributeError as exc:  # a mapping says KeyError (and .get() relies on it)
            raise KeyError(str(exc)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the values as plain dicts."""
        return copy.deepcopy(self._values)

    def __repr__(self) -> str:
        return f"Section({self._values!r})"


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one notebook run."""

    profile: str
    values: dict[str, Any]
    hardware: Hardware
    model_name: str | None = None
    sources: tuple[str, ...] = field(default_factory=tuple)
    variant: str = ""

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        if key == "model":  # the property raised: keep its message, not a generic one
            raise AttributeError("No model settings: call nbutils.setup(..., model='name')")
        return Section(self.values, "config").__getattr__(key)

    @property
    def model(self) -> Section:
        """This notebook's model settings (``configs/models/<model_name>.yaml`` + profile)."""
        if self.model_name is None:
            raise AttributeError("No model settings: call nbutils.setup(..., model='name')")
        return Section(self.values["model"], f"models.{self.model_name}")

    @property
    def outputs_dir(self) -> Path:
        """Absolute path of the outputs folder."""
        return resolve_path(self.values["paths"]["outputs_dir"])

    @property
    def data_dir(self) -> Path:
        """Absolute path of the data folder."""
        return resolve_path(self.values["paths"]["data_dir"])

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to reproduce the run, as plain JSON-able values."""
        return {"profile": self.profile, "model_name": self.model_name, "variant": self.variant,
                **copy.deepcopy(self.values)}

    def run_id(self, notebook: str) -> str:
        """``<notebook>__<dataset slug>__<profile>[__<variant>]``: names the run's model,
        checkpoint, figures and record (the same function as ``RunRecord.run_id``)."""
        from .records import make_run_id

        return make_run_id(notebook, self.values["dataset"], self.profile, self.variant)

    def summary(self) -> str:
        """A one-screen, human-readable summary."""
        v = self.values
        d = v["data"]
        lines = [
            f"profile      : {self.profile}  ({v['description']})",
            f"device       : {v['device']}  [{self.hardware.describe()}]",
            f"seed         : {v['seed']}   precision: {v['precision']}",
            f"dataset      : {v['dataset']}",
            f"image size   : {d['image_size']}   val fraction: {d['val_fraction']}   "
            f"caps/class: train={d['max_train_per_class']} test={d['max_test_per_class']}",
        ]
        if self.model_name is not None:
            settings = ", ".join(f"{k}={val}" for k, val in v["model"].items())
            lines.append(f"{self.model_name:<13}: {settings}")
        if self.profile == "smoke":
            lines.append(f"note         : {SMOKE_NOTE}")
        return "\n".join(lines)


def available_profiles() -> list[str]:
    """Names of the profiles in ``configs/profiles/``."""
    return sorted(p.stem for p in (configs_dir() / "profiles").glob("*.yaml"))


def choose_profile(hardware: Hardware | None = None) -> str:
    """Pick a profile for ``auto``: ``$NBUTILS_PROFILE``, else from the hardware.

    ``gpu`` or ``lowvram`` by the CUDA card's memory, else ``cpu``, which an Apple-silicon
    Mac also gets (sized for a laptop; its ``device: auto`` then trains PyTorch on ``mps``).
    """
    env = os.environ.get(PROFILE_ENV, "").strip()
    if env and env != "auto":
        return env
    hw = hardware or detect_hardware()
    if not hw.cuda:
        return "cpu"
    return "lowvram" if (hw.gpu_memory_gb or 0) < LOWVRAM_LIMIT_GB else "gpu"


def _override_targets(key: str, values: dict[str, Any], model: dict[str, Any] | None
                      ) -> list[str]:
    """Every setting a flat override key could mean: ``seed``, ``data.KEY``, ``model.KEY``..."""
    targets = []
    if key in values and not isinstance(values[key], dict):
        targets.append(key)
    for section in ("data", "paths"):
        if key in values[section]:
            targets.append(f"{section}.{key}")
    if model is not None and key in model:
        targets.append(f"model.{key}")
    return targets


def _split_overrides(
    overrides: Mapping[str, Any], values: dict[str, Any], model: dict[str, Any] | None
) -> tuple[dict, dict]:
    """Route flat or dotted override keys to the top level, ``data``/``paths`` or the model.

    A flat key that names two settings (``image_size`` when the model has one too) is
    an error that says which dotted keys to use instead.
    """
    top: dict[str, Any] = {}
    mod: dict[str, Any] = {}
    for key, value in overrides.items():
        targets = [key] if "." in key else _override_targets(key, values, model)
        if len(targets) > 1:
            raise ConfigError(f"Override '{key}' is ambiguous: it could mean "
                              f"{' or '.join(repr(t) for t in targets)}. Pass one of those "
                              "dotted keys instead.")
        if not targets:
            valid = [k for k in values if not isinstance(values[k], dict)]
            valid += list(values["data"]) + list(values["paths"]) + list(model or {})
            raise ConfigError(f"Unknown override '{key}' passed to setup(). {_closest(key, valid)}")
        head, _, rest = targets[0].partition(".")
        if head in ("model", "models") and rest:
            if model is None:
                raise ConfigError(f"Override '{key}' sets a model setting, but no model was "
                                  "chosen: call nbutils.setup(..., model='name').")
            mod[rest] = value
        elif rest:
            top.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    return top, mod


# overrides that change where things are or how fast they load, not what a run computes
_NOT_A_VARIANT = {"dataset", "data_dir", "outputs_dir", "num_workers", "cache", "device", "tracking",
                  # the notebooks' side experiments: the model a run trains stays the same
                  "compare_norms", "ablation", "compare_depth", "compare_augment",
                  "pipeline_epochs", "shortcut_lab"}


def variant_name(overrides: Mapping[str, Any]) -> str:
    """A file-name-safe tag for the overrides that change a run's result (``epochs-5``).

    Empty when the profile's settings are used as they are. Long tags keep a readable
    start and end in a hash of the whole.
    """
    import hashlib
    import re

    parts = [f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in sorted(overrides.items())
             if k.rsplit(".", 1)[-1] not in _NOT_A_VARIANT and v is not None]
    tag = re.sub(r"[^A-Za-z0-9.+-]+", "_", "_".join(parts)).strip("_")
    if len(tag) > 40:
        tag = f"{tag[:31]}-{hashlib.sha1(tag.encode()).hexdigest()[:8]}"
    return tag


def model_settings(name: str, *overlays: Mapping[str, Any]) -> dict[str, Any]:
    """``configs/models/<name>.yaml`` with each mapping of ``overlays`` merged on top.

    The same reading and checking as :func:`load_config` (unknown keys and wrong types
    are a :class:`ConfigError`), for code that builds a model without a notebook's
    config (tests, benchmarks).
    """
    cdir = configs_dir()
    path = cdir / "models" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (cdir / "models").glob("*.yaml"))
        raise ConfigError(f"Unknown model '{name}'. {_closest(name, known)}")
    values = _read_yaml(path)
    for overlay in overlays:
        values = _merge(values, overlay, f"settings of {name}")
    return values


def _profile_values(cdir: Path, name: str) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Defaults overlaid by profile ``name``, its ``models`` section (names checked), its path."""
    profile_path = cdir / "profiles" / f"{name}.yaml"
    if not profile_path.is_file():
        raise ConfigError(
            f"Unknown profile '{name}'. {_closest(name, available_profiles())} "
            f"(profiles live in {cdir / 'profiles'})"
        )
    prof = _read_yaml(profile_path)
    prof_models = prof.pop("models", {}) or {}
    if not isinstance(prof_models, dict):
        raise ConfigError(f"'models' in {profile_path} must map model names to settings")
    known_models = sorted(p.stem for p in (cdir / "models").glob("*.yaml"))
    for mname in prof_models:
        if mname not in known_models:
            raise ConfigError(
                f"Unknown model '{mname}' under 'models' in {profile_path}. "
                f"{_closest(mname, known_models)}"
            )
    values = _merge(_read_yaml(cdir / "defaults.yaml"), prof, str(profile_path))
    return values, prof_models, profile_path


# Ranges checked wherever a setting of that name appears (top level, data, any model), so an
# impossible value stops the run when the config is resolved, not minutes later.
_RANGES: dict[str, tuple[float | None, float | None, str]] = {
    **{k: (1, None, "at least 1") for k in (
        "epochs", "batch_size", "probe_epochs", "gradient_accumulation_steps",
        "samples_per_class", "n_images", "latency_repeats", "throughput_batches",
        "bootstrap_samples", "ece_bins", "deletion_steps", "layers_compared", "layer_images",
        "examples_per_kind", "randomization_images", "deletion_images", "max_duplicate_examples",
        "max_train_per_class", "max_test_per_class", "dense_units", "fc_width",
        "convs_per_block", "conv1_kernel", "lr_find_steps")},
    **{k: (0, None, "at least 0") for k in (
        "warmup_epochs", "weight_decay", "num_workers", "compare_epochs", "ablation_epochs",
        "pipeline_epochs", "early_stopping_patience", "grad_clip", "warmup_repeats",
        "eval_images", "l2", "compare_max_train", "pointing_tolerance", "time_budget_s",
        "threads", "near_duplicate_distance", "n_disagreements", "augment_padding",
        "rotation", "translate", "zoom", "contrast")},
    **{k: (0, 4, "in [0, 4]") for k in ("mixup_alpha", "cutmix_alpha")},
    **{k: (0, 1, "in [0, 1]") for k in ("threshold", "rand_augment_factor")},
    **{k: (0, 1, "in [0, 1)") for k in ("dropout", "label_smoothing")},
    **{k: (0, 1, "in [0, 1]") for k in ("freeze_fraction", "warmup_ratio", "momentum",
                                        "bn_momentum")},
    **{k: (0, None, "greater than 0") for k in ("lr", "learning_rate", "probe_learning_rate")},
    **{k: (8, None, "at least 8 pixels") for k in ("image_size", "input_size")},
    **{k: (0, 1, "between 0 and 1 (exclusive)") for k in ("val_fraction", "test_fraction")},
}


def _in_range(value: Any, low: float | None, high: float | None, rule: str) -> bool:
    if low is not None and (value < low or (value == low and rule.startswith("greater"))):
        return False
    if high is not None and (value > high or (value == high and ")" in rule)):
        return False
    return not (rule.startswith("between") and value in (low, high))


def range_problem(key: str, value: Any) -> str | None:
    """``"epochs must be at least 1, got 0"`` when ``value`` is outside the range of the
    setting named ``key``; ``None`` when it is inside or the setting has no range.

    The one table of ranges, used by :func:`load_config` and by the trainers' settings
    classes (:class:`nbutils.settings.Settings`).
    """
    if (key in _RANGES and isinstance(value, (int, float)) and not isinstance(value, bool)
            and not _in_range(value, *_RANGES[key])):
        return f"{key} must be {_RANGES[key][2]}, got {value!r}"
    return None


def _check_ranges(values: dict[str, Any], where: str) -> None:
    """Every known setting in ``values`` (nested) within its range, else a ConfigError."""
    for key, value in values.items():
        if isinstance(value, dict):
            _check_ranges(value, f"{where}{key}.")
        elif (problem := range_problem(key, value)) is not None:
            raise ConfigError(f"{where}{problem}")
    if "widths" in values and isinstance(values["widths"], list):
        if not values["widths"] or any(not isinstance(w, int) or w < 1 for w in values["widths"]):
            raise ConfigError(f"{where}widths must list positive ints, got {values['widths']!r}")


def _check_values(values: dict[str, Any], hw: Hardware) -> None:
    """Ranges and the device (``auto`` resolved in place); a :class:`ConfigError` if wrong."""
    if values.get("tracking", "none") not in ("none", "mlflow"):
        raise ConfigError(f"tracking must be none or mlflow, got {values['tracking']!r}")
    if values["device"] not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(f"device must be auto, cpu, cuda or mps, got {values['device']!r}")
    if values["device"] == "auto":
        values["device"] = "cuda" if hw.cuda else "mps" if hw.mps else "cpu"
    elif values["device"] == "mps" and not hw.mps:
        raise ConfigError("device 'mps' is the GPU of Apple-silicon Macs, and this is not one. "
                          "Use device='auto'.")
    elif values["device"] == "cuda" and not hw.cuda:
        raise ConfigError(
            "device 'cuda' was asked for but no CUDA GPU is visible. "
            "Use profile='cpu' (or device='auto'), or check `nvidia-smi`."
        )
    _check_ranges(values, "")
    values["precision_asked"] = values["precision"]
    values["precision"] = resolve_precision(values["precision"], values["device"],
                                            values["mixed_precision"], hw)
    values["mixed_precision"] = values["precision"] != "fp32"


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: str, mixed_precision: bool, hw: Hardware) -> str:
    """The number format a run trains in: ``fp32``, ``bf16``, ``fp16`` or ``mixed``.

    ``auto`` is bf16 on a CPU that computes bf16 natively (``hw.cpu_bf16``) and fp32 on
    other CPUs (emulated bf16 is slower than fp32) and on Apple's GPU; on a CUDA GPU it
    is ``mixed`` when ``mixed_precision`` is on (each framework takes bf16 where the GPU
    supports it, else fp16) and fp32 otherwise. An explicit value that the device cannot
    run is a :class:`ConfigError`.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device == "cuda":
        return ("mixed" if mixed_precision else "fp32") if precision == "auto" else precision
    if device == "mps":
        if precision not in ("auto", "fp32"):
            raise ConfigError(f"precision {precision} is not used on Apple's GPU (mps) by the "
                              "course's training loops; use precision='auto' or 'fp32'.")
        return "fp32"
    if precision == "auto":
        return "bf16" if hw.cpu_bf16 else "fp32"
    if precision == "fp16":
        raise ConfigError("precision fp16 needs a CUDA GPU; on the CPU use precision='bf16' "
                          "(on CPUs that compute it natively) or 'fp32'.")
    if precision == "bf16" and not hw.cpu_bf16:
        raise ConfigError("precision bf16: this CPU does not compute bf16 natively, and emulated "
                          "bf16 trains slower than fp32. Use precision='auto' or 'fp32'.")
    return precision


def load_config(
    profile: str = "auto",
    model: str | None = None,
    hardware: Hardware | None = None,
    **overrides: Any,
) -> RunConfig:
    """Resolve defaults + model settings + profile + overrides into a :class:`RunConfig`.

    ``None`` overrides are ignored so that notebook parameters left at ``None``
    mean "use the profile's value".
    """
    cdir = configs_dir()
    hw = hardware or detect_hardware()
    name = choose_profile(hw) if profile in (None, "", "auto") else profile
    values, prof_models, profile_path = _profile_values(cdir, name)
    sources = [str(cdir / "defaults.yaml"), str(profile_path)]
    model_values: dict[str, Any] | None = None
    if model is not None:
        model_values = model_settings(model)
        model_values = _merge(
            model_values, prof_models.get(model) or {}, f"{profile_path} (models.{model})"
        )
        sources.append(str(cdir / "models" / f"{model}.yaml"))
    else:
        # still validate every model section of the profile against its file
        for mname, settings in prof_models.items():
            _merge(model_settings(mname), settings or {}, f"{profile_path} (models.{mname})")

    given = {k: v for k, v in overrides.items() if v is not None}
    top, mod = _split_overrides(given, values, model_values)
    values = _merge(values, top, "setup() overrides")
    if model_values is not None:
        model_values = _merge(model_values, mod, "setup() overrides", prefix="model.")
        values["model"] = model_values
    _check_values(values, hw)
    return RunConfig(
        profile=name, values=values, hardware=hw, model_name=model, sources=tuple(sources),
        variant=variant_name(given)
    )
