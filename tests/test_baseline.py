import numpy as np

from signbart.baseline import features, fit
from signbart.config import VariantConfig
from signbart.data import open_dataset
from signbart.preprocess import prepare


def test_features_resample_each_valid_range_to_fixed_frames():
    x = np.zeros((2, 64, 1, 2), np.float32)
    mask = np.zeros((2, 64), np.float32)
    x[0, :5, 0, 0] = np.arange(5)               # a 5-frame ramp 0..4
    mask[0, :5] = 1
    x[1, :64, 0, 0] = np.linspace(0, 4, 64)
    mask[1] = 1
    f = features(x, mask, frames=3).reshape(2, 3, 1, 3)
    np.testing.assert_allclose(f[0, :, 0, 0], [0, 2, 4])
    np.testing.assert_allclose(f[1, :, 0, 0], [0, 2, 4], atol=1e-5)
    np.testing.assert_allclose(f[0, :, 0, 2], [0, 1, 1])    # presence: x=0,y=0 at frame 0


def test_linear_baseline_generalises_to_an_unseen_signer(synth_dataset):
    ds = open_dataset(synth_dataset)
    fold = ds.fold("user02")
    v = VariantConfig(name="v")
    train, test = prepare(ds, fold.train, v), prepare(ds, fold.test, v)
    a, b = fit(train, 10, seed=3), fit(train, 10, seed=3)
    np.testing.assert_array_equal(a.weights, b.weights)
    top1 = (a.predict(test.x, test.mask).argmax(1) == test.y).mean()
    assert top1 >= 0.5        # chance is 0.1; it scores 0.8-1.0 on this synthetic data
    assert a.params == a.weights.size + 10


def test_a_padded_deviation_keeps_a_nearly_constant_point_from_outvoting_the_rest():
    """Keypoint 1 barely moves over the training clips (1e-4, with the class); a new signer
    holds it 0.01 off, otherwise like class 0: unpadded, that z-score of ~100 decides."""
    from signbart.preprocess import Prepared

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = np.zeros((80, 4, 2, 2), np.float32)
    x[..., 0, :] = (0.3 + 0.4 * y)[:, None, None] + rng.normal(0, 0.05, (80, 4, 2))
    x[..., 1, :] = (0.5 + 1e-4 * y)[:, None, None] + rng.normal(0, 2e-5, (80, 4, 2))
    prep = Prepared(x, np.ones((80, 4), np.float32), y.astype(np.int32), np.zeros(80, bool))
    clip = x[:1].copy()
    clip[0, :, 0] = 0.3
    clip[0, :, 1] = 0.51
    mask = np.ones((1, 4), np.float32)
    raw = fit(prep, 2, seed=0, std_pad=1e-6).predict(clip, mask)[0]
    padded = fit(prep, 2, seed=0).predict(clip, mask)[0]
    assert raw.argmax() == 1 and padded.argmax() == 0
