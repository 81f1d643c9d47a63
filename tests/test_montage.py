"""The montage registry (hms.data.montage): every registered montage is checked the same way, so a
new montage is covered by its registry entry alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hms.constants import CHAIN_NAMES, CHANNEL_INDEX, EEG_CHANNELS, MIRROR, SCALP_CHANNELS
from hms.data.io import read_eeg
from hms.data.montage import AVERAGE, MONTAGES, Montage, get_montage
from hms.data.preprocess import WindowSettings, window_to_bipolar
from hms.models.features import EEGFeatures
from hms.transforms import EEGSpectrogram, flip_batch

ALL = sorted(MONTAGES)


def mirrored(x: np.ndarray) -> np.ndarray:
    """Referential (time, 20) with each electrode replaced by its mirror image."""
    return x[:, [CHANNEL_INDEX[MIRROR[name]] for name in EEG_CHANNELS]]


@pytest.mark.parametrize("name", ALL)
def test_flip_index_mirrors_the_derivations(name: str, kaggle_dir) -> None:
    montage = get_montage(name)
    x = read_eeg(kaggle_dir / "test_eegs" / "3911565283.parquet")
    flip = np.array(montage.flip_index)
    np.testing.assert_allclose(
        montage.apply(mirrored(x), clip_uv=None),
        montage.apply(x, clip_uv=None)[:, flip],
        rtol=0,
        atol=1e-4,
    )
    assert np.array_equal(flip[flip], np.arange(montage.n_channels))  # an involution
    assert sorted(flip.tolist()) == list(range(montage.n_channels))  # a permutation


@pytest.mark.parametrize("name", ALL)
def test_chains_are_the_lateral_chains_and_mirror_each_other(name: str) -> None:
    montage = get_montage(name)
    index = montage.chain_index
    assert len(index) == len(CHAIN_NAMES) and len({len(c) for c in index}) == 1
    flip = montage.flip_index
    chain = dict(zip(CHAIN_NAMES, index, strict=True))
    for left, right in (("LL", "RL"), ("LP", "RP")):
        assert [flip[c] for c in chain[left]] == chain[right]
    for c in montage.midline:
        assert flip[c] == c
    assert set(montage.electrodes) <= set(SCALP_CHANNELS)


@pytest.mark.parametrize("name", ALL)
def test_window_to_model_input_and_spectrogram_flip(name: str, kaggle_dir) -> None:
    """A window in any montage becomes model input of its channel count, and the EEG
    spectrogram of its mirror image is the mirror of its spectrogram (with the midline map
    where the montage has one)."""
    montage = get_montage(name)
    x = read_eeg(kaggle_dir / "test_eegs" / "3911565283.parquet")
    eeg = window_to_bipolar(x, WindowSettings(montage=name))
    assert eeg.shape == (montage.n_channels, 10_000) and np.isfinite(eeg).all()
    batch = {"eeg": torch.from_numpy(eeg)[None]}
    spec = EEGSpectrogram(
        montage=name, midline=bool(montage.midline), n_fft=256, n_mels=16, hop_length=156
    )
    flipped = flip_batch(batch, name)["eeg"]
    torch.testing.assert_close(spec(flipped), spec.mirror(spec(batch["eeg"])))
    features = EEGFeatures(montage=name)(batch["eeg"])
    assert features.shape == (1, EEGFeatures().n_features)
    assert torch.isfinite(features).all()


def test_average_reference_sums_to_zero(kaggle_dir) -> None:
    x = read_eeg(kaggle_dir / "test_eegs" / "3911565283.parquet")
    y = get_montage("average").apply(x, clip_uv=None)
    assert y.shape == (len(x), 19)
    np.testing.assert_allclose(y.sum(axis=1), 0.0, atol=1e-2)
    np.testing.assert_allclose(
        y[:, 0], x[:, CHANNEL_INDEX["Fp1"]] - x[:, : len(SCALP_CHANNELS)].mean(axis=1), atol=1e-4
    )


def test_window_settings_read_old_midline_flags_and_refuse_unknown_montages() -> None:
    assert WindowSettings.from_dict({"midline": True}).montage == "double_banana_midline"
    assert WindowSettings.from_dict({"midline": False, "clip_uv": 500}).montage == "double_banana"
    assert WindowSettings.from_dict(None) == WindowSettings()
    with pytest.raises(ValueError, match="unknown montage 'transverse'; known"):
        WindowSettings(montage="transverse")


def test_a_montage_entry_is_checked_when_it_is_made() -> None:
    chains = get_montage("double_banana").chains
    with pytest.raises(ValueError, match="no mirror image"):
        Montage("lopsided", (("Fp1", "F7"),) * 16, chains)
    with pytest.raises(ValueError, match="unknown electrodes"):
        Montage("odd", (("Fp1", "X9"),), {c: (0,) for c in CHAIN_NAMES})
    with pytest.raises(ValueError, match="equally long"):
        Montage("uneven", (("Fp1", AVERAGE), ("Fp2", AVERAGE)), {**chains, "LL": (0, 1)})
    with pytest.raises(ValueError, match="already registered"):
        from hms.data.montage import register_montage

        register_montage(get_montage("average"))
