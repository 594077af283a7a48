"""Notebook 03 as a script: the Keras CNN, compiled and fitted with the course's callbacks.

With ``distribute: mirrored`` the model is built and compiled inside a
``tf.distribute.MirroredStrategy`` scope over every GPU (``mirrored_cpus: N`` splits the
CPU into N devices to try it without one).
"""

from __future__ import annotations

from typing import Any

from .. import keras_train
from ..data import load_for
from ..records import RunRecord
from ..runs import finish_run

__all__ = ["train"]


def train(cfg: Any, notebook: str) -> RunRecord:
    """Train, evaluate, save and record the Keras CNN as ``notebook`` does."""
    env = keras_train.setup_keras(cfg)
    run_id = cfg.run_id(notebook)
    model_dir = cfg.outputs_dir / "models" / run_id
    data = load_for(cfg, progress=False)
    strategy = keras_train.distribution_strategy(cfg.model)
    with strategy.scope():
        model = keras_train.build_cnn_for(data, cfg.model, seed=cfg.seed)
        result = keras_train.fit(model, data, keras_train.KerasTrainConfig.from_settings(cfg.model),
                                 log_dir=cfg.outputs_dir / "logs" / run_id, seed=cfg.seed,
                                 tensorboard_dir=cfg.outputs_dir / "tensorboard" / run_id)
    model = keras_train.float32_model(model, copy=strategy.num_replicas_in_sync > 1)
    tta = cfg.model.tta_flip
    probs = keras_train.predict_proba(model, data.test.images, tta_flip=tta)
    info = keras_train.classifier_info(data, "keras_cnn", tta_flip=tta, extra={"run_id": run_id})
    keras_train.save_classifier(model_dir, model, info)
    env = {**env, "trained_by": "nbutils.train", "replicas": strategy.num_replicas_in_sync}
    return finish_run(cfg, data, notebook=notebook, model="keras_cnn", probs=probs, fit=result,
                      num_params=model.count_params(), model_path=model_dir, extra=env,
                      val_probs=keras_train.predict_proba(model, data.val.images, tta_flip=tta))
