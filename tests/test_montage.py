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
        Montage("lopsided", (("Fp1", "F7"), ("F7", "T3")))
    with pytest.raises(ValueError, match="listed twice"):
        Montage("twice", (("Fz", "Cz"),) * 2)
    with pytest.raises(ValueError, match="an electrode minus itself"):
        Montage("zero", (("Cz", "Cz"),))
    with pytest.raises(ValueError, match="unknown electrodes"):
        Montage("odd", (("Fp1", "X9"),), {c: (0,) for c in CHAIN_NAMES})
    with pytest.raises(ValueError, match="equally long"):
        Montage("uneven", (("Fp1", AVERAGE), ("Fp2", AVERAGE)), {**chains, "LL": (0, 1)})
    with pytest.raises(ValueError, match="already registered"):
        from hms.data.montage import register_montage

        register_montage(get_montage("average"))


# --------------------------------------------------------------------------- any shape


# A transverse montage (left to right across the head, each side written from the temple in, so
# that each derivation's mirror is one of its own): no lateral chains. Registered by the fixture
# below: a montage of another shape is one register_montage call, in any file.
TRANSVERSE = Montage(
    "transverse_test",
    (("F7", "F3"), ("F3", "Fz"), ("F8", "F4"), ("F4", "Fz"), ("T3", "C3"), ("C3", "Cz"),
     ("T4", "C4"), ("C4", "Cz"), ("T5", "P3"), ("P3", "Pz"), ("T6", "P4"), ("P4", "Pz")),
    description="transverse: across the head, no lateral chains (tests)",
)  # fmt: skip
# Bipolar derivations beside derivations against the common average.
MIXED = Montage(
    "mixed_test",
    (("Fp1", "F7"), ("Fp2", "F8"), ("Cz", AVERAGE), ("O1", AVERAGE), ("O2", AVERAGE)),
    description="bipolar and average references side by side (tests)",
)


@pytest.fixture
def registered():
    """TRANSVERSE and MIXED in the registry for one test."""
    from hms.data.montage import register_montage

    for montage in (TRANSVERSE, MIXED):
        register_montage(montage)
    yield
    for montage in (TRANSVERSE, MIXED):
        MONTAGES.pop(montage.name)


@pytest.mark.parametrize("name", [*ALL, TRANSVERSE.name, MIXED.name])
def test_every_derivation_is_its_anode_minus_its_own_reference(name: str, registered) -> None:
    montage = get_montage(name)
    x = np.random.default_rng(0).normal(0, 50, (500, len(EEG_CHANNELS))).astype(np.float32)
    scalp = x[:, [CHANNEL_INDEX[c] for c in SCALP_CHANNELS]].mean(axis=1)
    y = montage.apply(x, clip_uv=None)
    assert y.shape == (500, montage.n_channels)
    for i, (anode, reference) in enumerate(montage.derivations):
        ref = scalp if reference == AVERAGE else x[:, CHANNEL_INDEX[reference]]
        want = x[:, CHANNEL_INDEX[anode]] - ref
        np.testing.assert_allclose(y[:, i], want, rtol=0, atol=1e-4, err_msg=montage.names[i])


def test_a_montage_without_chains_serves_the_raw_signal_members_and_is_refused_by_the_rest(
    registered, kaggle_dir
) -> None:
    """The real Kaggle EEG in a transverse montage: the ResNet1D-GRU reads it (flip included);
    the EEG spectrogram and the qEEG features, which read chains, refuse it in one line."""
    from hms.errors import HMSDataError
    from hms.models.module import probabilities
    from hms.models.resnet1d_gru import ResNet1DGRU
    from hms.models.spec_cnn import SpecCNN

    x = read_eeg(kaggle_dir / "test_eegs" / "3911565283.parquet")
    eeg = window_to_bipolar(x, WindowSettings(montage=TRANSVERSE.name))
    assert eeg.shape == (12, 10_000) and np.isfinite(eeg).all()
    batch = {"eeg": torch.from_numpy(eeg)[None]}
    net = ResNet1DGRU(stem_kernels=[3], stem_channels=4, block_channels=[8, 8], gru_hidden=8,
                      gru_layers=1, montage=TRANSVERSE.name).eval()  # fmt: skip
    assert net.montage_spec.n_channels == 12
    with torch.no_grad():
        p = probabilities(net, batch, tta_flip=True, montage=TRANSVERSE.name)
    assert p.shape == (1, 6) and torch.allclose(p.sum(dim=1), torch.ones(1))
    mirrored_eeg = window_to_bipolar(mirrored(x), WindowSettings(montage=TRANSVERSE.name))
    torch.testing.assert_close(flip_batch(batch, TRANSVERSE.name)["eeg"][0],
                               torch.from_numpy(mirrored_eeg), atol=1e-4, rtol=0)  # fmt: skip
    for build, who in (
        (lambda: SpecCNN(montage=TRANSVERSE.name), "the EEG spectrogram"),
        (lambda: EEGFeatures(montage=TRANSVERSE.name), "the qEEG features"),
    ):
        with pytest.raises(HMSDataError) as info:
            build()
        message = str(info.value)
        assert "\n" not in message and message.startswith(who)
        assert "montage 'transverse_test' has none; use one that has them:" in message
        assert "'double_banana'" in message
