"""The one place that imports TensorFlow and Keras.

tensorflow-model-optimization only supports Keras 2, so the legacy ``tf_keras`` package
must be selected before TensorFlow is first imported. Every module that needs Keras
does ``from signbart.tfkeras import tf, keras``; nothing imports ``keras`` directly.
"""

import contextlib
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# 3: no C++ INFO/WARNING/ERROR lines (on a machine without a GPU, ERROR is "failed call to
# cuInit"); set it lower to debug TensorFlow itself.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 where TensorFlow's C++ logs past its log level: its shared
    libraries log from static initialisers while loading ("Unable to register cuDNN factory",
    "computation placer already registered"), and the TFLite converter through its own
    logger ("Ignored output_format"). Errors still raise, after; TF_CPP_MIN_LOG_LEVEL below 3
    shows everything."""
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] < "3":
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with quiet_stderr():
    import tensorflow as tf
    import tf_keras as keras

__all__ = ["keras", "quiet_stderr", "seed_everything", "set_threads", "tf"]


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
