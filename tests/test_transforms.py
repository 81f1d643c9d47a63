"""Spectrogram images, normalisation and batch augmentations (hms.transforms)."""

from __future__ import annotations

import math

import pytest
import torch

from hms.constants import CHAINS, SAMPLE_RATE, SPEC_REGIONS
from hms.data.montage import bipolar_flip_index, bipolar_pairs, montage_name
from hms.transforms import (
    Augment,
    ChannelDropout,
    EEGSpectrogram,
    GainNoise,
    HemisphereFlip,
    KaggleSpectrogramImage,
    Mixup,
    Normalize,
    SpecMasking,
    TimeShift,
    arrange,
    flip_batch,
    mel_filterbank,
    mirror_index,
    unarrange,
)

T = 10_000


def chain_channels(chain: str, midline: bool = False) -> list[int]:
    pairs = bipolar_pairs(midline)
    return [pairs.index(p) for p in CHAINS[chain]]


def double_banana(n_channels: int) -> str:
    """The double banana's montage name for 16 or 18 channels."""
    return montage_name(n_channels == 18)


def noise_eeg(b: int = 2, c: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 20 * torch.randn(b, c, T, generator=g)


def random_spec(b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 300, 400, generator=g) * 100


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", ["stack", "tile", "channels"])
@pytest.mark.parametrize("n_maps", [4, 5])
def test_arrange_unarrange_round_trip(layout: str, n_maps: int) -> None:
    maps = torch.randn(3, n_maps, 8, 12)
    image = arrange(maps, layout)
    rows = math.ceil(n_maps / 2)
    expected = {
        "stack": (3, 1, n_maps * 8, 12),
        "tile": (3, 1, rows * 8, 24),
        "channels": (3, n_maps, 8, 12),
    }[layout]
    assert image.shape == expected
    torch.testing.assert_close(unarrange(image, layout, n_maps), maps)


def test_tile_puts_maps_row_by_row() -> None:
    maps = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 3)
    image = arrange(maps, "tile")[0, 0]
    assert image[0, 0] == 0 and image[0, 3] == 1 and image[2, 0] == 2 and image[2, 3] == 3


# --------------------------------------------------------------------------- EEG spectrogram


@pytest.mark.parametrize("layout", ["stack", "tile", "channels"])
@pytest.mark.parametrize(("n_channels", "midline"), [(16, False), (18, False), (18, True)])
def test_eeg_spectrogram_shapes(layout: str, n_channels: int, midline: bool) -> None:
    spec = EEGSpectrogram(layout=layout, midline=midline, montage=double_banana(n_channels))
    image = spec(noise_eeg(2, n_channels))
    m = 5 if midline else 4
    expected = {
        "stack": (2, 1, m * 128, 256),
        "tile": (2, 1, math.ceil(m / 2) * 128, 512),
        "channels": (2, m, 128, 256),
    }[layout]
    assert image.shape == expected
    assert torch.isfinite(image).all()


def test_eeg_spectrogram_rejects_bad_channel_counts() -> None:
    with pytest.raises(ValueError, match="16 channels of montage 'double_banana'"):
        EEGSpectrogram()(torch.zeros(1, 20, T))
    with pytest.raises(ValueError, match="18 channels of montage 'double_banana_midline'"):
        EEGSpectrogram(midline=True)(torch.zeros(1, 16, T))
    with pytest.raises(ValueError, match="midline chain"):
        EEGSpectrogram(midline=True, montage="double_banana")


def test_mel_filterbank_is_the_seeds() -> None:
    """The filterbank of torchaudio.functional.melscale_fbanks(129, 0, 20, 16, 200) (HTK, no
    norm), which the seed's spectrograms used: its peak bins and band sums, read off torchaudio
    2.11.0 (the functions agreed to the last bit there, also for 513 bins and 128 bands)."""
    fb = mel_filterbank(129, 0.0, 20.0, 16, 200)
    assert fb.argmax(dim=0).tolist() == [1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 20, 21, 23, 24]
    sums = [
        1.327631, 1.640362, 1.346981, 1.634413, 1.359643, 1.635112, 1.36559, 1.64234,
        1.364923, 1.656247, 1.357576, 1.67666, 1.363359, 1.664209, 1.391567, 1.639564,
    ]  # fmt: skip
    torch.testing.assert_close(fb.sum(dim=0), torch.tensor(sums), rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the seed's: 1024-point FFT of 128-sample windows, hop 39, 128 mel bands
        {"n_fft": 256, "n_mels": 16, "hop_length": 156},  # the demo's
        {"kind": "stft", "n_fft": 256, "hop_length": 100, "win_length": 200},
        {"n_fft": 128, "win_length": None, "n_mels": 16, "hop_length": 64},
    ],
)
def test_power_is_the_stft_power(settings: dict) -> None:
    """The strided DFT convolution gives torch.stft's power (centred frames, reflected ends,
    periodic Hann window in the middle of the n_fft points), through the filterbank for mel."""
    spec = EEGSpectrogram(**settings)
    x = noise_eeg(2, 16)
    n_fft, hop = spec.n_fft, spec.hop_length
    win = settings.get("win_length", 128) or n_fft
    stft = torch.stft(
        x.reshape(-1, T).double(), n_fft, hop, win, torch.hann_window(win, dtype=torch.float64),
        center=True, pad_mode="reflect", return_complex=True,
    )  # fmt: skip
    power = stft.abs().square()[..., : T // hop]
    if spec.kind == "mel":
        fb = mel_filterbank(n_fft // 2 + 1, 0.0, 20.0, settings.get("n_mels", 128), SAMPLE_RATE)
        expected = torch.matmul(power.transpose(-1, -2), fb.double()).transpose(-1, -2)
    else:
        keep = (torch.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE) <= 20.0).nonzero().flatten()
        expected = power[:, keep]
    got = spec.power(x).reshape(expected.shape).double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


def test_a_crop_is_the_central_frames_of_the_whole_window() -> None:
    """``crop_s`` computes only the frames centred on the central seconds: the same values as
    those frames of the whole window's spectrogram (no dB floor, which depends on the span)."""
    settings = {"n_fft": 256, "n_mels": 16, "hop_length": 60, "top_db": None}
    x = noise_eeg(2)
    crop = EEGSpectrogram(**settings, crop_s=20).maps(x)  # starts at 15 s = frame 50
    whole = EEGSpectrogram(**settings).maps(x)
    assert crop.shape[-1] == 20 * SAMPLE_RATE // 60
    torch.testing.assert_close(crop, whole[..., 50 : 50 + crop.shape[-1]], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="less than one frame"):
        EEGSpectrogram(**settings, crop_s=0.1)


def test_checkpoints_of_the_torchaudio_spectrogram_load() -> None:
    """State dicts written when torchaudio computed the spectrogram hold its window and
    filterbank buffers; they load (the settings define both) and change nothing."""
    spec = EEGSpectrogram(n_fft=256, n_mels=16, hop_length=156)
    state = {
        "spectrogram.spectrogram.window": torch.hann_window(128),
        "spectrogram.mel_scale.fb": mel_filterbank(129, 0.0, 20.0, 16, SAMPLE_RATE),
    }
    before = spec(noise_eeg(1))
    spec.load_state_dict(state, strict=True)
    torch.testing.assert_close(spec(noise_eeg(1)), before)


def _band_frequencies(spec: EEGSpectrogram) -> torch.Tensor:
    """Centre frequency (Hz) of each row of the maps."""
    if spec.kind == "mel":
        return spec.bin_hz[spec.mel_fb.argmax(dim=0)]  # each band's peak bin
    return spec.bin_hz


@pytest.mark.parametrize("kind", ["mel", "stft"])
@pytest.mark.parametrize("n_channels", [16, 18])
def test_sine_in_ll_shows_at_7hz_in_ll_only(kind: str, n_channels: int) -> None:
    eeg = noise_eeg(1, n_channels) * 0.01
    t = torch.arange(T) / SAMPLE_RATE
    eeg[0, chain_channels("LL")] += 50 * torch.sin(2 * math.pi * 7.0 * t)
    spec = EEGSpectrogram(kind=kind, layout="channels", montage=double_banana(n_channels))
    maps = spec.maps(eeg)[0]  # (4, F, W): LL, LP, RP, RL
    profile = maps.mean(dim=-1)  # mean log power per frequency row
    freqs = _band_frequencies(spec)
    assert abs(float(freqs[profile[0].argmax()]) - 7.0) < 0.5
    row = int(torch.argmin((freqs - 7.0).abs()))
    ll, rl = spec.map_names.index("LL"), spec.map_names.index("RL")
    assert profile[ll, row] - profile[rl, row] > 30  # dB


@pytest.mark.parametrize("layout", ["stack", "tile", "channels"])
@pytest.mark.parametrize(("n_channels", "midline"), [(16, False), (18, True)])
def test_eeg_image_of_flipped_batch_is_mirrored_image(
    layout: str, n_channels: int, midline: bool
) -> None:
    montage = double_banana(n_channels)
    spec = EEGSpectrogram(layout=layout, midline=midline, n_mels=32, hop_length=156)
    eeg = noise_eeg(2, n_channels)
    eeg[:, chain_channels("LP")] *= 3  # make the hemispheres differ
    flipped = flip_batch({"eeg": eeg}, montage)["eeg"]
    torch.testing.assert_close(spec(flipped), spec.mirror(spec(eeg)))
    assert not torch.allclose(spec(flipped), spec(eeg))


# --------------------------------------------------------------------------- Kaggle spectrogram


def test_kaggle_image_region_order_and_orientation() -> None:
    spec = torch.zeros(2, 300, 400)
    for i in range(len(SPEC_REGIONS)):  # file order LL, RL, LP, RP
        spec[:, :, 100 * i : 100 * (i + 1)] = float(i + 1)
    spec[0, 7, 100 * SPEC_REGIONS.index("LP") + 3] = 50.0  # LP, row 7, 4th bin
    image = KaggleSpectrogramImage(layout="channels")
    maps = image.maps(spec)
    assert maps.shape == (2, 4, 100, 300)
    assert image.map_names == ("LL", "LP", "RP", "RL")
    expected = [SPEC_REGIONS.index(r) + 1.0 for r in image.map_names]
    torch.testing.assert_close(maps[1].mean(dim=(1, 2)), torch.log(torch.tensor(expected)))
    assert maps[0, 1, 3, 7] == pytest.approx(math.log(50.0))


def test_kaggle_image_clamps_zeros_and_crops() -> None:
    image = KaggleSpectrogramImage(layout="stack", crop_rows=100)
    out = image(torch.zeros(1, 300, 400))
    assert out.shape == (1, 1, 400, 100)
    torch.testing.assert_close(out, torch.full_like(out, -4.0))


@pytest.mark.parametrize("layout", ["stack", "tile", "channels"])
def test_kaggle_image_of_flipped_batch_is_mirrored_image(layout: str) -> None:
    image = KaggleSpectrogramImage(layout=layout)
    spec = random_spec()
    flipped = flip_batch({"spec": spec})["spec"]
    torch.testing.assert_close(image(flipped), image.mirror(image(spec)))


# --------------------------------------------------------------------------- flip


@pytest.mark.parametrize("n_channels", [16, 18])
def test_flip_twice_is_identity(n_channels: int) -> None:
    batch = {"eeg": noise_eeg(3, n_channels), "spec": random_spec(3), "target": torch.rand(3, 6)}
    flip = HemisphereFlip(p=1.0, montage=double_banana(n_channels)).train()
    twice = flip(flip(batch))
    for key, value in batch.items():
        torch.testing.assert_close(twice[key], value)
    assert not torch.equal(flip(batch)["eeg"], batch["eeg"])


@pytest.mark.parametrize("n_channels", [16, 18])
def test_flip_moves_left_signal_to_the_right(n_channels: int) -> None:
    eeg = torch.zeros(1, n_channels, T)
    left = chain_channels("LL") + chain_channels("LP")
    right = chain_channels("RL") + chain_channels("RP")
    eeg[:, left] = noise_eeg(1, len(left))
    out = flip_batch({"eeg": eeg}, double_banana(n_channels))["eeg"]
    assert out[:, left].abs().sum() == 0
    flip = bipolar_flip_index(n_channels == 18)
    for ch in left:
        torch.testing.assert_close(out[:, flip[ch]], eeg[:, ch])
    assert set(flip[left].tolist()) == set(right)


def test_flip_swaps_kaggle_regions() -> None:
    spec = torch.zeros(1, 300, 400)
    for i in range(4):
        spec[..., 100 * i : 100 * (i + 1)] = i + 1.0  # LL=1, RL=2, LP=3, RP=4
    out = flip_batch({"spec": spec})["spec"]
    block_means = out[0].unflatten(-1, (4, 100)).mean(dim=(0, 2))
    torch.testing.assert_close(block_means, torch.tensor([2.0, 1.0, 4.0, 3.0]))


def test_flip_mask_flips_only_selected_samples() -> None:
    batch = {"eeg": noise_eeg(4), "spec": random_spec(4)}
    mask = torch.tensor([True, False, True, False])
    out = flip_batch(batch, mask=mask)
    full = flip_batch(batch)
    for key in ("eeg", "spec"):
        torch.testing.assert_close(out[key][mask], full[key][mask])
        torch.testing.assert_close(out[key][~mask], batch[key][~mask])


def test_mirror_index() -> None:
    assert mirror_index(["LL", "LP", "RP", "RL", "MID"]) == [3, 2, 1, 0, 4]
    assert mirror_index(list(SPEC_REGIONS)) == [1, 0, 3, 2]
    with pytest.raises(ValueError, match="no mirror"):
        mirror_index(["LL", "LP"])


# --------------------------------------------------------------------------- normalisation


def test_normalize_instance() -> None:
    maps = 5 + 3 * torch.randn(2, 4, 16, 16)
    out = Normalize("instance")(maps)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    assert torch.equal(Normalize("none")(maps), maps)


def test_normalize_dataset_mode(tmp_path) -> None:
    norm = Normalize("dataset", num_channels=4)
    maps = torch.randn(6, 4, 8, 8) * torch.tensor([1.0, 2, 3, 4]).view(1, 4, 1, 1) + 10
    with pytest.raises(RuntimeError, match="no statistics"):
        norm(maps)
    norm.fit([maps[:3], maps[3:]])
    out = norm(maps)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.std(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4, rtol=0
    )
    state = norm.state_dict()
    assert {"mean", "std", "fitted"} <= set(state)
    torch.save(state, tmp_path / "norm.pt")
    fresh = Normalize("dataset", num_channels=4)
    fresh.load_state_dict(torch.load(tmp_path / "norm.pt"))
    torch.testing.assert_close(fresh(maps), out)


def test_normalize_set_stats_broadcasts_scalars() -> None:
    norm = Normalize("dataset", num_channels=3).set_stats(1.0, 2.0)
    torch.testing.assert_close(norm(torch.full((1, 3, 2, 2), 5.0)), torch.full((1, 3, 2, 2), 2.0))
    with pytest.raises(ValueError, match="positive"):
        norm.set_stats(0.0, 0.0)


# --------------------------------------------------------------------------- augmentations


def test_time_shift_moves_both_views_together() -> None:
    torch.manual_seed(0)
    eeg = torch.arange(T, dtype=torch.float32).expand(3, 16, T).clone()
    spec = torch.arange(300, dtype=torch.float32).view(1, 300, 1).expand(3, 300, 400).clone()
    shift = TimeShift(max_shift_s=10.0, mode="roll").train()
    out = shift({"eeg": eeg, "spec": spec})
    for b in range(3):
        s = int(-out["eeg"][b, 0, 0]) % T  # roll by s puts sample T - s first
        s = s if s <= T // 2 else s - T
        assert abs(s) <= 10 * SAMPLE_RATE
        torch.testing.assert_close(out["eeg"][b], torch.roll(eeg[b], s, dims=-1))
        rows = round(s / (2 * SAMPLE_RATE))
        torch.testing.assert_close(out["spec"][b], torch.roll(spec[b], rows, dims=0))


def test_time_shift_zero_mode_fills_zeros() -> None:
    torch.manual_seed(1)
    eeg = torch.ones(4, 16, T)
    out = TimeShift(max_shift_s=5.0, mode="zero").train()({"eeg": eeg})["eeg"]
    zeros = (out == 0).sum(dim=-1)[:, 0]
    assert (zeros <= 5 * SAMPLE_RATE).all() and zeros.sum() > 0
    assert ((out == 0) | (out == 1)).all()


def test_mixup_mixes_inputs_and_targets_alike() -> None:
    torch.manual_seed(0)
    b = 6
    values = torch.arange(1.0, b + 1)
    batch = {
        "eeg": values.view(b, 1, 1).expand(b, 16, 100).clone(),
        "spec": values.view(b, 1, 1).expand(b, 300, 400).clone(),
        "target": torch.eye(b)[:, :6],
        "n_votes": values.clone(),
    }
    out = Mixup(alpha=1.0, p=1.0).train()(batch)
    expected = out["target"] @ values  # each mixed sample's value follows its mixed target
    torch.testing.assert_close(out["eeg"][:, 0, 0], expected)
    torch.testing.assert_close(out["spec"][:, 0, 0], expected)
    torch.testing.assert_close(out["n_votes"], expected)
    torch.testing.assert_close(out["target"].sum(dim=1), torch.ones(b))
    assert not torch.equal(out["target"], batch["target"])


def test_channel_dropout_and_gain() -> None:
    batch = {"eeg": noise_eeg(2), "spec": random_spec(2)}
    assert ChannelDropout(p=1.0).train()(batch)["eeg"].abs().sum() == 0
    torch.testing.assert_close(ChannelDropout(p=0.0).train()(batch)["eeg"], batch["eeg"])
    out = GainNoise(gain_range=(2.0, 2.0), noise_std=0.0).train()(batch)
    torch.testing.assert_close(out["eeg"], 2 * batch["eeg"])
    torch.testing.assert_close(out["spec"], 4 * batch["spec"])
    noisy = GainNoise(gain_range=(1.0, 1.0), noise_std=1.0).train()(batch)["eeg"]
    assert 0.9 < float((noisy - batch["eeg"]).std()) < 1.1


def test_spec_masking_is_shared_across_maps_and_off_in_eval() -> None:
    torch.manual_seed(0)
    maps = torch.ones(4, 3, 32, 64)
    masking = SpecMasking(time_mask=10, freq_mask=5, n_masks=2).train()
    out = masking(maps)
    assert (out == 0).any()
    torch.testing.assert_close(out[:, 0], out[:, 2])  # same bands in every map
    masking.eval()
    assert torch.equal(masking(maps), maps)


def test_augment_composes_and_is_identity_in_eval() -> None:
    torch.manual_seed(0)
    batch = {
        "eeg": noise_eeg(4),
        "spec": random_spec(4),
        "target": torch.softmax(torch.randn(4, 6), -1),
        "n_votes": torch.full((4,), 3.0),
        "index": torch.arange(4),
    }
    saved = {k: v.clone() for k, v in batch.items()}
    augment = Augment(
        flip_p=0.5,
        shift_s=2.0,
        gain_range=[0.8, 1.2],
        noise_std=1.0,
        channel_dropout_p=0.1,
        mixup_alpha=0.4,
        mixup_p=1.0,
    )
    assert len(augment.steps) == 5
    out = augment.train()(batch)
    assert set(out) == set(batch)
    for key, value in out.items():
        assert value.shape == batch[key].shape and torch.isfinite(value.float()).all()
        torch.testing.assert_close(batch[key], saved[key])  # the input is not modified
    assert not torch.equal(out["eeg"], batch["eeg"])
    evaluated = augment.eval()(batch)
    for key, value in evaluated.items():
        assert torch.equal(value, batch[key])
    assert len(Augment().steps) == 0
