import numpy as np
import pytest
from conftest import shared_path

from signbart.config import VariantConfig
from signbart.data import open_dataset
from signbart.layouts import get_layout
from signbart.preprocess import (
    Selection,
    canonical,
    mirror_sample,
    normalize_groups,
    prepare,
    prepare_arrays,
    uniform_indices,
)


def test_bounding_box_normalisation_by_hand():
    xy = np.zeros((1, 3, 2))
    xy[0, 0], xy[0, 1] = (0.2, 0.3), (0.6, 0.5)        # point 2 is missing (0, 0)
    out = normalize_groups(xy, [np.array([0, 1, 2])])
    # w = 0.4 > h = 0.2: margin 0.02 on x; y padded to a square: 0.02 + (0.4 - 0.2) / 2 = 0.12
    # box = [0.18, 0.62] on both axes, side 0.44
    np.testing.assert_allclose(out[0, 0], [0.02 / 0.44, 0.12 / 0.44])
    np.testing.assert_allclose(out[0, 1], [0.42 / 0.44, 0.32 / 0.44])
    np.testing.assert_array_equal(out[0, 2], [0.0, 0.0])


def test_box_is_clamped_to_the_image_and_groups_are_independent():
    xy = np.zeros((2, 4, 2))
    xy[0, :2] = [(0.01, 0.5), (0.99, 0.52)]             # box wider than the image: clamped
    xy[0, 2:] = [(0.4, 0.4), (0.5, 0.6)]
    out = normalize_groups(xy, [np.array([0, 1]), np.array([2, 3])])
    np.testing.assert_allclose(out[0, :2], xy[0, :2])   # clamped box = [0, 1]: unchanged
    # second group: w = 0.1, h = 0.2 -> margin 0.01 on y, x padded: 0.01 + 0.05 = 0.06
    np.testing.assert_allclose(out[0, 2], [(0.4 - 0.34) / 0.22, (0.4 - 0.39) / 0.22])
    np.testing.assert_array_equal(out[1], 0.0)          # an all-missing frame stays zeros


def test_uniform_subsampling_matches_linspace():
    local, lengths = uniform_indices(np.array([100, 30, 64]), 64)
    np.testing.assert_array_equal(lengths, [64, 30, 64])
    np.testing.assert_array_equal(local[:64], np.linspace(0, 99, 64).astype(int))
    np.testing.assert_array_equal(local[64:94], np.arange(30))
    np.testing.assert_array_equal(local[94:], np.arange(64))


def test_prepare_selects_clips_pads_and_masks():
    lay = get_layout("holistic-65")
    variant = VariantConfig(name="hands-wrists",
                            keypoints={"pose": ["left_wrist", "right_wrist"],
                                       "left_hand": "all", "right_hand": "all"})
    sel = Selection.of(variant, lay)
    assert list(sel.indices[:2]) == [15, 16] and [len(g) for g in sel.groups] == [2, 21, 21]
    rng = np.random.default_rng(0)
    long = rng.uniform(-0.2, 1.2, (80, 65, 3)).astype(np.float32)
    short = rng.uniform(0.2, 0.8, (10, 65, 3)).astype(np.float32)
    short[:, 23:44] = 0.0                                 # left hand never seen
    p = prepare_arrays([long, short], [3, 1], sel, max_frames=64)
    assert p.x.shape == (2, 64, 44, 2) and p.x.dtype == np.float32
    np.testing.assert_array_equal(p.mask.sum(1), [64, 10])
    np.testing.assert_array_equal(p.x[1, 10:], 0.0)
    np.testing.assert_array_equal(p.x[1, :, 2:23], 0.0)   # missing hand stays exactly 0
    assert p.x.min() >= 0.0 and p.x.max() <= 1.0
    np.testing.assert_array_equal(p.y, [3, 1])


def test_prepare_equals_a_per_frame_reference_loop(synth_dataset):
    ds = open_dataset(synth_dataset)
    variant = VariantConfig(name="v")
    p = prepare(ds, np.arange(5), variant)
    groups = get_layout("holistic-65").groups().values()
    for i in range(5):
        raw = np.clip(ds.keypoints(i)[:, :, :2], 0, 1)
        for t in range(len(raw)):
            for g in groups:
                pts = raw[t, g]
                present = (pts != 0).any(-1)
                if not present.any():
                    np.testing.assert_array_equal(p.x[i, t, g], 0.0)
                    continue
                lo, hi = pts[present].min(0), pts[present].max(0)
                w, h = hi - lo
                d = (0.05 * w, 0.05 * w + (w - h) / 2) if w > h else (0.05 * h + (h - w) / 2, 0.05 * h)
                s = np.clip(lo - d, 0, 1)
                e = np.clip(hi + d, 0, 1)
                expected = np.where(present[:, None], (pts - s) / (e - s), 0)
                np.testing.assert_allclose(p.x[i, t, g], expected, atol=1e-5)


def test_prepare_of_empty_view_has_the_right_shape(synth_dataset):
    p = prepare(open_dataset(synth_dataset), [], VariantConfig(name="v"))
    assert p.x.shape == (0, 64, 65, 2) and len(p) == 0


@pytest.mark.parametrize("name", ["arabic-asl-42kpts-hands", "arabic-asl-90kpts"])
def test_variants_select_from_a_holistic_90_dataset(synth_dataset_90, name):
    from pathlib import Path

    from signbart.config import load_variant

    variant = load_variant(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    p = prepare(open_dataset(synth_dataset_90), [0, 1], variant)
    assert p.x.shape[2] == variant.model_config().num_keypoints


def _signer(shoulder_y, width, rest_hand_y, frames=6):
    """A raw holistic-65 sample: shoulders at ``shoulder_y``, right hand signing at shoulder
    height, left hand resting at ``rest_hand_y`` (in view when < 1)."""
    lay = get_layout("holistic-65")
    a = np.zeros((frames, 65, 3), np.float32)
    ls, rs = lay.index("pose.left_shoulder"), lay.index("pose.right_shoulder")
    a[:, ls, :2], a[:, rs, :2] = (0.5 + width / 2, shoulder_y), (0.5 - width / 2, shoulder_y)
    left, right = lay.groups()["left_hand"], lay.groups()["right_hand"]
    a[:, right, 0], a[:, right, 1] = np.linspace(0.40, 0.45, 21), shoulder_y
    a[:, left, 0], a[:, left, 1] = np.linspace(0.60, 0.65, 21), rest_hand_y
    return a, ls, rs, left, right


def test_reframing_puts_shoulders_in_place_and_drops_hands_below_the_frame():
    from signbart.config import FramingConfig
    from signbart.preprocess import reframe

    variant = VariantConfig(name="f", framing=FramingConfig(shoulder_y=0.6, shoulder_width=0.3))
    sel = Selection.of(variant, get_layout("holistic-65"))
    # framed high and small: resting hand at 0.9 is in the picture, but 1.3 once re-framed
    high, ls, rs, left, right = _signer(shoulder_y=0.4, width=0.2, rest_hand_y=0.9)
    out = reframe(high, sel)
    np.testing.assert_allclose(out[:, ls, :2], np.tile([0.65, 0.6], (6, 1)), atol=1e-6)
    np.testing.assert_allclose(out[:, rs, :2], np.tile([0.35, 0.6], (6, 1)), atol=1e-6)
    np.testing.assert_array_equal(out[:, left], 0.0)                    # out of view now
    np.testing.assert_allclose(out[:, right, 1], 0.6, atol=1e-6)        # signing hand kept
    assert (high[:, left, :2] != 0).all()                               # input untouched
    # missing points stay missing; a sample without shoulders is left as it is
    high[2, right[0]] = 0.0
    assert (reframe(high, sel)[2, right[0]] == 0).all()
    no_shoulders = high.copy()
    no_shoulders[:, [ls, rs]] = 0.0
    np.testing.assert_array_equal(reframe(no_shoulders, sel), no_shoulders)
    # two signers framed differently become the same model input
    low, *_ = _signer(shoulder_y=0.6, width=0.3, rest_hand_y=1.2)
    low[:, left] = 0.0                                                  # below the frame: unseen
    high, *_ = _signer(shoulder_y=0.4, width=0.2, rest_hand_y=0.9)
    a, b = (prepare_arrays([s], [0], sel, max_frames=8).x for s in (high, low))
    np.testing.assert_allclose(a, b, atol=1e-5)
    unframed = Selection.of(VariantConfig(name="v"), get_layout("holistic-65"))
    assert not np.allclose(prepare_arrays([high], [0], unframed, 8).x,
                           prepare_arrays([low], [0], unframed, 8).x, atol=1e-3)


def test_framing_config_is_validated():
    from signbart.config import FramingConfig, from_dict
    from signbart.errors import ConfigError

    with pytest.raises(ValueError, match="shoulder_y must be in"):
        FramingConfig(shoulder_y=1.2)
    with pytest.raises(ConfigError, match=r"v\.yaml\.framing: shoulder_width must be in"):
        from_dict(VariantConfig, {"name": "v", "framing": {"shoulder_width": 0}}, "v.yaml")


def test_anchor_features_place_hands_relative_to_the_shoulders_and_mirror_exactly():
    from signbart import augment
    from signbart.config import ANCHOR_KEYS
    from signbart.tfkeras import tf

    layout = get_layout("holistic-65")
    variant = VariantConfig(name="a", anchors=True)
    sel = Selection.of(variant, layout)
    assert sel.width == 65 + len(ANCHOR_KEYS) == variant.model_config().num_keypoints
    sample = np.zeros((5, 65, 3), np.float32)
    ls, rs = layout.index("pose.left_shoulder"), layout.index("pose.right_shoulder")
    ml, mr = layout.index("pose.mouth_left"), layout.index("pose.mouth_right")
    sample[:, ls, :2], sample[:, rs, :2] = (0.6, 0.5), (0.4, 0.5)     # width 0.2, centre (0.5, 0.5)
    sample[:, ml, :2], sample[:, mr, :2] = (0.52, 0.3), (0.48, 0.3)   # mouth at (0.5, 0.3)
    right = [layout.index(k) for k in layout.keys if k.startswith("right_hand.")]
    for t in range(5):                                                 # right hand rises 0.02/frame
        sample[t, right, :2] = (0.3, 0.5 - 0.02 * t)
    x = prepare_arrays([sample], [0], sel, max_frames=8).x[0]          # [8, 79, 2]
    a = {k: x[:, 65 + i] for i, k in enumerate(ANCHOR_KEYS)}
    np.testing.assert_allclose(a["anchor.right_wrist"][0], [0.5 - 0.2 / 0.8, 0.5], atol=1e-5)
    # (-0.2, 0.2) from the mouth is (-0.5, 0.5) at 2 shoulder widths: clipped into (0, 1)
    np.testing.assert_allclose(a["anchor.right_tip_to_mouth"][0], [1e-3, 1 - 1e-3], atol=1e-6)
    np.testing.assert_allclose(a["anchor.right_velocity_1"][1:5], np.tile([0.5, 0.4], (4, 1)),
                               atol=1e-5)   # -0.02 per frame = -0.1 shoulder widths
    np.testing.assert_allclose(a["anchor.right_velocity_2"][2:5], np.tile([0.5, 0.3], (3, 1)),
                               atol=1e-5)   # over two frames
    assert (a["anchor.right_velocity_1"][0] == 0).all() and (a["anchor.right_velocity_2"][:2] == 0).all()
    assert (a["anchor.right_presence"][:5] == 0.5).all() and (a["anchor.left_presence"] == 0).all()
    assert (x[5:] == 0).all()                                          # padding stays 0
    # mirroring the prepared input equals preparing the mirrored video
    mirrored = mirror_sample(sample, np.argsort(layout.mirror_permutation()))
    want = prepare_arrays([mirrored], [0], sel, max_frames=8).x[0]
    got = augment.mirror(tf.constant(x), sel.mirror).numpy()
    anchors = slice(65, None)
    np.testing.assert_allclose(got[:, anchors], want[:, anchors], atol=1e-5)


def _left_handed(frames=12, seed=3):
    """A raw holistic-65 sample of a left-handed signer as filmed: the left hand (the signer's
    own) signs, moving across the chest; the right hand rests, seen in 3 frames only."""
    rng = np.random.default_rng(seed)
    lay = get_layout("holistic-65")
    a = np.zeros((frames, 65, 3), np.float32)
    a[:, :23] = rng.uniform(0.3, 0.7, (frames, 23, 3))
    left, right = lay.groups()["left_hand"], lay.groups()["right_hand"]
    path = np.stack([np.linspace(0.55, 0.75, frames), np.linspace(0.7, 0.4, frames)], 1)
    a[:, left, :2] = path[:, None] + rng.normal(0, 0.01, (frames, 21, 2))
    a[:, left, 2] = rng.normal(0, 0.05, (frames, 21))
    a[4:7, right, :2] = (0.35, 0.9) + rng.normal(0, 0.002, (3, 21, 2))
    a[5, lay.index("left_hand.thumb_ip")] = 0.0           # a point MediaPipe missed
    return a


def test_auto_handedness_mirrors_a_left_dominant_sample_only():
    from signbart.config import FramingConfig

    layout = get_layout("holistic-65")
    flip = np.argsort(layout.mirror_permutation())
    left = _left_handed()
    right = mirror_sample(left, flip)                     # the same signer, filmed mirrored
    assert (right[5, layout.index("right_hand.thumb_ip")] == 0).all()  # missing stays 0
    np.testing.assert_array_equal(right[..., 1:], left[:, flip, 1:])  # only x changes
    for extra in ({}, {"framing": FramingConfig(), "anchors": True}):
        auto = Selection.of(VariantConfig(name="a", handedness="auto", **extra), layout)
        plain = Selection.of(VariantConfig(name="a", **extra), layout)
        got = prepare_arrays([left, right], [0, 1], auto, max_frames=8)
        np.testing.assert_array_equal(got.mirrored, [True, False])
        # the right-dominant sample is left exactly as it is; the left-dominant one is
        # mirrored, so that both give the model exactly the same input
        want = prepare_arrays([right], [1], plain, max_frames=8)
        np.testing.assert_array_equal(got.x[1], want.x[0])
        np.testing.assert_array_equal(got.x[0], got.x[1])
        np.testing.assert_array_equal(got.mask[0], got.mask[1])
        assert not prepare_arrays([left], [0], plain, max_frames=8).mirrored.any()
    assert canonical(np.zeros((4, 65, 3), np.float32), auto)[1] is False  # no hands: a tie


def test_handedness_is_validated():
    from signbart.config import from_dict
    from signbart.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^v\.yaml: handedness: 'left' is not one of "
                                          r"as-extracted, auto$"):
        from_dict(VariantConfig, {"name": "v", "handedness": "left"}, "v.yaml")
    assert VariantConfig(name="v").handedness == "as-extracted"


USER01 = [shared_path("mlr511", "user01", c, "R01.mp4") for c in ("G01", "G07")]


@pytest.mark.skipif(USER01[0] is None, reason="../shared/data/mlr511 is absent")
def test_auto_handedness_mirrors_a_real_left_handed_signer():
    """MediaPipe on user01 (left-handed) as filmed: the rule mirrors the clips; on the same
    videos mirrored before MediaPipe, as signers.csv has them extracted, it leaves them."""
    from signbart.extract import extract_video, make_holistic

    holistic = make_holistic()
    try:
        clips = [extract_video(v, holistic, mirror=m, layout="holistic-65")
                 for m in (False, True) for v in USER01]
    finally:
        holistic.close()
    auto = Selection.of(VariantConfig(name="a", handedness="auto"), get_layout("holistic-65"))
    assert [canonical(c, auto)[1] for c in clips] == [True, True, False, False]
