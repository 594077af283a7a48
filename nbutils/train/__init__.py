"""Train a course model outside Jupyter: ``python -m nbutils.train MODEL ...``.

Each recipe does what its notebook's training sections do, with the same config, data,
``fit`` and ``finish_run``, and writes the same run record, model folder and figures,
so notebooks 05-07 cannot tell a scripted run from a notebook run (a test checks that
script and notebook give the same predictions). The notebooks' side experiments (LRN vs
BatchNorm, the ablation, the range test's plot) stay in the notebooks.

    python -m nbutils.train alexnet --profile cpu --dataset imagefolder:PATH -p epochs=10
    torchrun --nproc_per_node 2 -m nbutils.train alexnet --profile cpu    # DDP, gloo/NCCL
    accelerate launch --num_processes 2 -m nbutils.train hf_transfer ... # the Trainer's own
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Recipe", "RECIPES", "get_recipe", "train_in_processes"]


@dataclass(frozen=True)
class Recipe:
    """A model the script trains: its config name, notebook and recipe module.

    The module has ``train(cfg, notebook) -> RunRecord | None`` (``None`` on every
    process but rank 0 of a multi-process run).
    """

    model: str
    notebook: str
    module: str

    def train(self, cfg: Any) -> Any:
        """Run the recipe for the resolved config ``cfg``."""
        return importlib.import_module(self.module).train(cfg, self.notebook)


RECIPES: dict[str, Recipe] = {r.model: r for r in (
    Recipe("alexnet", "02_pytorch_alexnet", "nbutils.train.torch_recipe"),
    Recipe("resnet", "02b_pytorch_resnet", "nbutils.train.torch_recipe"),
    Recipe("keras_cnn", "03_keras_cnn", "nbutils.train.keras_recipe"),
    Recipe("hf_transfer", "04_hf_transfer_learning", "nbutils.train.hf_recipe"),
)}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a ``KeyError`` naming the known ones otherwise."""
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f"Did you mean '{close[0]}'?" if close else f"Known: {', '.join(RECIPES)}"
        raise KeyError(f"No training recipe '{name}'. {hint}")
    return RECIPES[name]


def _worker(model: str, profile: str, dataset: str | None, params: dict[str, Any]) -> None:
    """One process of :func:`train_in_processes` (module level, so it can be started)."""
    import nbutils

    from .. import distributed

    recipe = get_recipe(model)
    cfg = nbutils.setup(profile, model=model, dataset=dataset, verbose=False, **params)
    recipe.train(cfg)
    distributed.shutdown()


def train_in_processes(model: str, num_processes: int = 2, profile: str = "auto",
                       dataset: str | None = None, **params: Any) -> Any:
    """Train ``model`` on ``num_processes`` processes from a notebook or a script, with
    ``accelerate.notebook_launcher`` (the same code as ``torchrun -m nbutils.train``;
    call it before the notebook touches a GPU). Returns the run record rank 0 wrote."""
    from accelerate import notebook_launcher

    import nbutils

    from ..records import read_record

    recipe = get_recipe(model)
    cfg = nbutils.setup(profile, model=model, dataset=dataset, verbose=False, **params)
    notebook_launcher(_worker, (model, cfg.profile, dataset, params), num_processes=num_processes)
    return read_record(cfg.outputs_dir / "metrics" / f"{cfg.run_id(recipe.notebook)}.json")
