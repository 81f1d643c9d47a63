"""The CSV tables of a plan: train.csv, test.csv, sample_submission.csv and the side files with
the true latent distributions and the test answers. Needs no signal, so it is the labels-only
path (``labels_only=True`` in ``generate``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hms.constants import CONSENSUS_NAMES, N_CLASSES, TRAIN_COLUMNS, VOTE_COLUMNS
from hms.synth.labels import CLASSES, consensus_index
from hms.synth.plan import EEG_ROW_LAG, Plan

LATENT_COLUMNS = VOTE_COLUMNS  # the side files reuse the submission's column names


def train_frame(plan: Plan) -> pd.DataFrame:
    """train.csv: one row per labelled sub-window, grouped by EEG, in plan order."""
    rows = []
    for sess in plan.train:
        spec_sub = 0
        for ex in sess.excerpts:
            eeg_sub = 0
            for ev in ex.events:
                cons = CONSENSUS_NAMES[int(consensus_index(ev.votes))]
                for off, lid in zip(ev.offsets, ev.label_ids, strict=True):
                    rows.append(
                        (ex.eeg_id, eeg_sub, float(off), sess.spectrogram_id, spec_sub,
                         float(ex.s0 + off - EEG_ROW_LAG), lid, sess.patient.patient_id, cons,
                         *ev.votes.tolist())
                    )  # fmt: skip
                    eeg_sub += 1
                    spec_sub += 1
    return pd.DataFrame(rows, columns=list(TRAIN_COLUMNS))


def train_latent_frame(plan: Plan) -> pd.DataFrame:
    """train_latent.csv: label_id and the latent class distribution of its event."""
    ids, lat = [], []
    for sess in plan.train:
        for ex in sess.excerpts:
            for ev in ex.events:
                ids.extend(ev.label_ids)
                lat.extend([ev.latent] * len(ev.label_ids))
    df = pd.DataFrame(np.array(lat).reshape(-1, N_CLASSES), columns=list(LATENT_COLUMNS))
    df.insert(0, "label_id", np.array(ids, dtype=np.int64))
    return df


def test_frames(plan: Plan) -> dict[str, pd.DataFrame]:
    """test.csv, sample_submission.csv, test_answers.csv and test_latent.csv, in test order."""
    eeg_ids = [s.excerpts[0].eeg_id for s in plan.test]
    events = [s.excerpts[0].events[0] for s in plan.test]
    test = pd.DataFrame(
        {
            "spectrogram_id": [s.spectrogram_id for s in plan.test],
            "eeg_id": eeg_ids,
            "patient_id": [s.patient.patient_id for s in plan.test],
        }
    )
    sub = pd.DataFrame({"eeg_id": eeg_ids})
    answers = pd.DataFrame({"eeg_id": eeg_ids})
    latent = pd.DataFrame({"eeg_id": eeg_ids})
    for i, col in enumerate(VOTE_COLUMNS):
        sub[col] = 1.0 / N_CLASSES
        answers[col] = np.array([e.votes[i] for e in events], dtype=np.int64)
        latent[col] = [e.latent[i] for e in events]
    return {
        "test.csv": test,
        "sample_submission.csv": sub,
        "test_answers.csv": answers,
        "test_latent.csv": latent,
    }


def events_frame(plan: Plan) -> pd.DataFrame:
    """events.csv: the rendered parameters of every event (for analysis, not for training)."""
    rows = []
    for sess in [*plan.train, *plan.test]:
        for ex in sess.excerpts:
            for k, ev in enumerate(ex.events):
                r = ev.render
                rows.append(
                    {
                        "split": sess.split, "eeg_id": ex.eeg_id, "event": k,
                        "spectrogram_id": sess.spectrogram_id,
                        "patient_id": sess.patient.patient_id,
                        "primary": CLASSES[ev.c1], "neighbour": CLASSES[ev.c2],
                        "borderline_m": ev.m, "amp_ratio": ev.ratio, "artefact_burden": ev.burden,
                        "n_raters": ev.n_raters, "first_offset": ev.offsets[0],
                        "last_offset": ev.offsets[-1], "n_rows": len(ev.offsets),
                        "seg_start_s": ev.seg_start, "seg_end_s": ev.seg_end,
                        "eeg_s0_in_session": ex.s0,
                        **{k2: v for k2, v in r.items() if not isinstance(v, tuple)},
                        "focus_x": r["focus"][0], "focus_y": r["focus"][1],
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def bayes_floor(votes: np.ndarray, latent: np.ndarray) -> float:
    """Mean KL(votes/n || latent): the score of a model that recovers the latent exactly."""
    from hms.synth.labels import kl_rows

    return float(kl_rows(votes, latent).mean())
