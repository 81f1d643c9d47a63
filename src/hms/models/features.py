"""The feature baseline: quantitative-EEG features of a window and gradient-boosted trees on them.

``EEGFeatures`` turns the 16 bipolar derivations that every member reads (hms's montage and
0.5-20 Hz band-pass, from the same cache) into about 200 standard qEEG features, in torch on the
batch: Welch band powers per chain (central 10 s and the whole 50 s), relative powers, spectral
peak and entropy, hemispheric asymmetry, time-domain shape (kurtosis, skewness, line length,
peak-to-SD), periodicity (autocorrelation of the signal and of its energy), left-right and
neighbour correlations, and the change of power and peak frequency across the 50 s.

``FeatureGBM`` fits a LightGBM multiclass model on them, with the soft vote distributions as
targets (each window counted once per class, weighted by that class's vote share: the weighted
log-loss is then the cross-entropy to the votes, i.e. the KL up to a constant). Its trees are
stored as tensors (``TreeEnsemble``) and evaluated in torch, so a fitted baseline is an ordinary
``HMSModule`` checkpoint: ``hms.predict``, ``hms.annotate`` and ``hms.export`` load and run it
through the one path they use for every member, on CPU or GPU, and loading runs no pickled code.

Why torch rather than a feature library (e.g. ``mne-features``) for the features: the baseline
then computes its inputs exactly as the nets do, on the batch, inside the checkpointed module;
``tests/test_features.py`` checks the band powers against ``scipy.signal.welch``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hms.constants import CHAIN_NAMES, N_CLASSES, SAMPLE_RATE, WINDOW_SAMPLES
from hms.data.montage import DEFAULT_MONTAGE, get_montage
from hms.models.base import OnePassNet
from hms.models.losses import vote_weights
from hms.transforms.augment import flip_batch

# Frequency bands (Hz) of the band-power features: delta split finely, since rhythmic and periodic
# patterns live there.
BANDS: tuple[tuple[float, float], ...] = (
    (0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 13.0),
    (13.0, 20.0),
)  # fmt: skip
_LEFT, _RIGHT = (0, 1), (3, 2)  # chains LL, LP and their mirrors RL, RP (order LL, LP, RP, RL)
_EPS = 1e-6
_PERIOD_S, _PERIOD_FS, _PERIOD_MAX_LAG_S = 20, 50, 3.0  # periodicity: span, rate, longest lag


def dft_basis(window: Tensor, n_bins: int | None = None) -> Tensor:
    """(len(window), 2 * n_bins): the real and imaginary DFT kernels of the first ``n_bins``
    one-sided bins (all by default), the window folded in: segments @ basis is their windowed
    DFT. A matrix product, unlike an FFT, exports to ONNX as one MatMul that onnxruntime runs
    fast, and computes only the bins that are used."""
    n = window.shape[-1]
    k = torch.arange(n // 2 + 1 if n_bins is None else n_bins, dtype=torch.float64)
    angle = 2 * math.pi * torch.arange(n, dtype=torch.float64)[:, None] * k[None, :] / n
    w = window.double()[:, None]
    return torch.cat([w * torch.cos(angle), -w * torch.sin(angle)], dim=1).to(window.dtype)


def _segments(x: Tensor, nperseg: int, step: int) -> Tensor:
    """(..., T) -> (..., S, nperseg): the segments of ``x.unfold(-1, nperseg, step)``.

    PyTorch takes unfold's strided view (no copy). Exported (``torch.onnx.export``), unfold
    becomes an index Gather that onnxruntime runs slowly (a third of the feature baseline's
    time), so half-overlapping segments are built there from the signal cut into halves, by a
    reshape and a concatenation: the same values (``tests/test_features.py``)."""
    t = int(x.shape[-1])  # a Python number also when traced (the window's length is fixed)
    if not torch.compiler.is_exporting() or nperseg != 2 * step or t < nperseg:
        return x.unfold(-1, nperseg, step)
    n_segments = (t - nperseg) // step + 1
    halves = x[..., : (n_segments + 1) * step].reshape(*x.shape[:-1], n_segments + 1, step)
    return torch.cat([halves[..., :-1, :], halves[..., 1:, :]], dim=-1)


def segment_psd(
    x: Tensor, nperseg: int, fs: float = SAMPLE_RATE, basis: Tensor | None = None
) -> Tensor:
    """One-sided periodograms of Hann segments with 50 % overlap: (..., T) -> (..., S, F).

    Their mean over segments is ``welch_psd``; a mean over some of them is the Welch PSD of the
    span those segments cover. ``basis`` (``dft_basis`` of the Hann window) may keep only the
    first bins; a module passes its own, a buffer, so that an export holds it as a constant.
    """
    if basis is None:
        window = torch.hann_window(nperseg, periodic=True, dtype=x.dtype, device=x.device)
        basis = dft_basis(window)
    step = nperseg - nperseg // 2  # scipy: noverlap = nperseg // 2
    re, im = (_segments(x, nperseg, step) @ basis).chunk(2, dim=-1)
    power = re * re + im * im
    n_bins = power.shape[-1]
    scale = torch.full((n_bins,), 2.0, dtype=x.dtype, device=x.device)
    scale[0] = 1.0
    if nperseg % 2 == 0 and n_bins == nperseg // 2 + 1:  # the Nyquist bin
        scale[-1] = 1.0
    window_power = basis[:, 0].square().sum()  # the first bin's real kernel is the window
    return power * (scale / (fs * window_power))


def welch_psd(x: Tensor, nperseg: int, fs: float = SAMPLE_RATE) -> Tensor:
    """One-sided Welch PSD (..., T) -> (..., nperseg // 2 + 1) in units²/Hz: Hann segments of
    ``nperseg`` samples, 50 % overlap, no detrending, as
    ``scipy.signal.welch(x, fs, "hann", nperseg, detrend=False)``."""
    return segment_psd(x, nperseg, fs).mean(dim=-2)


def _standardise(x: Tensor) -> Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    return x / (x.std(dim=-1, keepdim=True) + _EPS)


def _fft_length(t: int) -> int:
    """A power of two >= 2t - 1: zero-padded that far, the circular correlation is the linear
    one, and onnxruntime's DFT takes its FFT path (else O(n^2))."""
    return 1 << (2 * t - 1).bit_length()


def acf_basis(n: int, max_lag: int) -> Tensor:
    """(n // 2 + 1, max_lag + 1): power spectrum (one-sided, of an n-point FFT) @ basis is the
    autocorrelation at lags 0..max_lag, the first lags of ``irfft(power, n)`` as one matrix
    product (a fraction of the inverse FFT's work, and a MatMul in an export)."""
    k = torch.arange(n // 2 + 1, dtype=torch.float64)[:, None]
    lag = torch.arange(max_lag + 1, dtype=torch.float64)[None, :]
    weight = torch.full_like(k, 2.0)
    weight[0] = weight[-1] = 1.0  # the DC and Nyquist bins appear once in the full spectrum
    return (weight * torch.cos(2 * math.pi * k * lag / n) / n).float()


def _autocorr_peak(
    x: Tensor, fs: float, min_s: float, max_s: float, basis: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Peak of the normalised autocorrelation of (..., T) sampled at ``fs`` over lags
    [min_s, max_s] seconds: its value and its lag in seconds. ``basis``: ``acf_basis`` of the
    FFT length and the largest lag (a module passes its own buffer; made here otherwise)."""
    t = int(x.shape[-1])  # a Python number also when traced (the window's length is fixed)
    lo, hi = round(min_s * fs), round(max_s * fs)
    n = _fft_length(t)
    if basis is None:
        basis = acf_basis(n, hi).to(x.device)
    if basis.shape != (n // 2 + 1, hi + 1):
        raise ValueError(f"acf basis {tuple(basis.shape)} is not that of {n} points, lag {hi}")
    spec = torch.fft.rfft(_standardise(x), n=n, dim=-1)
    power = torch.view_as_real(spec).square().sum(dim=-1)
    acf = power @ basis.to(power.dtype)
    acf = acf / acf[..., :1].clamp_min(_EPS)
    value, lag = acf[..., lo:].max(dim=-1)
    return value, (lag + lo).to(x.dtype) / fs


def _corr(a: Tensor, b: Tensor) -> Tensor:
    return (_standardise(a) * _standardise(b)).mean(dim=-1)


class EEGFeatures(nn.Module):
    """EEG derivations of ``montage`` (B, C, 10000) µV -> features (B, n_features); ``names``
    lists them. Chain features average the derivations of each of the montage's chains
    (``chain_index``); derivation features read the chains' channels (``lateral_channels``)."""

    def __init__(self, nperseg: int = 2 * SAMPLE_RATE, montage: str = DEFAULT_MONTAGE) -> None:
        super().__init__()
        spec = get_montage(montage)
        chain_index = spec.chains_for("the qEEG features (the feature baseline, pretraining)")
        self.montage, self.n_channels = spec.name, spec.n_channels
        self.lateral = spec.lateral_channels
        local = {c: i for i, c in enumerate(self.lateral)}
        self.chain_index = [[local[c] for c in chain] for chain in chain_index]
        self.nperseg = nperseg
        # Every feature reads the PSD below 20 Hz only (bands, in-range peak and entropy): only
        # those bins are computed.
        freqs = torch.fft.rfftfreq(nperseg, 1.0 / SAMPLE_RATE)
        freqs = freqs[: int((freqs < max(hi for _, hi in BANDS)).sum())]
        masks = torch.stack([(freqs >= lo) & (freqs < hi) for lo, hi in BANDS]).float()
        self.register_buffer("band_masks", masks, persistent=False)  # (n_bands, n_freqs)
        window = torch.hann_window(nperseg, periodic=True)
        self.register_buffer("dft", dft_basis(window, len(freqs)), persistent=False)
        in_range = ((freqs >= 0.5) & (freqs < 20.0)).float()
        self.register_buffer("in_range", in_range, False)
        self.log_n_in_range = math.log(float(in_range.sum()))  # a constant, not read at run time
        self.register_buffer("freqs", freqs, persistent=False)
        self.df = SAMPLE_RATE / nperseg
        # Periodicity: the central 20 s at 50 Hz, lags up to 3 s (see forward).
        acf = acf_basis(_fft_length(_PERIOD_S * _PERIOD_FS), round(_PERIOD_MAX_LAG_S * _PERIOD_FS))
        self.register_buffer("acf", acf, persistent=False)
        self.names = self._names()

    @staticmethod
    def _names() -> list[str]:
        bands = [f"{lo:g}-{hi:g}Hz" for lo, hi in BANDS]
        pairs = ("LL-RL", "LP-RP")
        names: list[str] = []
        names += [f"logpow10s_{c}_{b}" for c in CHAIN_NAMES for b in bands]
        names += [f"logpow10s_{c}_total" for c in CHAIN_NAMES]
        names += [f"relpow10s_{c}_{b}" for c in CHAIN_NAMES for b in bands]
        names += [f"logpow50s_{c}_{b}" for c in CHAIN_NAMES for b in bands]
        names += [f"asym10s_{p}_{b}" for p in pairs for b in bands]
        names += [f"absasym10s_{p}_{b}" for p in pairs for b in bands]
        names += [f"asym10s_{p}_total" for p in pairs] + [f"absasym10s_{p}_total" for p in pairs]
        names += [f"peakfreq10s_{c}" for c in CHAIN_NAMES]
        names += [f"spectral_entropy10s_{c}" for c in CHAIN_NAMES]
        names += [f"focality10s_{b}" for b in bands]
        for stat in ("kurtosis", "absskew", "linelength", "peak_to_sd"):
            names += [f"{stat}10s_{c}" for c in CHAIN_NAMES]
        for sig in ("signal", "energy"):
            names += [f"acf_{sig}_peak_{c}" for c in CHAIN_NAMES]
            names += [f"acf_{sig}_lag_{c}" for c in CHAIN_NAMES]
        names += [f"lrcorr10s_{p}" for p in pairs] + [f"lrenvcorr10s_{p}" for p in pairs]
        names += [f"neighbourcorr10s_{c}" for c in CHAIN_NAMES]
        names += [f"evolution_logpow_{c}" for c in CHAIN_NAMES]
        names += [f"evolution_peakfreq_{c}" for c in CHAIN_NAMES]
        names += [f"central_vs_window_logpow_{c}" for c in CHAIN_NAMES]
        return names

    @property
    def n_features(self) -> int:
        return len(self.names)

    def _band_power(self, psd: Tensor) -> Tensor:
        """(..., n_freqs) PSD -> (..., n_bands) power in each band."""
        return psd @ self.band_masks.T * self.df

    def _peak_freq(self, psd: Tensor) -> Tensor:
        masked = psd * self.in_range - (1 - self.in_range)  # out-of-range bins never win
        return self.freqs[masked.argmax(dim=-1)]

    def _chains(self, x: Tensor) -> Tensor:
        """(B, lateral channels, ...) per derivation -> (B, 4, ...) mean over each chain."""
        return x[:, self.chain_index].mean(dim=2)

    @torch.no_grad()
    def forward(self, eeg: Tensor) -> Tensor:
        x = eeg.float()
        if x.shape[1] != self.n_channels or x.shape[-1] != WINDOW_SAMPLES:
            raise ValueError(
                f"expected (B, {self.n_channels}, {WINDOW_SAMPLES}) EEG of montage "
                f"{self.montage!r}, got {tuple(x.shape)}"
            )
        if self.lateral != list(range(x.shape[1])):
            x = x[:, self.lateral]
        _chains = self._chains
        sec, n = SAMPLE_RATE, x.shape[-1]
        out: list[Tensor] = []

        # One pass of 2-s periodograms (1-s hop) over the 50 s; the Welch PSD of a 10-s span is
        # the mean of the 9 segments inside it.
        seg = segment_psd(x, self.nperseg, basis=self.dft)  # (B, 16, 49, F)
        hop_s = (self.nperseg - self.nperseg // 2) / sec
        per_10s = round(10 / hop_s) - 1

        def span(start_s: float) -> Tensor:
            first = round(start_s / hop_s)
            return seg[:, :, first : first + per_10s].mean(dim=2)

        psd10 = span(20.0)  # the central, labelled 10 s
        bp_deriv = self._band_power(psd10)  # (B, 16, nb)
        bp10 = _chains(bp_deriv)  # (B, 4, nb)
        log_bp10 = (bp10 + _EPS).log()
        total10 = bp10.sum(dim=-1)
        log_total10 = (total10 + _EPS).log()
        out += [log_bp10.flatten(1), log_total10]
        out.append((bp10 / (total10.unsqueeze(-1) + _EPS)).flatten(1))

        bp50 = _chains(self._band_power(seg.mean(dim=2)))
        out.append((bp50 + _EPS).log().flatten(1))

        left, right = list(_LEFT), list(_RIGHT)
        asym = log_bp10[:, left] - log_bp10[:, right]  # (B, 2, nb)
        asym_total = log_total10[:, left] - log_total10[:, right]
        out += [asym.flatten(1), asym.abs().flatten(1), asym_total, asym_total.abs()]

        chain_psd10 = _chains(psd10)
        out.append(self._peak_freq(chain_psd10))
        p = chain_psd10 * self.in_range
        p = p / (p.sum(dim=-1, keepdim=True) + _EPS)
        out.append(-(p * (p + _EPS).log()).sum(dim=-1) / self.log_n_in_range)

        log_bp_deriv = (bp_deriv + _EPS).log()  # focality: loudest derivation over the median
        middle = (log_bp_deriv.shape[1] - 1) // 2  # torch.median's (lower) median, by a sort
        median = log_bp_deriv.sort(dim=1).values[:, middle]  # that exports (ONNX has no median)
        out.append(log_bp_deriv.amax(dim=1) - median)

        central = x[..., n // 2 - 5 * sec : n // 2 + 5 * sec]
        z = central - central.mean(dim=-1, keepdim=True)
        sd = z.std(dim=-1) + _EPS
        zn = z / sd.unsqueeze(-1)
        zn2 = zn.square()
        out.append(_chains(zn2.square().mean(dim=-1) - 3.0))
        out.append(_chains((zn2 * zn).mean(dim=-1).abs()))
        out.append(_chains(z.diff(dim=-1).abs().mean(dim=-1) / sd))
        out.append(_chains(z.abs().amax(dim=-1) / sd))

        # Periodicity over the central 20 s at 50 Hz (the signals stop at 20 Hz): lags 0.25-3 s
        # cover 0.33-4 Hz rhythms and discharge trains.
        half = _PERIOD_S * sec // 2
        mid20 = F.avg_pool1d(x[..., n // 2 - half : n // 2 + half], sec // _PERIOD_FS)
        for sig in (mid20, mid20.square()):
            value, lag = _autocorr_peak(sig, _PERIOD_FS, 0.25, _PERIOD_MAX_LAG_S, self.acf)
            out += [_chains(value), _chains(lag)]

        chains = central[:, self.chain_index]  # (B, 4, derivations per chain, T)
        env = chains.abs()
        pairs = list(zip(left, right, strict=True))
        out.append(torch.stack([_corr(chains[:, a], chains[:, b]).mean(-1) for a, b in pairs], 1))
        out.append(torch.stack([_corr(env[:, a], env[:, b]).mean(-1) for a, b in pairs], 1))
        out.append(_corr(chains[:, :, :-1], chains[:, :, 1:]).mean(dim=-1))

        psd_first, psd_last = _chains(span(0.0)), _chains(span(40.0))
        pow_first = (psd_first * self.in_range).sum(-1) * self.df
        pow_last = (psd_last * self.in_range).sum(-1) * self.df
        out.append((pow_last + _EPS).log() - (pow_first + _EPS).log())
        out.append(self._peak_freq(psd_last) - self._peak_freq(psd_first))
        out.append(log_total10 - (bp50.sum(dim=-1) + _EPS).log())

        features = torch.cat(out, dim=1)
        return torch.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)


class TreeEnsemble(nn.Module):
    """Additive multiclass trees evaluated in torch: features (B, F) -> raw scores (B, K).

    Each tree is a flat node table (``feature``, ``threshold``, ``left``, ``right``, ``value``); a
    leaf points to itself, so ``depth`` rounds of "go left if x <= threshold" bring every row to
    its leaf. ``tree_class`` says which class a tree adds to. The tables are buffers whose shapes
    come from the checkpoint being loaded (``_load_from_state_dict``), so the module is rebuilt
    from its hyperparameters alone and then filled.
    """

    _TABLES = ("feature", "threshold", "left", "right", "value", "tree_class")

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.register_buffer("feature", torch.zeros(0, 1, dtype=torch.long))
        self.register_buffer("threshold", torch.zeros(0, 1, dtype=torch.float64))
        self.register_buffer("left", torch.zeros(0, 1, dtype=torch.long))
        self.register_buffer("right", torch.zeros(0, 1, dtype=torch.long))
        self.register_buffer("value", torch.zeros(0, 1, dtype=torch.float64))
        self.register_buffer("tree_class", torch.zeros(0, dtype=torch.long))
        self.register_buffer("depth", torch.zeros((), dtype=torch.long))
        # The traversal's rounds (the depth) as a Python number: a forward pass that is exported
        # must not read its loop count from a tensor.
        self.n_rounds = 0

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in self._TABLES:
            key = prefix + name
            if key in state_dict:
                current = getattr(self, name)
                setattr(self, name, torch.empty_like(current).resize_(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.n_rounds = int(self.depth)

    def set_trees(self, trees: Sequence[dict[str, np.ndarray]], tree_class: Sequence[int]) -> None:
        """Fill the tables from flat trees (``feature``, ``threshold``, ``left``, ``right``,
        ``value`` arrays per tree, leaves pointing to themselves)."""
        n_nodes = max(len(t["value"]) for t in trees)
        device = self.feature.device

        def table(key: str, dtype: torch.dtype) -> Tensor:
            rows = []
            for t in trees:
                a = np.asarray(t[key])
                pad = n_nodes - len(a)
                if key in ("left", "right"):  # padding nodes point to themselves (never reached)
                    a = np.concatenate([a, np.arange(len(a), n_nodes)])
                else:
                    a = np.concatenate([a, np.zeros(pad, a.dtype)])
                rows.append(a)
            return torch.as_tensor(np.stack(rows), dtype=dtype, device=device)

        self.feature = table("feature", torch.long)
        self.threshold = table("threshold", torch.float64)
        self.left = table("left", torch.long)
        self.right = table("right", torch.long)
        self.value = table("value", torch.float64)
        self.tree_class = torch.as_tensor(list(tree_class), dtype=torch.long, device=device)
        self.depth = torch.tensor(max(int(t["depth"]) for t in trees), device=device)
        self.n_rounds = int(self.depth)

    def forward(self, x: Tensor) -> Tensor:
        if self.n_trees == 0:
            raise RuntimeError("TreeEnsemble has no trees: fit the model or load a checkpoint")
        b = x.shape[0]
        n_trees, n_nodes = self.feature.shape
        offsets = torch.arange(n_trees, device=x.device) * n_nodes  # (T,)
        feature, threshold = self.feature.flatten(), self.threshold.flatten()
        left, right = self.left.flatten(), self.right.flatten()
        x = x.double()
        node = torch.zeros(b, n_trees, dtype=torch.long, device=x.device)
        for _ in range(self.n_rounds):
            flat = node + offsets
            value = x.gather(1, feature[flat])
            node = torch.where(value <= threshold[flat], left[flat], right[flat])
        leaf = self.value.flatten()[node + offsets]  # (B, T)
        scores = torch.zeros(b, self.n_classes, dtype=torch.float64, device=x.device)
        return scores.index_add_(1, self.tree_class, leaf)


def _flatten_tree(root: dict) -> dict[str, Any]:
    """One tree of ``Booster.dump_model()`` as flat node tables (depth-first numbering)."""
    tables: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "value")}
    depth = 0
    stack: list[tuple[dict, int, int | None, str]] = [(root, 0, None, "")]
    while stack:
        node, level, parent, side = stack.pop()
        i = len(tables["value"])
        for table in tables.values():
            table.append(0)
        if parent is not None:
            tables[side][parent] = i
        if "split_index" not in node:  # a leaf points to itself
            tables["left"][i] = tables["right"][i] = i
            tables["value"][i] = float(node.get("leaf_value", 0.0))
            depth = max(depth, level)
            continue
        if node.get("decision_type", "<=") != "<=" or node.get("missing_type", "None") != "None":
            raise ValueError(
                f"unsupported LightGBM split (decision {node.get('decision_type')}, missing "
                f"values {node.get('missing_type')}): the features must be finite and numerical"
            )
        tables["feature"][i] = int(node["split_feature"])
        tables["threshold"][i] = float(node["threshold"])
        stack.append((node["right_child"], level + 1, i, "right"))
        stack.append((node["left_child"], level + 1, i, "left"))
    dtypes = {"threshold": np.float64, "value": np.float64}
    tree: dict[str, Any] = {k: np.array(v, dtypes.get(k, np.int64)) for k, v in tables.items()}
    tree["depth"] = depth
    return tree


def lightgbm_trees(booster: Any) -> tuple[list[dict[str, Any]], list[int]]:
    """A LightGBM multiclass booster's trees as flat node tables, and each tree's class."""
    model = booster.dump_model()
    n_classes = int(model["num_class"])
    trees = [_flatten_tree(info["tree_structure"]) for info in model["tree_info"]]
    classes = [int(info["tree_index"]) % n_classes for info in model["tree_info"]]
    return trees, classes


def soft_label_rows(
    features: np.ndarray, targets: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row once per class with a positive vote share: (features, class, weight, source row).

    The weighted multiclass log-loss on these rows is sum_i w_i * sum_k p_ik * -log q_ik, the
    cross-entropy to the vote distributions.
    """
    row, cls = np.nonzero(targets > 0)
    return features[row], cls, weights[row] * targets[row, cls], row


class FeatureGBM(OnePassNet):
    """``EEGFeatures`` + ``TreeEnsemble``: the feature baseline as a member network.

    Fitted once by ``fit`` (``hms.train`` calls it instead of a gradient loop); the LightGBM
    settings are the keyword arguments. ``fit`` uses each training sample's windows (at most
    ``max_windows``, evenly spaced; each sample weighs 1 in all), and their left/right mirror
    images when ``flip_augment``. The number of boosting rounds is chosen by early stopping on
    ``valid_share`` of the training patients, then the model is refitted on all of them.
    """

    inputs = ("eeg",)
    continuous = False  # trees

    def __init__(
        self,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_data_in_leaf: int = 40,
        feature_fraction: float = 0.5,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        max_rounds: int = 2000,
        early_stopping_rounds: int = 100,
        valid_share: float = 0.2,
        max_windows: int = 8,
        flip_augment: bool = True,
        seed: int = 0,
        num_threads: int = 0,
        vote_weight: float | None = None,
        montage: str = DEFAULT_MONTAGE,
    ) -> None:
        super().__init__(montage)
        self.params = {
            "objective": "multiclass",
            "num_class": N_CLASSES,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": min_data_in_leaf,
            "feature_fraction": feature_fraction,
            "bagging_fraction": bagging_fraction,
            "bagging_freq": 1 if bagging_fraction < 1 else 0,
            "lambda_l2": lambda_l2,
            "seed": seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": num_threads,
            "verbose": -1,
        }
        self.max_rounds, self.early_stopping_rounds = max_rounds, early_stopping_rounds
        self.valid_share, self.max_windows = valid_share, max_windows
        self.flip_augment, self.seed = flip_augment, seed
        self.vote_weight = vote_weight
        self.features = EEGFeatures(montage=self.montage)
        self.trees = TreeEnsemble(N_CLASSES)

    def tree_feature_counts(self) -> dict[str, int]:
        return {"trees": self.features.n_features}

    def encode(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.features(batch["eeg"])

    def body(self, features: Tensor) -> Tensor:
        return self.trees(features).float()

    # ------------------------------------------------------------------ fitting

    @torch.no_grad()
    def collect(self, batches: Iterable[Mapping[str, Tensor]]) -> dict[str, np.ndarray]:
        """Features of every window the batches hold (and of their mirror images), with each
        window's sample index and target."""
        feats, index, target, votes = [], [], [], []
        device = self.features.band_masks.device
        for batch in batches:
            views = [batch, flip_batch(batch, self.montage)] if self.flip_augment else [batch]
            for view in views:
                feats.append(self.features(view["eeg"].to(device)).cpu().numpy())
                index.append(batch["index"].numpy())
                target.append(batch["target"].numpy())
                votes.append(batch["n_votes"].numpy())
        if not feats:
            raise ValueError("no training windows to fit the feature model on")
        return {
            "features": np.concatenate(feats).astype(np.float32),
            "index": np.concatenate(index).astype(np.int64),
            "target": np.concatenate(target).astype(np.float64),
            "n_votes": np.concatenate(votes).astype(np.float64),
        }

    def fit(self, data: dict[str, np.ndarray], groups: Mapping[int, Any]) -> dict[str, Any]:
        """Fit on ``collect``'s output; ``groups`` maps a sample index to its patient (the
        early-stopping split keeps patients apart). Returns what was chosen."""
        import lightgbm as lgb  # only where a baseline is fitted: loading and predicting need none

        x, index, target = data["features"], data["index"], data["target"]
        target = target / target.sum(axis=1, keepdims=True)
        _, inverse, counts = np.unique(index, return_inverse=True, return_counts=True)
        weight = 1.0 / counts[inverse]  # every sample weighs 1, whatever its number of windows
        by_votes = vote_weights(data["n_votes"], self.vote_weight) if "n_votes" in data else None
        if by_votes is not None:  # as HMSModule's vote_weight
            weight = weight * by_votes

        patients = np.array([groups[int(i)] for i in index])
        unique = np.unique(patients)
        rng = np.random.default_rng(self.seed)
        n_valid = round(self.valid_share * len(unique))
        rounds = self.max_rounds
        chosen: dict[str, Any] = {"n_windows": len(x), "n_samples": len(counts)}
        if 0 < n_valid < len(unique):
            valid = np.isin(patients, rng.choice(unique, n_valid, replace=False))
            sets = []
            for part in (~valid, valid):
                fx, fy, fw, _ = soft_label_rows(x[part], target[part], weight[part])
                sets.append(lgb.Dataset(fx, fy, weight=fw, free_raw_data=True))
            sets[1].reference = sets[0]
            booster = lgb.train(
                self.params,
                sets[0],
                num_boost_round=self.max_rounds,
                valid_sets=[sets[1]],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
            rounds = max(int(booster.best_iteration), 1)
            chosen["valid_logloss"] = float(booster.best_score["valid_0"]["multi_logloss"])
        fx, fy, fw, _ = soft_label_rows(x, target, weight)
        booster = lgb.train(self.params, lgb.Dataset(fx, fy, weight=fw), num_boost_round=rounds)
        trees, classes = lightgbm_trees(booster)
        self.trees.set_trees(trees, classes)
        self.booster = booster  # kept for inspection (feature importance); not saved
        chosen["rounds"] = rounds
        return chosen
