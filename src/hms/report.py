"""The figures and the HTML report of hms: what a person looks at to judge a model.

- ``timeline_figure``: ``hms.annotate``'s ``timeline.png``, the class probabilities over a
  recording above its spectrogram strip;
- ``ensemble_report``: the PNGs and ``report.html`` of out-of-fold predictions (per-class KL,
  confusion of top classes, reliability, KL by number of votes, one colour per model) that
  ``hms.ensemble`` leaves beside its weights and ``hms.train`` in each run folder;
- ``sample_figure``: ``python -m hms.plot sample``'s picture of one labelled sample: the 16
  bipolar traces of the 50-s window (the central 10 s the experts labelled shaded) and of the
  central 10 s alone, the EEG spectrograms the model sees, the Kaggle spectrogram of its 10-min
  window, and the experts' votes beside the ensemble's probabilities (with a weights folder,
  run through ``hms.inference``).

Every figure is written under a temporary name and renamed (``hms.data.io.atomic_path``). The
timeline and the ensemble report need no torch (``hms.annotate`` runs ONNX folders without it);
the sample figure draws with the training code's spectrograms and imports torch when it runs.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and none is assumed

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backend_bases import FigureCanvasBase

from hms.constants import (
    CHAIN_NAMES,
    CLASS_COLORS,
    CLASSES,
    CONSENSUS_NAMES,
    HQ_VOTES,
    LABEL_SECONDS,
    SAMPLE_RATE,
    SPEC_FREQS,
    SPEC_REGIONS,
    WINDOW_SECONDS,
)
from hms.data.io import atomic_path, check_writable
from hms.data.montage import bipolar_names
from hms.data.sample import load_sample, sample_inputs
from hms.errors import HMSDataError, check_int
from hms.inference import WeightsFolder, load_members, open_weights
from hms.metrics import kl_divergence, kl_per_row, kl_summary, kl_terms, normalize_votes

LABELS = dict(zip(CLASSES, CONSENSUS_NAMES, strict=True))


def save(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- timeline


def _time_axis(timeline: pd.DataFrame) -> tuple[np.ndarray, str, bool]:
    """x values of the window centres: wall-clock datetimes when known, else hours/minutes."""
    if "start_time" in timeline:
        start = pd.to_datetime(timeline["start_time"]).dt.tz_localize(None)
        half = pd.to_timedelta(WINDOW_SECONDS / 2, unit="s")
        return (start + half).to_numpy(), "time of day", True
    centre = timeline["centre_s"].to_numpy(np.float64)
    if centre[-1] > 2 * 3600:
        return centre / 3600, "hours from the start of the recording", False
    return centre / 60, "minutes from the start of the recording", False


MAX_DRAWN_WINDOWS = 2000  # a timeline of more windows is drawn as means of consecutive ones


def _drawn(x: np.ndarray, probs: np.ndarray, power: np.ndarray, n: int) -> tuple:
    """``(x, probs, power, k)``: means of ``k`` consecutive windows when there are more than
    ``MAX_DRAWN_WINDOWS`` (a week of 10-s steps is 60,480 windows: drawn whole, the strips
    alone would be 24 million cells), each at its middle window's time."""
    k = -(-n // MAX_DRAWN_WINDOWS)
    if k <= 1:
        return x, probs, power, 1
    starts = np.arange(0, n, k)
    counts = np.diff(np.append(starts, n))

    def mean(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(a, starts, axis=0) / counts.reshape(-1, *[1] * (a.ndim - 1))

    return x[starts + counts // 2], mean(probs), mean(power), k


def timeline_figure(
    timeline: pd.DataFrame, strip: np.ndarray, path: str | Path, title: str = ""
) -> Path:
    """Stacked class probabilities over time above the four chains' spectrogram strip.

    ``strip`` is (windows, 400) Kaggle-style power (LL, RL, LP, RP x 100 bins) over each window's
    central 10 s; it is drawn as log10 power, 0-20 Hz, one panel per chain. More than
    ``MAX_DRAWN_WINDOWS`` windows are drawn as means of consecutive ones (the CSV keeps each).
    """
    x, xlabel, wall = _time_axis(timeline)
    probs = timeline[list(CLASSES)].to_numpy(np.float64)
    n = len(timeline)
    power = np.log10(np.maximum(strip.reshape(n, len(SPEC_REGIONS), -1), 1e-3))
    step = float(np.median(np.diff(timeline["start_s"]))) if n > 1 else 0.0
    x, probs, power, k = _drawn(x, probs, power, n)
    fig, axes = plt.subplots(
        5, 1, figsize=(13, 8.5), sharex=True, gridspec_kw={"height_ratios": [3, 1, 1, 1, 1]}
    )
    ax = axes[0]
    ax.stackplot(
        x, probs.T, labels=[LABELS[c] for c in CLASSES],
        colors=[CLASS_COLORS[c] for c in CLASSES], step=None,
    )  # fmt: skip
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=9, title="pattern")
    drawn = f", drawn as means of {k}" if k > 1 else ""
    ax.set_title(
        f"{title}  ({n} windows of {WINDOW_SECONDS} s every {step:g} s{drawn}; each value is "
        f"the central {LABEL_SECONDS} s)".strip(),
        fontsize=10,
    )
    lo, hi = np.percentile(power, [2, 98]) if power.size else (0.0, 1.0)
    freqs = np.asarray(SPEC_FREQS)
    keep = freqs <= 20.0
    image = None
    for ax, chain in zip(axes[1:], CHAIN_NAMES, strict=True):
        region = SPEC_REGIONS.index(chain)
        z = power[:, region, keep].T
        if len(x) > 1:
            image = ax.pcolormesh(
                x, freqs[keep], z, shading="nearest", cmap="magma", vmin=lo, vmax=hi,
                rasterized=True,
            )  # fmt: skip
        ax.set_ylabel(f"{chain}\nHz", rotation=0, ha="right", va="center", fontsize=9)
        ax.set_yticks([0, 10, 20])
    if image is not None:
        # Every panel shrinks alike (shared time axis); the bar sits beside the four strips.
        cbar = fig.colorbar(
            image, ax=axes.tolist(), pad=0.01, fraction=0.02, shrink=0.55, anchor=(0.0, 0.0)
        )
        cbar.set_label("log10 power (µV²/Hz)")
    axes[-1].set_xlabel(xlabel)
    if wall:
        days = len(x) > 1 and (x[-1] - x[0]) > np.timedelta64(1, "D")
        axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%d %b %H:%M" if days else "%H:%M"))
    return save(fig, path)


# --------------------------------------------------------------------------- ensemble report


def per_class_kl(votes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Mean over samples of each class's term of the KL divergence (the six sum to the KL)."""
    return kl_terms(normalize_votes(votes), probs).mean(axis=0)


def _confusion(votes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Row-normalised counts: expert consensus (rows) x predicted top class (columns)."""
    k = len(CLASSES)
    m = np.zeros((k, k))
    np.add.at(m, (votes.argmax(axis=1), probs.argmax(axis=1)), 1)
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1)


def _reliability(votes: np.ndarray, probs: np.ndarray, bins: int = 10):
    """Per probability bin (all classes pooled): mean prediction, mean expert share, count."""
    target = normalize_votes(votes).ravel()
    p = probs.ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, p, bins) / np.maximum(count, 1)
    mean_t = np.bincount(which, target, bins) / np.maximum(count, 1)
    return mean_p, mean_t, count


VOTE_BINS = ((1, 2), (3, 5), (6, 9), (10, 14), (15, 19), (20, 10**9))


def _kl_by_votes(votes: np.ndarray, probs: np.ndarray):
    n = votes.sum(axis=1)
    rows = kl_per_row(normalize_votes(votes), probs)
    out = []
    for lo, hi in VOTE_BINS:
        mask = (n >= lo) & (n <= hi)
        out.append((rows[mask].mean() if mask.any() else np.nan, int(mask.sum())))
    return out


def _bin_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 10**9 else (f"{lo}" if lo == hi else f"{lo}-{hi}")


def ensemble_report(
    votes: np.ndarray, probs: Mapping[str, np.ndarray], out_dir: str | Path, title: str = ""
) -> list[Path]:
    """PNGs and ``report.html`` of out-of-fold predictions: one colour per model.

    ``votes`` (N, 6) are the experts' vote counts, ``probs`` each model's (N, 6) out-of-fold
    probabilities by name (members and blends). Returns the files written.
    """
    out_dir = Path(out_dir)
    names = list(probs)
    colors = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
    written = []

    # per-class KL
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        terms = per_class_kl(votes, probs[name])
        ax.bar(
            np.arange(len(CLASSES)) + (j - (len(names) - 1) / 2) * width, terms, width,
            color=colors[j], label=f"{name} (KL {terms.sum():.3f})",
        )  # fmt: skip
    ax.set_xticks(np.arange(len(CLASSES)), [LABELS[c] for c in CLASSES])
    ax.set_ylabel("mean KL term of the class")
    ax.set_title(f"{title}: where the KL comes from (terms sum to each model's KL)".lstrip(": "))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.axhline(0, color="black", lw=0.6)
    written.append(save(fig, out_dir / "per_class_kl.png"))

    # confusion of top classes
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 4.0 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        m = _confusion(votes, probs[name])
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(CLASSES)):
            for j in range(len(CLASSES)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 0.5 else "black")  # fmt: skip
        ticks = [LABELS[c] for c in CLASSES]
        ax.set_xticks(range(len(CLASSES)), ticks, rotation=45, fontsize=8)
        ax.set_yticks(range(len(CLASSES)), ticks, fontsize=8)
        acc = float((votes.argmax(1) == probs[name].argmax(1)).mean())
        ax.set_title(f"{name}\ntop-class agreement {acc:.2f}", fontsize=9)
        ax.set_xlabel("predicted top class")
        ax.set_ylabel("expert consensus")
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle("Confusion of top classes (rows sum to 1)", fontsize=10)
    fig.tight_layout()
    written.append(save(fig, out_dir / "confusion.png"))

    # reliability
    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(6, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", label="calibrated")
    for j, name in enumerate(names):
        mean_p, mean_t, count = _reliability(votes, probs[name])
        ok = count > 0
        ax.plot(mean_p[ok], mean_t[ok], "o-", color=colors[j], label=name, ms=4)
        axc.plot(mean_p[ok], count[ok], "o-", color=colors[j], ms=3)
    ax.set_ylabel("mean expert vote share")
    ax.set_title("Reliability: predicted probability vs. share of votes (all classes)")
    ax.legend(fontsize=8)
    axc.set_yscale("log")
    axc.set_ylabel("(sample, class)\npairs")
    axc.set_xlabel("predicted probability (10 bins)")
    written.append(save(fig, out_dir / "reliability.png"))

    # KL by number of votes
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(names)
    counts = None
    for j, name in enumerate(names):
        kls = _kl_by_votes(votes, probs[name])
        counts = [c for _, c in kls]
        ax.bar(
            np.arange(len(VOTE_BINS)) + (j - (len(names) - 1) / 2) * width,
            [k for k, _ in kls], width, color=colors[j], label=name,
        )  # fmt: skip
    labels = [
        f"{_bin_label(lo, hi)}\n(n={c})"
        for (lo, hi), c in zip(VOTE_BINS, counts or [], strict=True)
    ]
    ax.set_xticks(np.arange(len(VOTE_BINS)), labels, fontsize=8)
    ax.set_xlabel("number of expert votes")
    ax.set_ylabel("KL divergence")
    ax.set_title("KL by number of votes (few votes: noisy targets)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    written.append(save(fig, out_dir / "kl_by_votes.png"))

    # report.html: the table and the four pictures
    target, n_votes = normalize_votes(votes), votes.sum(axis=1)
    summaries = {name: kl_summary(target, probs[name], n_votes) for name in names}
    lines = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title or 'hms ensemble report')}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "td,th{padding:2px 8px;text-align:right}img{max-width:100%}</style>",
        f"<h1>{html.escape(title or 'Ensemble report')}</h1>",
        f"<p>Out-of-fold predictions of {len(votes)} samples "
        f"({summaries[names[0]].n_hq} with at least {HQ_VOTES} votes). KL divergence between "
        "the experts' vote distribution and each prediction.</p>",
        "<table><tr><th style='text-align:left'>model</th><th>KL</th>"
        f"<th>KL (&ge;{HQ_VOTES} votes)</th>"
        + "".join(f"<th>{LABELS[c]}</th>" for c in CLASSES)
        + "</tr>",
    ]
    for name in names:
        terms = per_class_kl(votes, probs[name])
        lines.append(
            f"<tr><td style='text-align:left'>{html.escape(name)}</td>"
            f"<td>{summaries[name].kl:.4f}</td><td>{summaries[name].kl_hq:.4f}</td>"
            + "".join(f"<td>{t:.4f}</td>" for t in terms)
            + "</tr>"
        )
    lines.append("</table><p>Class columns: each class's term of the KL (they sum to the KL).</p>")
    for p in written:
        lines.append(f"<h2>{p.stem.replace('_', ' ')}</h2><img src='{p.name}'>")
    page = out_dir / "report.html"
    with atomic_path(page) as tmp:
        tmp.write_text("\n".join(lines))
    written.append(page)
    return written


# --------------------------------------------------------------------------- one sample


def predict_sample(
    sample: dict, weights_dir: str | Path | WeightsFolder
) -> tuple[np.ndarray, dict, object]:
    """The ensemble's probabilities for one sample, each member's, and the first image model
    (the network of a PyTorch folder that looks at an image, with its inputs as tensors).
    ``weights_dir``: a folder, or one opened (checked) by ``hms.inference.open_weights``."""
    weights, members = load_members(weights_dir, "cpu")
    per_member, image_model = {}, None
    for m in members:
        inputs = sample_inputs(sample, m.recording, m.window)
        per_member[m.name] = m.predict_batch(inputs)[0]
        net = m.folds[0].network
        if image_model is None and net is not None:
            import torch

            tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
            with torch.no_grad():
                if net.image(tensors) is not None:
                    image_model = (m.name, net, tensors)
    probs = weights.ensemble.blend({m: per_member[m][None] for m in weights.ensemble.members})[0]
    return probs, per_member, image_model


def _traces(ax, eeg: np.ndarray, t0: float, title: str, shade: tuple[float, float] | None):
    names = bipolar_names()
    gap = 200.0  # µV between traces
    t = t0 + np.arange(eeg.shape[1]) / SAMPLE_RATE
    for i in range(len(names)):
        ax.plot(t, eeg[i] - i * gap, lw=0.5, color="black")
    ax.set_yticks([-i * gap for i in range(len(names))], names, fontsize=7)
    ax.set_ylim(-(len(names) - 0.3) * gap, 1.3 * gap)
    ax.set_xlim(t[0], t[-1])
    if shade is not None:
        ax.axvspan(*shade, color="#FFE9A8", zorder=0, label="labelled 10 s")
    ax.set_xlabel("seconds in the recording")
    ax.set_title(title, fontsize=9)
    bar_x = t[-1] - 0.02 * (t[-1] - t[0])
    ax.plot([bar_x, bar_x], [gap * 0.2, gap * 1.2], color="tab:red", lw=2)
    ax.text(bar_x, gap * 0.7, "200 µV ", ha="right", va="center", fontsize=7, color="tab:red")


def sample_figure(
    data_dir: str | Path,
    eeg_id: int | None,
    path: str | Path,
    weights_dir: str | Path | None = None,
    sub_id: int | None = None,
) -> Path:
    """Draw one sample (see the module docstring) to ``path``.

    The arguments, the output file and the weights folder are checked before any recording is
    read (``HMSDataError`` naming the argument or file)."""
    for name, value in (("eeg_id", eeg_id), ("sub_id", sub_id)):
        if value is not None:
            check_int(name, value, 0)
    path = check_writable(path, "figure", folder=False)
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in {"", *formats}:
        raise HMSDataError(
            path, f"unknown picture format {path.suffix!r}; use one of {sorted(formats)}"
        )
    weights = None
    if weights_dir is not None:  # every file checked before the recording is read
        weights = open_weights(weights_dir, "cpu")
    sample = load_sample(data_dir, eeg_id, sub_id)
    inputs = sample_inputs(sample)
    eeg = inputs["eeg"][0]
    start_s = sample["start"] / SAMPLE_RATE
    centre0 = start_s + (WINDOW_SECONDS - LABEL_SECONDS) / 2
    probs = per_member = image_model = None
    if weights is not None:
        probs, per_member, image_model = predict_sample(sample, weights)

    fig = plt.figure(figsize=(16, 13))
    grid = fig.add_gridspec(
        3, 3, height_ratios=[1.25, 1.25, 1], hspace=0.38, wspace=0.28, top=0.94, bottom=0.06
    )
    _traces(
        fig.add_subplot(grid[0, :2]), eeg, start_s,
        "16 bipolar derivations, 50-s window (band-passed 0.5-20 Hz as the models see them)",
        (centre0, centre0 + LABEL_SECONDS),
    )  # fmt: skip
    a = (WINDOW_SECONDS - LABEL_SECONDS) // 2 * SAMPLE_RATE
    _traces(
        fig.add_subplot(grid[1, :2]), eeg[:, a : a + LABEL_SECONDS * SAMPLE_RATE], centre0,
        "the central 10 s the experts labelled", None,
    )  # fmt: skip

    # votes vs predicted probabilities
    ax = fig.add_subplot(grid[0, 2])
    x = np.arange(len(CLASSES))
    names = [LABELS[c] for c in CLASSES]
    if sample["votes"] is not None:
        votes = sample["votes"]
        share = votes / max(votes.sum(), 1)
        ax.bar(x - 0.2, share, 0.4, color=[CLASS_COLORS[c] for c in CLASSES],
               edgecolor="black", label=f"experts ({int(votes.sum())} votes)")  # fmt: skip
    if probs is not None:
        ax.bar(x + 0.2, probs, 0.4, color="white", edgecolor="black", hatch="//",
               label="ensemble")  # fmt: skip
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of votes / probability")
    if sample["votes"] is None and probs is None:
        ax.text(2.5, 0.5, "no votes known for this EEG;\ngive weights_dir=... for a prediction",
                ha="center", va="center", fontsize=9)  # fmt: skip
    else:
        ax.legend(fontsize=8)
    if probs is not None and sample["votes"] is not None:
        kl = kl_divergence(normalize_votes(sample["votes"][None]), probs[None])
        ax.set_title(f"votes vs. prediction (KL {kl:.3f})", fontsize=9)
    else:
        ax.set_title("votes" if probs is None else "prediction (no votes known)", fontsize=9)

    # Kaggle spectrogram, 10 min
    ax = fig.add_subplot(grid[1, 2])
    import torch  # the sample figure draws with the training code's spectrograms

    from hms.transforms.spectrogram import EEGSpectrogram, KaggleSpectrogramImage

    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
    kaggle = KaggleSpectrogramImage().maps(tensors["spec"])[0].numpy()  # (4, 100, 300) ln power
    stacked = np.concatenate(list(kaggle[::-1]), axis=0)  # RL at the bottom, LL on top
    extent = (-300, 300, 0, stacked.shape[0])
    ax.imshow(stacked, aspect="auto", origin="lower", cmap="magma", extent=extent)
    ax.set_yticks([100 * i + 50 for i in range(4)], [f"{c}" for c in CHAIN_NAMES[::-1]], fontsize=8)
    ax.axvspan(-25, 25, fill=False, edgecolor="white", lw=1)
    ax.set_xlabel("seconds from the label centre (white box: the 50-s EEG window)")
    ax.set_title(
        f"Kaggle spectrogram, 10 min, ln power; each band 0.6 (bottom) to 20 Hz\n"
        f"({sample['spec_source']})",
        fontsize=9,
    )

    # EEG spectrograms (seed settings) and the image the first image model sees
    with torch.no_grad():
        maps = EEGSpectrogram().maps(tensors["eeg"])
    maps = maps[0].numpy()  # (4, 128 mels, 256 frames)
    sub = grid[2, :2].subgridspec(1, 4, wspace=0.15)
    for i, chain in enumerate(CHAIN_NAMES):
        ax = fig.add_subplot(sub[0, i])
        ax.imshow(maps[i], aspect="auto", origin="lower", cmap="magma",
                  extent=(start_s, start_s + WINDOW_SECONDS, 0, 20))  # fmt: skip
        ax.set_title(f"EEG spectrogram {chain}", fontsize=9)
        ax.set_xlabel("s")
        if i == 0:
            ax.set_ylabel("Hz (128 mel bands, ~linear below 20 Hz); dB")
        else:
            ax.set_yticks([])
    ax = fig.add_subplot(grid[2, 2])
    if image_model is not None:
        name, net, model_inputs = image_model
        with torch.no_grad():
            image = net.image(model_inputs)[0, 0].float().numpy()
        ax.imshow(image, aspect="auto", origin="upper", cmap="viridis")  # as the network sees it
        ax.set_title(f"input image of {name} (normalised), {image.shape[0]}x{image.shape[1]}",
                     fontsize=9)  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "give weights_dir=... to see\na model's input and prediction",
                ha="center", va="center", fontsize=9)  # fmt: skip
    sub_txt = f", eeg_sub_id {sample['sub_id']}" if sample["sub_id"] is not None else ""
    fig.suptitle(
        f"{sample['split']} eeg_id {sample['eeg_id']}{sub_txt}: window {start_s:g}-"
        f"{start_s + WINDOW_SECONDS:g} s of {sample['eeg_path'].name}",
        fontsize=11,
    )
    if per_member:
        text = "members: " + "; ".join(
            f"{m} top {LABELS[CLASSES[int(np.argmax(p))]]} {p.max():.2f}"
            for m, p in per_member.items()
        )
        fig.text(0.5, 0.005, text, ha="center", fontsize=8)
    return save(fig, path)
