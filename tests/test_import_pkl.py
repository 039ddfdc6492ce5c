import json
import pickle

import numpy as np
import pytest
from conftest import shared_path

from signbart.data import open_dataset
from signbart.errors import DatasetError, UserError
from signbart.import_pkl import import_pkl

SAMPLE = shared_path("seed-pkl-sample")


def test_refuses_without_trust(tmp_path):
    with pytest.raises(UserError, match="refusing to unpickle"):
        import_pkl(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(SAMPLE is None, reason="../shared/data/seed-pkl-sample is absent")
def test_converts_the_real_reference_sample(tmp_path):
    n = import_pkl(SAMPLE, tmp_path / "out", trust=True)
    ds = open_dataset(tmp_path / "out")
    with open(SAMPLE / "all/G10/user12_G10_R10.pkl", "rb") as f:
        original = pickle.load(f)  # the test's own trusted fixture
    assert n == 1 and len(ds) == 1 and ds.layout.name == "holistic-90"
    assert ds.labels == [f"G{i:02d}" for i in range(1, 11)]
    row = ds.manifest.iloc[0]
    assert (row.signer, row.label, row.repetition, row.n_frames) == ("user12", "G10", "R10", 38)
    np.testing.assert_allclose(ds.keypoints(0), original["keypoints"], rtol=1e-6)
    assert [k.source_index for k in ds.layout.keypoints if k.group == "face"] == \
        original["face_mesh_indices"]
    assert not list((tmp_path / "out").rglob("*.pkl"))


def test_bad_pickle_contents_name_the_file_and_field(tmp_path):
    src = tmp_path / "src" / "all" / "G01"
    src.mkdir(parents=True)
    with open(src / "user01_G01_R01.pkl", "wb") as f:
        pickle.dump({"keypoints": np.zeros((4, 33, 3)), "class": "G01"}, f)
    with pytest.raises(DatasetError, match=r"user01_G01_R01.pkl: field 'keypoints' has shape"):
        import_pkl(tmp_path / "src", tmp_path / "out", trust=True)
    with open(src / "user01_G01_R01.pkl", "wb") as f:
        pickle.dump({"keypoints": np.zeros((4, 65, 2)), "class": "G07"}, f)
    (tmp_path / "src" / "label2id.json").write_text(json.dumps({"G01": 0, "G02": 1}))
    with pytest.raises(DatasetError, match="field 'class' is 'G07'"):
        import_pkl(tmp_path / "src", tmp_path / "out2", trust=True)
