"""The ONNX export (hms.onnx_export, python -m hms.export format=onnx) of a weights folder of every
family with flip TTA on: the folder reproduces the PyTorch folder through hms.predict and
hms.annotate (the real Kaggle test sample, the built-in test split, an EDF timeline), and both
commands run it where the torch stack cannot be imported."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hms.annotation import annotate
from hms.blend import ENSEMBLE_FILE, read_ensemble
from hms.constants import CLASSES, VOTE_COLUMNS
from hms.submission import predict
from tests.conftest import copy_kaggle_test, run_without_torch, write_edf

pytestmark = pytest.mark.slow
ATOL = 1e-4  # the parity target; the graphs are exported checking the same


def test_the_onnx_folder_is_a_weights_folder_of_every_member(family_run, family_onnx):
    source, onnx = read_ensemble(family_run["weights"]), read_ensemble(family_onnx)
    assert onnx.backend == "onnx" and source.backend == "torch"
    assert onnx.members == source.members and onnx.weights == source.weights
    assert onnx.data == source.data and onnx.space == source.space
    assert onnx.inputs["resnet1d_gru"] == ["eeg"] and onnx.inputs["multispec_b0"] == ["spec", "eeg"]
    for member, files in onnx.checkpoints.items():
        assert files == [f"{member}/fold0.onnx"]
    built = json.loads((family_onnx / ENSEMBLE_FILE).read_text())["built_from"]
    assert set(built["checkpoints"]) == {f for files in onnx.checkpoints.values() for f in files}
    assert set(built["exported_from"]["checkpoints"]) == {
        f for files in source.checkpoints.values() for f in files
    }
    assert sorted(p.name for p in family_onnx.iterdir()) == sorted(
        [ENSEMBLE_FILE, "README.md", *onnx.members]
    )


@pytest.mark.parametrize("split", ["kaggle", "built-in"])
def test_predict_from_onnx_equals_predict_from_pytorch(
    split, family_run, family_onnx, kaggle_dir, tmp_path
):
    test = (
        copy_kaggle_test(kaggle_dir, tmp_path / "kaggle") if split == "kaggle"
        else family_run["data"]
    )  # fmt: skip
    ref, ref_members = predict(
        test, family_run["weights"], None, device="cpu", return_members=True, progress=False
    )
    got, got_members = predict(
        test, family_onnx, None, device="cpu", return_members=True, progress=False
    )
    assert list(got.columns) == list(ref.columns) and got["eeg_id"].equals(ref["eeg_id"])
    np.testing.assert_allclose(got[list(VOTE_COLUMNS)], ref[list(VOTE_COLUMNS)], atol=ATOL)
    assert set(got_members) == set(ref_members) == set(read_ensemble(family_onnx).members)
    for member, probs in ref_members.items():
        np.testing.assert_allclose(got_members[member], probs, atol=ATOL, err_msg=member)


def test_annotate_from_onnx_equals_annotate_from_pytorch(family_run, family_onnx, tmp_path):
    from hms.data.io import read_eeg

    data = family_run["data"]
    ids = pd.read_csv(data / "test.csv")["eeg_id"][:2]
    signal = np.concatenate([read_eeg(data / "test_eegs" / f"{i}.parquet") for i in ids])
    edf = write_edf(tmp_path / "rec.edf", np.nan_to_num(signal))
    args = {"step_s": 10.0, "missing": "interpolate", "device": "cpu", "progress": False}
    ref = annotate(edf, family_run["weights"], tmp_path / "pt", **args)
    got = annotate(edf, family_onnx, tmp_path / "onnx", **args)
    assert len(got) == len(ref) > 3
    np.testing.assert_allclose(got[list(CLASSES)], ref[list(CLASSES)], atol=ATOL)
    summary = json.loads((tmp_path / "onnx" / "annotate.json").read_text())
    assert summary["backend"] == "onnx"


def test_predict_and_annotate_run_where_torch_cannot_be_imported(
    family_run, family_onnx, kaggle_dir, tmp_path
):
    test = copy_kaggle_test(kaggle_dir, tmp_path / "kaggle")
    ref = predict(test, family_run["weights"], None, device="cpu", progress=False)
    done = run_without_torch(
        "hms.predict", f"test_path={test}", f"weights_dir={family_onnx}",
        f"out={tmp_path / 'sub.csv'}", "progress=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "onnx on cpu" in done.stdout
    got = pd.read_csv(tmp_path / "sub.csv")
    np.testing.assert_allclose(got[list(VOTE_COLUMNS)], ref[list(VOTE_COLUMNS)], atol=ATOL)

    from hms.data.io import read_eeg

    data = family_run["data"]
    eeg_id = pd.read_csv(data / "test.csv")["eeg_id"].iloc[0]
    signal = np.nan_to_num(read_eeg(data / "test_eegs" / f"{eeg_id}.parquet"))
    edf = write_edf(tmp_path / "one.edf", np.concatenate([signal, signal]))
    done = run_without_torch(
        "hms.annotate", f"recording={edf}", f"weights_dir={family_onnx}",
        f"out_dir={tmp_path / 'ann'}", "missing=interpolate", "progress=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    timeline = pd.read_csv(tmp_path / "ann" / "timeline.csv")
    ref = annotate(edf, family_run["weights"], tmp_path / "ref", missing="interpolate",
                   device="cpu", progress=False)  # fmt: skip
    np.testing.assert_allclose(timeline[list(CLASSES)], ref[list(CLASSES)], atol=ATOL)
    assert (tmp_path / "ann" / "timeline.png").is_file()

    # The PyTorch folder there: one line saying what to do, not a traceback.
    done = run_without_torch(
        "hms.predict", f"test_path={test}", f"weights_dir={family_run['weights']}",
        f"out={tmp_path / 'no.csv'}",
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert "PyTorch weights folder, and torch cannot be imported here" in done.stderr
    assert not (tmp_path / "no.csv").exists()


def test_an_exported_folder_is_not_exported_again_and_replaces_only_its_own_kind(
    family_run, family_onnx, tmp_path
):
    from hms.errors import HMSDataError
    from hms.onnx_export import export_onnx

    with pytest.raises(HMSDataError, match=r"an ONNX weights folder \(an export\): export from"):
        export_onnx(family_onnx, tmp_path / "again")
    with pytest.raises(HMSDataError, match=r"no ensemble\.json of a folder of ONNX graphs"):
        export_onnx(family_run["weights"], family_run["work"] / "data")
    with pytest.raises(HMSDataError, match="holds the weights folder, which replacing it would"):
        export_onnx(family_run["weights"], family_run["weights"].parent)


def test_trees_are_checked_on_the_features_the_graph_computes(tmp_path, monkeypatch):
    """A tree split between PyTorch's feature and onnxruntime's (a rounding error apart) changes
    the probabilities end to end, as a trained baseline's splits can (the main command's second
    fold did, by 2.5e-3): the export checks the features at atol and the trees on the same
    features, so it passes; a graph whose trees or features are not the checkpoint's still
    fails."""
    import onnxruntime as ort
    import torch

    from hms.models.features import FeatureGBM
    from hms.onnx_export import (
        PARITY_BATCHES,
        EncodeModel,
        GraphModel,
        export_graph,
        graph_difference,
    )

    net = FeatureGBM().eval()
    export_graph(EncodeModel(net), tmp_path / "encode.onnx")
    cpu = ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(tmp_path / "encode.onnx"), providers=cpu)
    example = net.example_batch(PARITY_BATCHES[0], seed=1)  # the check's first batch
    with torch.no_grad():
        theirs = net.encode(example).numpy()
    ours = session.run(None, {"eeg": example["eeg"].numpy()})[0]
    gap = np.abs(ours.astype(np.float64) - theirs)
    if gap.max() == 0:
        pytest.skip("this onnxruntime computes the features bit for bit as PyTorch does")
    row, feature = np.unravel_index(gap.argmax(), gap.shape)
    between = (float(ours[row, feature]) + float(theirs[row, feature])) / 2
    stump = {
        "feature": np.array([feature, 0, 0]), "threshold": np.array([between, 0.0, 0.0]),
        "left": np.array([1, 1, 2]), "right": np.array([2, 1, 2]),
        "value": np.array([0.0, 3.0, -3.0]), "depth": 1,
    }  # fmt: skip
    net.trees.set_trees([stump], [0])  # seizure +3 on one side of the split, -3 on the other
    model = GraphModel(net, tta_flip=True)
    export_graph(model, tmp_path / "g.onnx")

    parity = graph_difference(model, tmp_path / "g.onnx")
    assert parity.end_to_end > 0.1  # the row went the other way in onnxruntime
    assert parity.within(ATOL), parity
    assert parity.encoded <= 1e-5 and parity.probabilities <= 1e-6

    with torch.no_grad():
        net.trees.value[0, 1] = 2.0  # trees that are not the graph's
    assert not graph_difference(model, tmp_path / "g.onnx").within(ATOL)
    with torch.no_grad():
        net.trees.value[0, 1] = 3.0
    assert graph_difference(model, tmp_path / "g.onnx").within(ATOL)
    # An exporter that got the features wrong: the features' own check catches it.
    encode = EncodeModel.forward

    def off_by_a_little(self, *inputs):
        return encode(self, *inputs) * 1.001

    monkeypatch.setattr(EncodeModel, "forward", off_by_a_little)
    wrong = graph_difference(model, tmp_path / "g.onnx")
    assert wrong.encoded > ATOL and not wrong.within(ATOL)
