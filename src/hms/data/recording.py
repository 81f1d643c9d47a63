"""Clinical recordings (EDF, EDF+, BDF and anything MNE reads) as HMS referential EEG, streamed.

``EEGRecording`` opens a file with MNE without loading it, maps its channel names onto the HMS
10-20 set (``canonical_channel``), and ``read(start, stop)`` returns any span as float32
(time, 20) microvolts at 200 Hz in ``EEG_CHANNELS`` order, the layout of an HMS EEG parquet file.
Only the span asked for (plus a second of context for the resampling filter) is read from disk, so
a 24-hour file costs the memory of the span, not of the file.

Channel names: case-insensitive; a leading ``EEG`` and a reference suffix (``-REF``, ``-LE``,
``-A1``, ``-AVG``, ...) are stripped; the modern names T7, T8, P7, P8 are the HMS T3, T4, T5, T6;
any channel whose name holds ``ECG`` or ``EKG`` is the EKG lead. A name that is a derivation
between two electrodes (``Fp1-F7``) is not a referential channel and is ignored.

Missing electrodes: those the montages need (the members' ``hms.data.montage`` entries) are an
error that lists them, unless
``missing="interpolate"``, which fills them by MNE's spherical-spline interpolation from the
others (the recording's ``interpolated`` lists them, and the outputs flag it). Electrodes the
montage does not use (Fz, Cz, Pz for the 16-channel double banana) are zero when absent.

Only the scalp electrodes are read, at their own rate (MNE's ``include``, chosen from the header
before any sample is read): an ECG, SpO2, photic or trigger signal beside them, at whatever
rate, changes neither the samples, nor the memory, nor the rate check. The EKG column is
therefore zero: no montage reads it. Scalp channels of different rates are refused in one line.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from hms.constants import CHANNEL_INDEX, EEG_CHANNELS, SAMPLE_RATE, SCALP_CHANNELS
from hms.data.montage import DEFAULT_MONTAGE, get_montage
from hms.errors import HMSDataError

ALIASES: dict[str, str] = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
REFERENCE_SUFFIXES = frozenset(
    {"REF", "LE", "RE", "A1", "A2", "M1", "M2", "A1A2", "M1M2", "AV", "AVG", "AR", "CAR",
     "LINKED", "REFERENCE", "REF1", "ML", "MR"}
)  # fmt: skip
_CANONICAL = {name.upper(): name for name in EEG_CHANNELS}
_PREFIX = re.compile(r"^(EEG|POL)[\s_:.-]*")
_SPLIT = re.compile(r"[\s_:./-]+")
MISSING_MODES = ("error", "interpolate")
_RESAMPLE_PAD_S = 1.0  # context read on each side of a span for the resampling filter
MIN_RATE_HZ, MAX_RATE_HZ = 50.0, 100_000.0  # the 0.5-20 Hz band needs 40 Hz at least


def _few(names: Sequence[str], n: int = 30) -> str:
    """A recording's channel names for a message: the first ``n`` (a high-density recording has
    hundreds)."""
    shown = str(list(names[:n]))
    return shown if len(names) <= n else f"{shown[:-1]}, ...] ({len(names)} channels)"


def canonical_channel(name: str) -> str | None:
    """The HMS name of a recording's channel (``"EEG Fp1-REF"`` -> ``"Fp1"``), or None."""
    s = str(name).strip().upper()
    if "ECG" in s or "EKG" in s:
        return "EKG"
    s = _PREFIX.sub("", s)
    tokens = [t for t in _SPLIT.split(s) if t]
    if not tokens:
        return None
    head, rest = tokens[0], tokens[1:]
    if any(t not in REFERENCE_SUFFIXES for t in rest):  # a derivation (Fp1-F7) or unknown
        return None
    head = ALIASES.get(head, head)
    return _CANONICAL.get(head)


def map_channels(names: list[str], path: str | Path | None = None) -> dict[str, int]:
    """HMS channel -> index among ``names``. Two channels mapping to one name is an error."""
    found: dict[str, int] = {}
    for i, name in enumerate(names):
        hms = canonical_channel(name)
        if hms is None:
            continue
        if hms in found:
            if hms == "EKG":  # several ECG leads: the first one is enough
                continue
            raise HMSDataError(
                path,
                f"channels {names[found[hms]]!r} and {name!r} are both {hms}; keep one "
                "(e.g. with MNE's raw.drop_channels) and try again",
            )
        found[hms] = i
    return found


def montage_electrodes(montages: Sequence[str] = (DEFAULT_MONTAGE,)) -> tuple[str, ...]:
    """The electrodes the montages read together (16 for the double banana, 19 with its
    midline chain or for the average reference)."""
    used = {e for name in montages for e in get_montage(name).electrodes}
    return tuple(c for c in SCALP_CHANNELS if c in used)


def _montage_positions():
    import mne

    names = mne.channels.get_builtin_montages()
    kind = "colin27_1020" if "colin27_1020" in names else "standard_1020"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return mne.channels.make_standard_montage(kind)


def interpolation_matrix(present: list[str], missing: list[str]) -> np.ndarray:
    """(len(missing), len(present)) weights of MNE's spherical-spline interpolation.

    Interpolation is linear in the data, so it is computed once by interpolating unit impulses
    (one per present electrode) through MNE's public ``interpolate_bads``, then applied to every
    span with one matrix product.
    """
    import mne

    names = present + missing
    info = mne.create_info(names, SAMPLE_RATE, "eeg")
    impulses = np.zeros((len(names), len(present)))
    impulses[np.arange(len(present)), np.arange(len(present))] = 1.0
    raw = mne.io.RawArray(impulses, info, verbose="error")
    raw.set_montage(_montage_positions(), verbose="error")
    raw.info["bads"] = list(missing)
    raw.interpolate_bads(reset_bads=True, verbose="error")
    return raw.get_data(picks=missing)


def _signal_rates(raw) -> dict[str, float] | None:
    """Each signal's own sampling rate where the reader keeps them (EDF, BDF, GDF: samples per
    data record over the record's length, in MNE's reader state), else None."""
    try:
        extras = raw._raw_extras[0]
        n_samps = np.asarray(extras["n_samps"], dtype=float)
        length = float(np.atleast_1d(extras["record_length"])[0])
        names = list(extras["ch_names"])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    if len(names) != len(n_samps) or not length > 0 or set(raw.ch_names) - set(names):
        return None
    return {n: r / length for n, r in zip(names, n_samps, strict=True)}


class EEGRecording:
    """A recording read through MNE, served as HMS referential µV at 200 Hz, span by span."""

    def __init__(
        self,
        path: str | Path,
        montages: Sequence[str] = (DEFAULT_MONTAGE,),
        missing: str = "error",
        unit_scale: float | None = None,
    ) -> None:
        self.path = Path(path)
        if missing not in MISSING_MODES:
            raise ValueError(f"missing must be one of {MISSING_MODES}, got {missing!r}")
        if not self.path.is_file():
            raise HMSDataError(self.path, "recording not found")
        raw = self._open()  # the header: every signal's name
        self.channel_names = list(raw.ch_names)
        found = map_channels(self.channel_names, self.path)
        # Only the scalp electrodes are read, at their own rate: MNE brings every signal it reads
        # to the fastest one's rate, so an ECG at 512 Hz or a trigger at 2,048 Hz beside the EEG
        # would otherwise change the EEG's samples, the memory and the rate check.
        eeg = [self.channel_names[found[c]] for c in SCALP_CHANNELS if c in found]
        rates = _signal_rates(raw)
        damaged = [n for n in eeg if rates is not None and not rates[n] > 0]
        if damaged:
            raise HMSDataError(
                self.path,
                f"{damaged[0]} has {rates[damaged[0]]:g} samples per second: the header's "
                "sample counts are damaged",
            )
        if rates is not None and len({rates[n] for n in eeg}) > 1:
            by_rate = {n: f"{rates[n]:g} Hz" for n in eeg}
            raise HMSDataError(
                self.path,
                f"the EEG channels are sampled at different rates ({by_rate}); hms reads EEG "
                "channels of one rate: resample the file's EEG to one rate first",
            )
        if eeg and len(eeg) < len(self.channel_names):
            raw = self._open(include=eeg)
            found = map_channels(list(raw.ch_names), self.path)
        self.raw = raw
        self.eeg_channels = list(raw.ch_names) if eeg else []
        self.sfreq = float(raw.info["sfreq"])
        needed = montage_electrodes(montages)
        absent = [c for c in needed if c not in found]
        if absent and missing == "error":
            raise HMSDataError(
                self.path,
                f"missing channel(s) {absent} needed by the montage; found {sorted(found)} among "
                f"{_few(self.channel_names)} (missing=interpolate fills them from the others)",
            )
        present_scalp = [c for c in SCALP_CHANNELS if c in found]
        if absent and len(present_scalp) < 4:
            raise HMSDataError(
                self.path, f"only {present_scalp} found: too few electrodes to interpolate {absent}"
            )
        self.mapping = {c: raw.ch_names[i] for c, i in found.items()}
        self.interpolated = absent
        self.zero_filled = [c for c in EEG_CHANNELS if c not in found and c not in absent]
        self._picks = [found[c] for c in EEG_CHANNELS if c in found]
        self._columns = [CHANNEL_INDEX[c] for c in EEG_CHANNELS if c in found]
        if absent:
            self._interp = interpolation_matrix(present_scalp, absent)
            self._interp_from = [self._columns.index(CHANNEL_INDEX[c]) for c in present_scalp]
            self._interp_to = [CHANNEL_INDEX[c] for c in absent]
        if not (math.isfinite(self.sfreq) and MIN_RATE_HZ <= self.sfreq <= MAX_RATE_HZ):
            raise HMSDataError(
                self.path, f"the EEG channels' sampling rate {self.sfreq:g} Hz: an EEG recording "
                f"hms reads is sampled at {MIN_RATE_HZ:g} Hz to {MAX_RATE_HZ:g} Hz (the header "
                "may be damaged)",
            )  # fmt: skip
        ratio = Fraction(SAMPLE_RATE / self.sfreq).limit_denominator(1000)
        if abs(float(ratio) - SAMPLE_RATE / self.sfreq) > 1e-9:
            raise HMSDataError(
                self.path,
                f"the EEG channels' sampling rate {self.sfreq:g} Hz has no small ratio to 200 Hz",
            )
        self.up, self.down = ratio.numerator, ratio.denominator
        # MNE returns volts for EEG and ECG channels; other units need unit_scale (µV per unit).
        self.unit_scale = 1e6 if unit_scale is None else float(unit_scale)
        self.n_raw = int(raw.n_times)
        if self.n_raw < 0:  # MNE's count from a negative number of samples per record
            raise HMSDataError(
                self.path, f"{self.n_raw} samples: the header's sample counts are damaged"
            )
        self.n_samples = self.n_raw * self.up // self.down  # at 200 Hz
        meas = raw.info.get("meas_date")
        self.start_time: dt.datetime | None = meas if isinstance(meas, dt.datetime) else None

    def _open(self, include: Sequence[str] | None = None):
        """The file through MNE, its data left on disk; ``include``: only these signals (the
        readers of EDF, BDF and GDF, the formats whose signals can have rates of their own,
        select them; other formats have one rate and are opened whole)."""
        import mne

        kwargs = {} if include is None else {"include": list(include)}
        try:
            with warnings.catch_warnings():  # numpy's, on a damaged header (a rate of 0 Hz):
                warnings.simplefilter("ignore", RuntimeWarning)  # the checks below say it
                return mne.io.read_raw(self.path, preload=False, verbose="error", **kwargs)
        except TypeError:
            if include is None:
                raise
            return self._open()  # a reader without channel selection: one rate for all
        except Exception as exc:  # MNE raises many types for unreadable files
            raise HMSDataError(
                self.path,
                f"MNE cannot read this recording ({type(exc).__name__}: {str(exc)[:300]})",
            ) from exc

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "sfreq_hz": self.sfreq,
            "duration_s": round(self.duration_s, 3),
            "start_time": None if self.start_time is None else self.start_time.isoformat(),
            "channels": self.mapping,
            "eeg_channels_read": self.eeg_channels,
            "interpolated": self.interpolated,
            "zero_filled": self.zero_filled,
            "unit_scale_to_uv": self.unit_scale,
        }

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        """Raw samples [start, stop) of the mapped channels, (channels, time) in µV."""
        try:
            data = self.raw.get_data(picks=self._picks, start=start, stop=stop, verbose="error")
        except Exception as exc:
            raise HMSDataError(
                self.path, f"cannot read samples {start}..{stop} ({type(exc).__name__}: {exc})"
            ) from exc
        return data * self.unit_scale

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) at 200 Hz: float32 (time, 20) µV in ``EEG_CHANNELS`` order."""
        start, stop = max(0, int(start)), min(self.n_samples, int(stop))
        if stop <= start:
            return np.zeros((0, len(EEG_CHANNELS)), np.float32)
        out = np.zeros((stop - start, len(EEG_CHANNELS)), np.float32)
        with np.errstate(all="ignore"):  # a damaged file's huge values: non-finite samples,
            self._read_into(out, start, stop)  # which the preprocessing fills and reports
        return out

    def _read_into(self, out: np.ndarray, start: int, stop: int) -> None:
        if self.up == self.down:
            data = self._read_raw(start, stop)
        else:
            # Raw spans start on a multiple of `down`, so output sample o0 = r0 * up / down
            # is exact; a second of context each side keeps the filter's edges out of the span.
            pad = int(np.ceil(_RESAMPLE_PAD_S * self.sfreq))
            r0 = max(0, (start * self.down // self.up - pad) // self.down * self.down)
            r1 = min(self.n_raw, -(-stop * self.down // self.up) + pad)
            data = resample_poly(self._read_raw(r0, r1), self.up, self.down, axis=1)
            o0 = r0 * self.up // self.down
            data = data[:, start - o0 : stop - o0]
            if data.shape[1] < stop - start:  # the file's last samples: pad with its edge
                data = np.pad(data, ((0, 0), (0, stop - start - data.shape[1])), mode="edge")
        out[:, self._columns] = data.T
        if self.interpolated:
            out[:, self._interp_to] = out[:, self._columns][:, self._interp_from] @ self._interp.T
