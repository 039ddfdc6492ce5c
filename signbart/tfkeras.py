"""The one place that imports TensorFlow and Keras.

tensorflow-model-optimization only supports Keras 2, so the legacy ``tf_keras`` package
must be selected before TensorFlow is first imported. Every module that needs Keras
does ``from signbart.tfkeras import tf, keras``; nothing imports ``keras`` directly.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
import tf_keras as keras

__all__ = ["keras", "seed_everything", "set_threads", "tf"]


def set_threads(n: int) -> None:
    """Pin TF's thread pools to ``n`` so concurrent trials on one node don't oversubscribe.

    Must run before TF executes its first op; later calls are ignored by TF, so we skip them.
    """
    n = max(1, int(n))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        pass


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TF so weights and data order repeat for a given seed."""
    keras.utils.set_random_seed(int(seed))
