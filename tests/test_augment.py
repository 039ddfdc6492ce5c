import dataclasses

import numpy as np
import pytest

from signbart import augment as A
from signbart.config import AugmentConfig, VariantConfig
from signbart.layouts import get_layout
from signbart.preprocess import Selection
from signbart.tfkeras import tf

LAYOUT = get_layout("holistic-65")
SEL = Selection.of(VariantConfig(name="v"), LAYOUT)
LEFT = [i for i, k in enumerate(LAYOUT.keys) if k.startswith("left_hand.")]
RIGHT = [i for i, k in enumerate(LAYOUT.keys) if k.startswith("right_hand.")]


def _sample(length=40, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((64, 65, 2), np.float32)
    x[:length] = rng.uniform(0.1, 0.9, (length, 65, 2))
    x[:length, RIGHT[:3]] = 0.0                       # a few missing right-hand points
    mask = np.zeros(64, np.float32)
    mask[:length] = 1
    return x, mask


def test_mirror_flips_x_and_swaps_left_and_right_slots():
    x, _ = _sample()
    out = A.mirror(tf.constant(x[None]), SEL.mirror).numpy()[0]
    ls, rs = LAYOUT.index("pose.left_shoulder"), LAYOUT.index("pose.right_shoulder")
    np.testing.assert_allclose(out[:40, rs, 0], 1 - x[:40, ls, 0], atol=1e-6)
    np.testing.assert_allclose(out[:40, ls, 1], x[:40, rs, 1])
    np.testing.assert_allclose(out[:40, LEFT, 0], 1 - x[:40, RIGHT, 0] * (x[:40, RIGHT, 0] != 0)
                               - (x[:40, RIGHT, 0] == 0), atol=1e-6)
    np.testing.assert_array_equal(out[:40, LEFT[:3]], 0.0)    # missing stays missing, now left
    np.testing.assert_array_equal(out[40:], 0.0)
    np.testing.assert_allclose(A.mirror(tf.constant(out[None]), SEL.mirror).numpy()[0], x,
                               atol=1e-6)


def test_hand_drop_zeroes_exactly_the_non_dominant_hand():
    x, mask = _sample()
    cfg = AugmentConfig(prob=0.0, hand_drop=1.0)
    fn = A.make_augment(cfg, SEL.groups, SEL.mirror, LEFT)
    out, m = fn(tf.constant(x[None]), tf.constant(mask[None]), tf.constant([1, 2], tf.int64))
    out, m = out.numpy()[0], m[0]
    np.testing.assert_array_equal(out[:, LEFT], 0.0)
    others = [i for i in range(65) if i not in LEFT]
    np.testing.assert_array_equal(out[:, others], x[:, others])
    np.testing.assert_array_equal(m.numpy(), mask)


def test_rotation_and_noise_keep_missing_points_and_range():
    x, _ = _sample()
    for out in (A.rotate(tf.constant(x[None]), tf.constant([0.26])).numpy()[0],
                A.add_noise(tf.constant(x[None]), tf.constant([3, 4], tf.int64), 0.05).numpy()[0]):
        np.testing.assert_array_equal(out[:40, RIGHT[:3]], 0.0)
        np.testing.assert_array_equal(out[40:], 0.0)
        assert out.min() >= 0 and out.max() <= 1
        assert np.abs(out - x).max() > 0.01


def test_time_warp_stretches_and_clip_shortens():
    x, mask = _sample(length=40)
    xs, ms = A.time_scale(tf.constant(x[None]), tf.constant(mask[None]), tf.constant([1.5]))
    xs, ms = xs.numpy()[0], ms.numpy()[0]
    assert ms.sum() == 60
    np.testing.assert_array_equal(xs[0], x[0])
    np.testing.assert_array_equal(xs[59], x[39])
    xc, mc = A.clip_frames(tf.constant(x[None]), tf.constant(mask[None]),
                           tf.constant([5, 6], tf.int64))
    xc, mc = xc.numpy()[0], mc.numpy()[0]
    assert 28 <= mc.sum() <= 38
    np.testing.assert_array_equal(xc[int(mc.sum()):], 0.0)


def test_affine_jitter_moves_each_group_on_its_own():
    x, _ = _sample()
    out = A.affine_groups(tf.constant(x[None]), SEL.groups, tf.constant([7, 8], tf.int64),
                          0.2, 0.2, 0.1).numpy()[0]
    assert np.abs(out - x)[:40].max() > 0.01
    np.testing.assert_array_equal(out[:40, RIGHT[:3]], 0.0)


@pytest.mark.parametrize("cfg", [AugmentConfig(prob=1.0),
                                 AugmentConfig(prob=0.4, hand_drop=0.3, frame_drop=0.1,
                                               affine_prob=0.5, speed=(0.8, 1.25))])
def test_augmentation_is_deterministic_under_a_seed(cfg):
    x, mask = _sample()
    fn = A.make_augment(cfg, SEL.groups, SEL.mirror, LEFT)
    runs = [fn(tf.constant(x[None]), tf.constant(mask[None]), tf.constant([s, 0], tf.int64))
            for s in (11, 11, 12)]
    np.testing.assert_array_equal(runs[0][0].numpy(), runs[1][0].numpy())
    assert not np.array_equal(runs[0][0].numpy(), runs[2][0].numpy())


def test_prob_zero_changes_nothing():
    x, mask = _sample()
    fn = A.make_augment(AugmentConfig(prob=0.0), SEL.groups, SEL.mirror, LEFT)
    out, m = fn(tf.constant(x[None]), tf.constant(mask[None]), tf.constant([1, 1], tf.int64))
    np.testing.assert_array_equal(out.numpy()[0], x)


def test_hand_paste_shows_a_still_hand_only_where_it_was_missing():
    x, mask = _sample()
    x[:, LEFT] = 0.0
    x[5:9, LEFT] = 0.3                                     # the hand is seen in frames 5-8
    bank = A.hand_bank(np.stack([x]), LEFT, size=4, seed=0)
    assert bank.shape == (4, 21, 2) and np.allclose(bank, 0.3)
    fn = A.make_augment(AugmentConfig(prob=0.0, hand_paste=1.0), SEL.groups, SEL.mirror, LEFT,
                        bank)
    seed = tf.constant([3, 4], tf.int64)
    out, m = (t.numpy()[0] for t in fn(tf.constant(x[None]), tf.constant(mask[None]), seed))
    pasted = np.r_[0:5, 9:40]
    assert (out[pasted][:, LEFT] != 0).all()
    assert np.abs(out[pasted][:, LEFT] - 0.3).max() < 0.1  # the bank's shape, slightly jittered
    np.testing.assert_array_equal(out[5:9, LEFT], x[5:9, LEFT])
    np.testing.assert_array_equal(out[40:], 0.0)           # padding stays padding
    others = [i for i in range(65) if i not in LEFT]
    np.testing.assert_array_equal(out[:, others], x[:, others])
    np.testing.assert_array_equal(m, mask)
    again = fn(tf.constant(x[None]), tf.constant(mask[None]), seed)[0].numpy()[0]
    np.testing.assert_array_equal(out, again)              # deterministic under a seed
    with pytest.raises(ValueError, match="hand_paste needs"):
        A.make_augment(AugmentConfig(hand_paste=0.5), SEL.groups, SEL.mirror, LEFT, None)


def _draws(fn, batched: bool, n_each=300, seed=5):
    """Augment ``n_each`` copies of six samples of different lengths; per-draw features."""
    sources = [_sample(length, seed=i) for i, length in enumerate((12, 20, 28, 36, 48, 64))]
    for x, _ in sources:
        x[..., 0] = np.where(x[..., 0] != 0, 0.1 + 0.5 * x[..., 0], 0.0)   # off-centre: mirror shows
    xs = np.concatenate([np.repeat(x[None], n_each, 0) for x, _ in sources])
    ms = np.concatenate([np.repeat(m[None], n_each, 0) for _, m in sources])
    ds = tf.data.Dataset.from_tensor_slices((xs, ms))
    seeds = tf.data.Dataset.random(seed=seed)
    if batched:
        ds = tf.data.Dataset.zip((ds.batch(32), seeds)).map(
            lambda item, r: fn(item[0], item[1], tf.stack([r, tf.constant(0, tf.int64)]))).unbatch()
    else:
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda item, r: fn(item[0], item[1], tf.stack([r, tf.constant(0, tf.int64)])))
    feats = []
    for x, m in ds.as_numpy_iterator():
        real = x[m > 0]
        present = (real != 0).any(-1)
        pts = real[present]
        steps = np.abs(np.diff(real, axis=0)).mean() if len(real) > 1 else 0.0
        feats.append([m.sum(), (real[:, LEFT] == 0).all(), pts[:, 0].mean(), pts[:, 1].mean(),
                      pts[:, 0].std(), present.mean(), steps])
    return np.asarray(feats, np.float64)


FEATURES = ["frames", "left hand gone", "mean x", "mean y", "std x", "points seen",
            "frame-to-frame step"]
CONFIGS = {"published": AugmentConfig(hand_drop=0.5, affine_prob=0.5, speed=(0.8, 1.25)),
           "everything": AugmentConfig(prob=0.8, hand_drop=0.3, frame_drop=0.1, affine_prob=0.5,
                                       speed=(0.8, 1.25), hand_paste=0.4)}


def _bank():
    x, _ = _sample(seed=9)
    return A.hand_bank(x[None], LEFT, size=16, seed=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_batched_draws_follow_the_per_sample_distribution(name):
    """The batched augmentation against the per-sample map it replaced, feature by feature
    over 1,800 draws (two-sample Kolmogorov-Smirnov); a shifted setting must be caught."""
    import per_sample_augment as old
    from scipy.stats import ks_2samp

    cfg, bank = CONFIGS[name], _bank()
    ours = _draws(A.make_augment(cfg, SEL.groups, SEL.mirror, LEFT, bank), batched=True)
    theirs = _draws(old.make_augment(cfg, SEL.groups, SEL.mirror, LEFT, bank), batched=False,
                    seed=6)
    for i, feature in enumerate(FEATURES):
        p = ks_2samp(ours[:, i], theirs[:, i]).pvalue
        assert p > 1e-3, f"{name}: {feature} differs (KS p = {p:.2g})"
    shifted = dataclasses.replace(cfg, hand_drop=cfg.hand_drop + 0.15, speed=(0.9, 1.35))
    other = _draws(A.make_augment(shifted, SEL.groups, SEL.mirror, LEFT, bank), batched=True)
    assert min(ks_2samp(other[:, i], theirs[:, i]).pvalue for i in range(len(FEATURES))) < 1e-3


def test_a_batch_draws_each_sample_on_its_own():
    """One seed per batch, but not one transform per batch: copies of a sample differ."""
    x, mask = _sample()
    fn = A.make_augment(CONFIGS["published"], SEL.groups, SEL.mirror, LEFT)
    out, m = fn(tf.constant(np.repeat(x[None], 16, 0)), tf.constant(np.repeat(mask[None], 16, 0)),
                tf.constant([3, 0], tf.int64))
    assert len({arr.tobytes() for arr in out.numpy()}) > 12
    assert len(set(m.numpy().sum(1))) > 3          # the speed factor differs per sample
