import numpy as np
import pytest
from test_train import VARIANT

from signbart import baseline, ensemble, quantize
from signbart.data import open_dataset
from signbart.model import build_model
from signbart.preprocess import prepare
from signbart.tflite import check, op_types, predict_fn


@pytest.fixture(scope="module")
def fold_data(synth_dataset):
    ds = open_dataset(synth_dataset)
    fold = ds.fold("user01", 1, seed=3)
    return (prepare(ds, fold.train, VARIANT, 32), prepare(ds, fold.val, VARIANT, 32))


def test_resample_layer_matches_numpy_baseline_features(fold_data):
    train, _ = fold_data
    x, mask = train.x[:6].copy(), train.mask[:6].copy()
    mask[1, 5:] = 0                      # a short sequence: interpolation over its 5 frames only
    x[1, 5:] = 0
    graph = ensemble.ResampleFrames(16)([x, mask]).numpy()
    np.testing.assert_allclose(graph, baseline.features(x, mask, 16), atol=1e-5)


MIXES = [ensemble.Mix("geometric", (2.0, 0.5), 0.3), ensemble.Mix("arithmetic", (0.7, 1.6), 0.65)]


@pytest.mark.parametrize("mix", MIXES, ids=lambda m: m.mode)
def test_ensemble_graph_is_the_numpy_mix_in_keras_and_tflite(fold_data, mix):
    train, val = fold_data
    sb = build_model(VARIANT.model_config())
    lin = baseline.fit(train, 10, seed=0, steps=50)
    model = ensemble.build_ensemble(sb, lin, mix)
    inputs = {"keypoints": val.x, "attention_mask": val.mask}
    want = ensemble.mix_logits(sb.predict(inputs, verbose=0), lin.predict(val.x, val.mask), mix)
    np.testing.assert_allclose(np.exp(want).sum(1), 1.0, rtol=1e-6)   # log-probabilities
    np.testing.assert_allclose(model.predict(inputs, verbose=0), want, rtol=1e-3, atol=1e-3)
    layer = model.get_layer("mix")
    assert ensemble.MixLogProbs.from_config(layer.get_config()).get_config() == layer.get_config()
    assert (layer.mode, layer.temperatures, layer.mix) == (
        mix.mode, list(mix.temperatures), [mix.weight, 1 - mix.weight])
    fp32 = quantize.to_tflite(model, 32)
    check(fp32, val.x[:2], val.mask[:2])
    np.testing.assert_allclose(predict_fn(fp32)(val.x, val.mask), want, rtol=1e-3, atol=1e-3)
    ptq = quantize.ptq_dynamic(model, 32)
    check(ptq, val.x[:2], val.mask[:2])
    assert len(ptq) < len(fp32) * 0.5
    assert not [op for op in op_types(ptq) if op.startswith(("Flex", "CUSTOM"))]
    agree = (predict_fn(ptq)(val.x, val.mask).argmax(1) == want.argmax(1)).mean()
    assert agree >= 0.9


def _members(n=200, classes=10, seed=0, scale=8.0):
    """Labels and a good member's logits (about 90 % right, peaked: scaled up by ``scale``)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    good = scale * (3.0 * np.eye(classes)[y] + rng.normal(0, 1, (n, classes)))
    return y, good, rng


def test_fitted_temperature_lowers_nll_of_a_peaked_member():
    y, good, _ = _members()
    t = ensemble.fit_temperature(good, y)
    assert t > 2.0                               # peaked by 8: scaled back down
    before, after = (ensemble.nll(ensemble.log_softmax(good / s), y) for s in (1.0, t))
    assert after < 0.7 * before
    assert ensemble.fit_temperature(good, y) == t


def test_a_confidently_wrong_member_moves_the_arithmetic_mix_only_by_its_share():
    """On half the clips the second member puts logit 50 on a wrong class. The arithmetic mix
    gives it at most its 30 % of the mass, so the good member's 70 % still wins; in the
    geometric mix its log-probability of the true class (about -50) times 0.3 outweighs the
    good member's margin times 0.7, so those clips are lost."""
    y, good, rng = _members(scale=4.0)
    wrong = (y + rng.integers(1, 10, len(y))) % 10
    other = 3.0 * np.eye(10)[y] + rng.normal(0, 1, good.shape)   # ordinary on the other half
    half = np.arange(len(y)) < len(y) // 2
    bad = np.where(half[:, None], 50 * np.eye(10)[wrong], other)
    acc = {m: float((ensemble.mix_logits(good, bad, ensemble.Mix(m, (1.0, 1.0), 0.7))
                     .argmax(1) == y).mean()) for m in ensemble.MODES}
    alone = float((good.argmax(1) == y).mean())
    assert alone > 0.8
    assert acc["arithmetic"] >= alone - 0.03
    assert acc["geometric"] <= alone - 0.3
    fitted = ensemble.fit_mix(good, bad, y)     # fitted by NLL it keeps the good member's score
    assert float((ensemble.mix_logits(good, bad, fitted).argmax(1) == y).mean()) >= alone - 0.03


def test_gated_graph_is_the_gated_numpy_mix_in_keras_and_tflite(fold_data):
    """The bound at the median clip: half the clips mixed, half SignBART's alone."""
    train, val = fold_data
    sb = build_model(VARIANT.model_config())
    lin = baseline.fit(train, 10, seed=0, steps=50)
    rms = lin.rms_z(val.x, val.mask)
    mix = ensemble.Mix("arithmetic", (0.7, 1.6), 0.65, gate=float(np.median(rms)))
    model = ensemble.build_ensemble(sb, lin, mix)
    inputs = {"keypoints": val.x, "attention_mask": val.mask}
    sb_logits, lin_logits = sb.predict(inputs, verbose=0), lin.predict(val.x, val.mask)
    want = ensemble.mix_logits(sb_logits, lin_logits, mix, rms)
    kept = rms <= mix.gate
    assert 0 < kept.sum() < len(kept)
    np.testing.assert_allclose(want[~kept], ensemble.log_softmax(
        sb_logits[~kept].astype(np.float64) / 0.7), atol=1e-9)
    ungated = ensemble.mix_logits(sb_logits, lin_logits, ensemble.Mix("arithmetic", (0.7, 1.6),
                                                                      0.65))
    np.testing.assert_allclose(want[kept], ungated[kept], atol=1e-9)
    near = np.abs(rms - mix.gate) < 1e-4 * mix.gate      # float32 may fall either side there
    np.testing.assert_allclose(model.predict(inputs, verbose=0)[~near], want[~near],
                               rtol=1e-3, atol=1e-3)
    assert model.get_layer("baseline_in_range").bound == mix.gate
    fp32 = quantize.to_tflite(model, 32)
    check(fp32, val.x[:2], val.mask[:2])
    np.testing.assert_allclose(predict_fn(fp32)(val.x, val.mask)[~near], want[~near],
                               rtol=1e-3, atol=1e-3)
    assert not [op for op in op_types(quantize.ptq_dynamic(model, 32))
                if op.startswith(("Flex", "CUSTOM"))]


def test_the_gate_keeps_a_collapsing_baseline_from_taking_the_ensemble_down():
    """Issue 35's collapse, made small: keypoint 1 barely moves over the training signers but
    carries the class (1e-4), so the unpadded baseline leans on it; a new signer holds it 0.005
    off, toward the wrong class on every clip, and the baseline is confidently wrong there.
    Ungated, its share takes the ensemble down with it; gated (the bound is the largest RMS
    z-score of the inner clips, as the trial sets it), the ensemble is within a point of the
    better member on that signer and unchanged on the inner signers."""
    from signbart.preprocess import Prepared

    rng = np.random.default_rng(0)

    def clips(n, point1):
        y = np.repeat(np.arange(2), n // 2)
        x = np.zeros((n, 4, 2, 2), np.float32)
        x[..., 0, :] = (0.3 + 0.4 * y)[:, None, None] + rng.normal(0, 0.1, (n, 4, 2))
        x[..., 1, :] = point1(y)[:, None, None] + rng.normal(0, 2e-5, (n, 4, 2))
        return Prepared(x, np.ones((n, 4), np.float32), y.astype(np.int32), np.zeros(n, bool))

    train, inner = (clips(n, lambda y: 0.5 + 1e-4 * y) for n in (200, 100))
    unlike = clips(100, lambda y: 0.5 + 0.005 * (1 - 2 * y))
    lin = baseline.fit(train, 2, seed=0, std_pad=1e-6)

    def signbart(d):                            # a good member, about 90 % right, not peaked
        return 2.0 * np.eye(2)[d.y] + rng.normal(0, 1, (len(d.y), 2))

    sb_inner, sb_unlike = signbart(inner), signbart(unlike)
    mix = ensemble.fit_mix(sb_inner, lin.predict(inner.x, inner.mask), inner.y)
    gated = ensemble.Mix(mix.mode, mix.temperatures, mix.weight,
                         gate=float(lin.rms_z(inner.x, inner.mask).max()))

    def acc(d, sb, m):
        lp = ensemble.mix_logits(sb, lin.predict(d.x, d.mask), m, lin.rms_z(d.x, d.mask))
        return float((lp.argmax(1) == d.y).mean())

    base_alone = float((lin.predict(unlike.x, unlike.mask).argmax(1) == unlike.y).mean())
    sb_alone = float((sb_unlike.argmax(1) == unlike.y).mean())
    assert base_alone < 0.1 and sb_alone > 0.8 and mix.weight < 1.0
    assert acc(unlike, sb_unlike, mix) < sb_alone - 0.1
    assert acc(unlike, sb_unlike, gated) >= sb_alone - 0.01
    assert acc(inner, sb_inner, gated) == acc(inner, sb_inner, mix)


def test_mix_is_fitted_by_likelihood_deterministically():
    y = np.array([0, 1, 2, 0])
    good, bad = np.eye(3)[y] * 5, np.eye(3)[[1, 2, 0, 1]] * 5
    assert ensemble.fit_mix(good, bad, y).weight == 1.0
    assert ensemble.fit_mix(bad, good, y).weight == 0.0
    same = ensemble.fit_mix(good, good, y)   # undecided: equal shares, the bounded mode
    assert (same.mode, same.weight) == ("arithmetic", 0.5)
    yy, a, rng = _members(seed=1)
    b = a[rng.permutation(len(yy))] / 8 + 2 * np.eye(10)[yy]
    fitted = ensemble.fit_mix(a, b, yy)
    order = rng.permutation(len(yy))
    assert ensemble.fit_mix(a, b, yy) == fitted == ensemble.fit_mix(a[order], b[order], yy[order])
    assert fitted.weight in ensemble.SHARE_GRID and fitted.mode in ensemble.MODES
    best = ensemble.nll(ensemble.mix_logits(a, b, fitted), yy)
    for mode in ensemble.MODES:                  # no share of either mode does better
        for w in ensemble.SHARE_GRID:
            mix = ensemble.Mix(mode, fitted.temperatures, float(w))
            assert ensemble.nll(ensemble.mix_logits(a, b, mix), yy) >= best - 1e-9
    for mode in ensemble.MODES:                  # one pool asked for: that pool, its best share
        only = ensemble.fit_mix(a, b, yy, (mode,))
        assert only.mode == mode and ensemble.nll(ensemble.mix_logits(a, b, only), yy) >= best
    for mode in ensemble.MODES:                  # a share of 1 is the member alone
        np.testing.assert_allclose(
            ensemble.mix_logits(a, b, ensemble.Mix(mode, (2.0, 1.0), 1.0)),
            ensemble.log_softmax(a / 2.0), atol=1e-9)


def test_mix_layer_refuses_bad_parameters():
    with pytest.raises(ValueError, match="bound must be > 0"):
        ensemble.InRange(0.0)
    with pytest.raises(ValueError, match="gated mix needs baseline_rms"):
        ensemble.mix_logits(np.zeros((1, 2)), np.zeros((1, 2)), ensemble.Mix(gate=1.0))
    with pytest.raises(ValueError, match="sum to 1"):
        ensemble.MixLogProbs([0.5, 0.6])
    with pytest.raises(ValueError, match="temperatures"):
        ensemble.MixLogProbs([0.5, 0.5], [1.0, 0.0])
    with pytest.raises(ValueError, match="mode"):
        ensemble.MixLogProbs([0.5, 0.5], mode="harmonic")
