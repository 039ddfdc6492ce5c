"""FP32 training of SignBART on one LOSO fold.

    signbart train --config configs/arabic-asl-65kpts.yaml --data data/synth-demo \
        --holdout user01 --seed 42 --epochs 80 --out runs/demo

Every choice made while training (the learning-rate schedule, early stopping, the checkpoint
kept) looks only at the inner-validation signers; the held-out signer's samples are sealed
in the dataset and cannot be read until training has finished.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from signbart.augment import hand_bank, make_augment
from signbart.config import EVAL_BATCH, TrainConfig, VariantConfig
from signbart.data import Dataset, Fold
from signbart.errors import ConfigError
from signbart.preprocess import Prepared, Selection, prepare
from signbart.tfkeras import keras, seed_everything, tf

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: object
    params: int
    epochs_run: int                        # the kept model's training epochs
    best_epoch: int
    train_seconds: float
    inner_epochs: int | None = None         # the inner run's (early stopping may end it sooner)
    train_data: Prepared | None = None     # what the kept model was fit on (QAT, export reuse it)
    val_data: Prepared | None = None       # the inner-validation signers
    inner_train_data: Prepared | None = None   # the inner run's training signers
    inner_val_logits: np.ndarray | None = None  # the inner run's model on ``val_data``
    inner_val_accuracy: float | None = None    # its best inner-validation accuracy
    inner_model: object = None                 # the inner run's kept model, when refit


def as_model_inputs(x, mask, y=None):
    inputs = {"keypoints": x, "attention_mask": mask}
    return inputs if y is None else (inputs, y)


def make_dataset(prep: Prepared, batch_size: int, seed: int, augment=None,
                 shuffle: bool = True) -> tf.data.Dataset:
    """Batched ``({keypoints, attention_mask}, label)``; order and augmentation follow ``seed``.

    Preprocessing is done once up front (``prepare``); only augmentation runs per epoch, as
    graph ops in parallel map calls.
    """
    ds = tf.data.Dataset.from_tensor_slices((prep.x, prep.mask, prep.y))
    if shuffle:
        ds = ds.shuffle(len(prep), seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda item, r: (*augment(item[0], item[1], tf.stack([r, tf.constant(0, tf.int64)])),
                             item[2]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).map(as_model_inputs).prefetch(tf.data.AUTOTUNE)


def sparse_ce(label_smoothing: float, num_labels: int):
    """Sparse cross-entropy from logits, with optional label smoothing (Keras 2's sparse loss
    has none)."""
    if label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dense = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)

    def loss(y_true, logits):
        return dense(tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_labels), logits)

    return loss


def learning_rate(cfg: TrainConfig, n_train: int):
    """The reference's constant rate (cut on plateaus by a callback), or a per-step cosine
    decay after a linear warm-up: with a few hundred samples the last epochs at a tiny rate
    settle the weights, so the epoch picked on the inner signers is not a noisy one."""
    if cfg.schedule == "plateau":
        return cfg.lr
    steps = cfg.epochs * -(-n_train // cfg.batch_size)
    warmup = cfg.warmup_epochs * -(-n_train // cfg.batch_size)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr / 100, decay_steps=max(1, steps - warmup), alpha=0.0,
        warmup_target=cfg.lr, warmup_steps=warmup)


class KeepBest(keras.callbacks.Callback):
    """Remember the weights of the best inner-validation epoch: highest accuracy, then lowest
    loss. Accuracy leads because on an unseen signer the loss of a model that is getting
    better often still rises (over-confident mistakes), which would pick the first epoch."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix, self.best, self.best_epoch, self.weights = prefix, None, 0, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        score = (logs.get(f"{self.prefix}accuracy", 0.0), -logs.get(f"{self.prefix}loss", np.inf))
        if self.best is None or score > self.best:
            self.best, self.best_epoch = score, epoch + 1
            self.weights = self.model.get_weights()


class ReportEpochs(keras.callbacks.Callback):
    """Forward per-epoch metrics (e.g. to Ray Tune) for live progress: the checkpoint's metric,
    the learning rate and the best epoch so far first, as Tune's table shows the first ones."""

    def __init__(self, report, keep: KeepBest):
        super().__init__()
        self.report, self.keep = report, keep

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items() if k != "lr"}  # lr: below
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations)
        score = f"{self.keep.prefix}accuracy"
        self.report({"epoch": epoch + 1, score: logs.pop(score, None),
                     "learning_rate": float(keras.backend.get_value(lr)),
                     "best_epoch": self.keep.best_epoch, **logs})


class WeightEMA(keras.callbacks.Callback):
    """An exponential moving average of the trainable weights, updated after every step; the
    model is scored and kept with the average. Inner validation sees the averaged weights
    (swapped in when a test pass begins, swapped back at the epoch's end, after ``KeepBest``,
    listed before this, has taken them), and a run without validation ends on them.
    The decay ramps up as ``(1 + step) / (10 + step)`` so the first steps' random weights
    fade out of a short run."""

    def __init__(self, decay: float):
        super().__init__()
        self.decay = float(decay)
        self.swapped = False

    def on_train_begin(self, logs=None):
        weights = self.model.trainable_weights
        self.average = [tf.Variable(w, trainable=False) for w in weights]
        self.backup = [tf.Variable(w, trainable=False) for w in weights]
        self.step = tf.Variable(0.0, trainable=False)

        @tf.function
        def update():
            self.step.assign_add(1.0)
            d = tf.minimum(self.decay, (1.0 + self.step) / (10.0 + self.step))
            for a, w in zip(self.average, weights):
                a.assign(d * a + (1.0 - d) * w)

        self._update = update

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def _swap_in(self):
        for b, a, w in zip(self.backup, self.average, self.model.trainable_weights):
            b.assign(w)
            w.assign(a)
        self.swapped = True

    def on_test_begin(self, logs=None):
        if not self.swapped:
            self._swap_in()

    def on_epoch_end(self, epoch, logs=None):
        if self.swapped:
            for b, w in zip(self.backup, self.model.trainable_weights):
                w.assign(b)
            self.swapped = False

    def on_train_end(self, logs=None):
        self._swap_in()


def fold_augment(cfg: TrainConfig, variant: VariantConfig, layout, train_prep: Prepared,
                 seed: int):
    """The training augmentation for one fold; ``hand_paste`` draws its hands from that fold's
    own training frames, so the bank is built here rather than in the config."""
    sel = Selection.of(variant, layout)
    left_hand = [i for i, k in enumerate(variant.input_keys(layout))
                 if k.startswith(("left_hand.", "anchor.left_"))]
    bank = hand_bank(train_prep.x, left_hand, seed=seed) if cfg.augment.hand_paste else None
    return make_augment(cfg.augment, sel.groups, sel.mirror, left_hand, bank)


def concat(*parts: Prepared) -> Prepared:
    return Prepared(x=np.concatenate([p.x for p in parts]),
                    mask=np.concatenate([p.mask for p in parts]),
                    y=np.concatenate([p.y for p in parts]),
                    mirrored=np.concatenate([p.mirrored for p in parts]))


def compile_model(model, cfg: TrainConfig, num_labels: int, n_train: int):
    """``model`` compiled for training as every fit does it (``bench_train`` times this)."""
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=learning_rate(cfg, n_train),
                                                   weight_decay=cfg.weight_decay),
                  loss=sparse_ce(cfg.label_smoothing, num_labels),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=cfg.jit_compile)
    return model


@dataclass
class _Fit:
    model: object
    epochs_run: int
    best_epoch: int
    seconds: float
    best_score: float | None


def _fit(cfg: TrainConfig, variant: VariantConfig, layout, train_prep: Prepared,
         val_prep: Prepared | None, out_dir: Path, seed: int, report, keep_best: bool,
         build) -> _Fit:
    """One training run from fresh weights (same seed, same initial weights)."""
    seed_everything(seed)
    model_cfg = variant.model_config()
    augment = fold_augment(cfg, variant, layout, train_prep, seed)
    train_ds = make_dataset(train_prep, cfg.batch_size, seed, augment)
    val_ds = (make_dataset(val_prep, EVAL_BATCH, seed, shuffle=False) if val_prep is not None
              else None)
    model = compile_model(build(model_cfg), cfg, model_cfg.num_labels, len(train_prep))
    prefix = "val_" if val_ds is not None else ""
    monitor = prefix + "accuracy"
    keep = KeepBest(prefix)
    callbacks = [
        keras.callbacks.CSVLogger(str(out_dir / "train_log.csv")),
        keras.callbacks.TensorBoard(str(out_dir / "tensorboard"), write_graph=False,
                                    profile_batch=0),
    ]
    if keep_best:
        callbacks.append(keep)
    if cfg.ema:
        callbacks.append(WeightEMA(cfg.ema))   # after KeepBest: it keeps the averaged weights
    if cfg.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode="max", factor=cfg.plateau_factor,
            patience=cfg.plateau_patience, min_lr=cfg.min_lr))
    if cfg.early_stopping and val_ds is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max",
                                                       patience=cfg.early_stopping))
    if report is not None:
        callbacks.append(ReportEpochs(report, keep))
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, verbose=0,
                        callbacks=callbacks)
    seconds = time.perf_counter() - start
    epochs_run = len(history.history.get("loss", []))
    if keep.weights is not None:
        model.set_weights(keep.weights)
    return _Fit(model, epochs_run, keep.best_epoch or epochs_run, seconds,
                keep.best[0] if keep.best is not None else None)


def train(cfg: TrainConfig, variant: VariantConfig, dataset: Dataset, fold: Fold, out_dir,
          seed: int, report=None, build=None) -> TrainResult:
    """Train on ``fold.train``, choose on ``fold.val``; never reads ``fold.test``.

    With ``cfg.refit`` the inner run only chooses the number of epochs (its best inner-val
    epoch); the model kept is then trained afresh on the training and inner signers together
    for that many epochs, so the shipped model has seen every signer but the held-out one.
    ``build`` makes the model from the variant's ``ModelConfig`` (SignBART's by default).
    """
    from signbart.model import build_model, count_params

    build = build or build_model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = variant.model_config()
    if model_cfg.num_labels != len(dataset.labels):
        raise ConfigError(f"variant {variant.name!r}: num_labels is {model_cfg.num_labels} but "
                          f"{dataset.path}/labels.json has {len(dataset.labels)} classes")
    dataset.seal([fold.holdout])
    train_prep = prepare(dataset, fold.train, variant, cfg.max_frames)
    val_prep = prepare(dataset, fold.val, variant, cfg.max_frames)
    has_val = len(val_prep) > 0
    log.info("SignBART %s: %d train / %d val samples%s", variant.name, len(train_prep),
             len(val_prep), ", then refit on both" if cfg.refit and has_val else "")
    inner = _fit(cfg, variant, dataset.layout, train_prep, val_prep if has_val else None,
                 out_dir, seed, report, keep_best=True, build=build)
    inner_logits = (inner.model.predict(as_model_inputs(val_prep.x, val_prep.mask),
                                        batch_size=EVAL_BATCH,
                                        verbose=0) if has_val else None)
    final, final_prep, seconds = inner, train_prep, inner.seconds
    if cfg.refit and has_val:
        epochs = max(inner.best_epoch, cfg.warmup_epochs + 1 if cfg.schedule == "cosine" else 1)
        final_prep = concat(train_prep, val_prep)
        refit_dir = out_dir / "refit"
        refit_dir.mkdir(exist_ok=True)
        final = _fit(replace(cfg, epochs=epochs, early_stopping=0), variant, dataset.layout,
                     final_prep, None, refit_dir, seed,
                     None if report is None else (lambda m: report({**m, "refit": 1})),
                     keep_best=False, build=build)
        seconds += final.seconds
    dataset.unseal()
    return TrainResult(model=final.model, params=count_params(final.model),
                       epochs_run=final.epochs_run, best_epoch=inner.best_epoch,
                       train_seconds=seconds, inner_epochs=inner.epochs_run,
                       train_data=final_prep, val_data=val_prep,
                       inner_train_data=train_prep, inner_val_logits=inner_logits,
                       inner_val_accuracy=inner.best_score if has_val else None,
                       inner_model=inner.model if final is not inner else None)
