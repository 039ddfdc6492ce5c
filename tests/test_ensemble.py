import numpy as np
import pytest
from test_train import VARIANT

from signbart import baseline, ensemble, quantize
from signbart.data import open_dataset
from signbart.model import build_model
from signbart.preprocess import prepare
from signbart.tflite import check, predict_fn


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


def test_ensemble_is_the_weighted_log_prob_mix_in_keras_and_tflite(fold_data):
    train, val = fold_data
    sb = build_model(VARIANT.model_config())
    lin = baseline.fit(train, 10, seed=0, steps=50)
    model = ensemble.build_ensemble(sb, lin, 0.3)
    inputs = {"keypoints": val.x, "attention_mask": val.mask}
    want = ensemble.log_softmax(
        0.3 * ensemble.log_softmax(sb.predict(inputs, verbose=0))
        + 0.7 * ensemble.log_softmax(lin.predict(val.x, val.mask)))
    got = model.predict(inputs, verbose=0)
    np.testing.assert_allclose(ensemble.log_softmax(got), want, rtol=1e-3, atol=1e-3)
    fp32 = quantize.to_tflite(model, 32)
    check(fp32, val.x[:2], val.mask[:2])
    lite = predict_fn(fp32)(val.x, val.mask)
    np.testing.assert_allclose(ensemble.log_softmax(lite), want, rtol=1e-3, atol=1e-3)
    ptq = quantize.ptq_dynamic(model, 32)
    assert len(ptq) < len(fp32) * 0.5
    agree = (predict_fn(ptq)(val.x, val.mask).argmax(1) == want.argmax(1)).mean()
    assert agree >= 0.9


def test_weight_is_fitted_on_the_given_predictions_only():
    y = np.array([0, 1, 2, 0])
    good, bad = np.eye(3)[y] * 5, np.eye(3)[[1, 2, 0, 1]] * 5
    assert ensemble.fit_weight(good, bad, y) == 1.0
    assert ensemble.fit_weight(bad, good, y) == 0.0
    assert ensemble.fit_weight(good, good, y) == 0.5      # undecided: equal shares
    with pytest.raises(ValueError, match="sum to 1"):
        ensemble.MixLogProbs([0.5, 0.6])
