"""The pipeline's library (hms.workflow): the order of its runs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hms.errors import HMSDataError
from hms.workflow import teachers_first


def run(root, member: str, fold: int, sources=None):
    refine = {"enabled": bool(sources), "source": [f"{root}/{s}" for s in sources or []]}
    return member, fold, OmegaConf.create({"run_dir": f"{root}/{member}/fold{fold}",
                                           "refine": refine})  # fmt: skip


def test_students_run_after_every_fold_of_their_teachers(tmp_path):
    plan = [
        run(tmp_path, "effnet_b0", 0, ["resnet1d_gru"]),
        run(tmp_path, "effnet_b0", 1, ["resnet1d_gru"]),
        run(tmp_path, "resnet1d_gru", 0), run(tmp_path, "resnet1d_gru", 1),
        run(tmp_path, "multispec_b0", 0, ["resnet1d_gru", "features_gbm"]),
        run(tmp_path, "features_gbm", 0),
    ]  # fmt: skip
    order = [(m, f) for m, f, _ in teachers_first(plan)]
    assert order == [
        ("resnet1d_gru", 0), ("resnet1d_gru", 1), ("effnet_b0", 0), ("effnet_b0", 1),
        ("features_gbm", 0), ("multispec_b0", 0),
    ]  # fmt: skip
    plain = [run(tmp_path, "a", 0), run(tmp_path, "b", 0), run(tmp_path, "a", 1)]
    assert [(m, f) for m, f, _ in teachers_first(plain)] == [("a", 0), ("a", 1), ("b", 0)]


def test_a_cycle_of_teachers_is_refused(tmp_path):
    plan = [run(tmp_path, "a", 0, ["b"]), run(tmp_path, "b", 0, ["a"])]
    with pytest.raises(HMSDataError, match=r"members \['a', 'b'\] refine from each other"):
        teachers_first(plan)
