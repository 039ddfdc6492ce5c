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
    out = A.mirror(tf.constant(x), SEL.mirror).numpy()
    ls, rs = LAYOUT.index("pose.left_shoulder"), LAYOUT.index("pose.right_shoulder")
    np.testing.assert_allclose(out[:40, rs, 0], 1 - x[:40, ls, 0], atol=1e-6)
    np.testing.assert_allclose(out[:40, ls, 1], x[:40, rs, 1])
    np.testing.assert_allclose(out[:40, LEFT, 0], 1 - x[:40, RIGHT, 0] * (x[:40, RIGHT, 0] != 0)
                               - (x[:40, RIGHT, 0] == 0), atol=1e-6)
    np.testing.assert_array_equal(out[:40, LEFT[:3]], 0.0)    # missing stays missing, now left
    np.testing.assert_array_equal(out[40:], 0.0)
    np.testing.assert_allclose(A.mirror(tf.constant(out), SEL.mirror).numpy(), x, atol=1e-6)


def test_hand_drop_zeroes_exactly_the_non_dominant_hand():
    x, mask = _sample()
    cfg = AugmentConfig(prob=0.0, hand_drop=1.0)
    fn = A.make_augment(cfg, SEL.groups, SEL.mirror, LEFT)
    out, m = fn(tf.constant(x), tf.constant(mask), tf.constant([1, 2], tf.int64))
    out = out.numpy()
    np.testing.assert_array_equal(out[:, LEFT], 0.0)
    others = [i for i in range(65) if i not in LEFT]
    np.testing.assert_array_equal(out[:, others], x[:, others])
    np.testing.assert_array_equal(m.numpy(), mask)


def test_rotation_and_noise_keep_missing_points_and_range():
    x, _ = _sample()
    for out in (A.rotate(tf.constant(x), 0.26).numpy(),
                A.add_noise(tf.constant(x), tf.constant([3, 4], tf.int64), 0.05).numpy()):
        np.testing.assert_array_equal(out[:40, RIGHT[:3]], 0.0)
        np.testing.assert_array_equal(out[40:], 0.0)
        assert out.min() >= 0 and out.max() <= 1
        assert np.abs(out - x).max() > 0.01


def test_time_warp_stretches_and_clip_shortens():
    x, mask = _sample(length=40)
    xs, ms = A.time_scale(tf.constant(x), tf.constant(mask), 1.5)
    assert ms.numpy().sum() == 60
    np.testing.assert_array_equal(xs.numpy()[0], x[0])
    np.testing.assert_array_equal(xs.numpy()[59], x[39])
    xc, mc = A.clip_frames(tf.constant(x), tf.constant(mask), tf.constant([5, 6], tf.int64))
    assert 28 <= mc.numpy().sum() <= 38
    np.testing.assert_array_equal(xc.numpy()[int(mc.numpy().sum()):], 0.0)


def test_affine_jitter_moves_each_group_on_its_own():
    x, _ = _sample()
    out = A.affine_groups(tf.constant(x), SEL.groups, tf.constant([7, 8], tf.int64),
                          0.2, 0.2, 0.1).numpy()
    assert np.abs(out - x)[:40].max() > 0.01
    np.testing.assert_array_equal(out[:40, RIGHT[:3]], 0.0)


@pytest.mark.parametrize("cfg", [AugmentConfig(prob=1.0),
                                 AugmentConfig(prob=0.4, hand_drop=0.3, frame_drop=0.1,
                                               affine_prob=0.5, speed=(0.8, 1.25))])
def test_augmentation_is_deterministic_under_a_seed(cfg):
    x, mask = _sample()
    fn = A.make_augment(cfg, SEL.groups, SEL.mirror, LEFT)
    runs = [fn(tf.constant(x), tf.constant(mask), tf.constant([s, 0], tf.int64))
            for s in (11, 11, 12)]
    np.testing.assert_array_equal(runs[0][0].numpy(), runs[1][0].numpy())
    assert not np.array_equal(runs[0][0].numpy(), runs[2][0].numpy())


def test_prob_zero_changes_nothing():
    x, mask = _sample()
    fn = A.make_augment(AugmentConfig(prob=0.0), SEL.groups, SEL.mirror, LEFT)
    out, m = fn(tf.constant(x), tf.constant(mask), tf.constant([1, 1], tf.int64))
    np.testing.assert_array_equal(out.numpy(), x)


def test_hand_paste_shows_a_still_hand_only_where_it_was_missing():
    x, mask = _sample()
    x[:, LEFT] = 0.0
    x[5:9, LEFT] = 0.3                                     # the hand is seen in frames 5-8
    bank = A.hand_bank(np.stack([x]), LEFT, size=4, seed=0)
    assert bank.shape == (4, 21, 2) and np.allclose(bank, 0.3)
    fn = A.make_augment(AugmentConfig(prob=0.0, hand_paste=1.0), SEL.groups, SEL.mirror, LEFT,
                        bank)
    seed = tf.constant([3, 4], tf.int64)
    out, m = (t.numpy() for t in fn(tf.constant(x), tf.constant(mask), seed))
    pasted = np.r_[0:5, 9:40]
    assert (out[pasted][:, LEFT] != 0).all()
    assert np.abs(out[pasted][:, LEFT] - 0.3).max() < 0.1  # the bank's shape, slightly jittered
    np.testing.assert_array_equal(out[5:9, LEFT], x[5:9, LEFT])
    np.testing.assert_array_equal(out[40:], 0.0)           # padding stays padding
    others = [i for i in range(65) if i not in LEFT]
    np.testing.assert_array_equal(out[:, others], x[:, others])
    np.testing.assert_array_equal(m, mask)
    again = fn(tf.constant(x), tf.constant(mask), seed)[0].numpy()
    np.testing.assert_array_equal(out, again)              # deterministic under a seed
    with pytest.raises(ValueError, match="hand_paste needs"):
        A.make_augment(AugmentConfig(hand_paste=0.5), SEL.groups, SEL.mirror, LEFT, None)
