"""The model families (hms.models) and the KL loss, on CPU with small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hms.cli import conf_dir, model_names
from hms.metrics import kl_divergence
from hms.models.base import HMSNet
from hms.models.losses import kl_loss
from hms.models.module import probabilities
from hms.models.optim import build_optimizer
from hms.models.pooling import centre_slice
from hms.models.resnet1d_gru import ResNet1DGRU
from hms.models.spec_cnn import SpecCNN
from hms.torchscript import ProbabilityModel
from hms.training import check_config
from hms.transforms import flip_batch, mirror_index

SMALL_EEG_SPEC = {"n_mels": 32, "hop_length": 156}  # 32 x 64 maps


def make_batch(b: int = 2, n_channels: int = 16, t: int = 10_000, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "eeg": 30 * torch.randn(b, n_channels, t, generator=g),
        "spec": torch.rand(b, 300, 400, generator=g) * 50,
        "target": torch.softmax(2 * torch.randn(b, 6, generator=g), dim=-1),
        "n_votes": torch.full((b,), 3.0),
    }


def assert_trains(model: torch.nn.Module, batch: dict, probe: torch.nn.Parameter) -> None:
    """One forward/backward: (B, 6) finite logits and a gradient at ``probe``."""
    model.train()
    logits = model(batch)
    assert logits.shape == (batch["eeg"].shape[0], 6)
    assert torch.isfinite(logits).all()
    kl_loss(logits, batch["target"]).backward()
    assert probe.grad is not None and probe.grad.abs().sum() > 0


def assert_overfits(model: torch.nn.Module, batch: dict, steps: int, lr: float) -> None:
    """The loss on a tiny fixed batch falls well within a few Adam steps."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = kl_loss(model(batch), batch["target"])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.5 * losses[0], losses


# --------------------------------------------------------------------------- loss


def test_kl_loss_matches_competition_metric() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 6, generator=g, dtype=torch.float64)
    votes = torch.randint(0, 4, (64, 6), generator=g).double()
    votes[:, 0] += 1  # every row has votes; many have zero terms
    target = votes / votes.sum(dim=1, keepdim=True)
    probs = torch.softmax(logits, dim=-1).numpy()
    expected = kl_divergence(votes.numpy(), probs)
    assert float(kl_loss(logits, target)) == pytest.approx(expected, rel=1e-5)
    reference = F.kl_div(F.log_softmax(logits, -1), target, reduction="batchmean")
    assert float(kl_loss(logits, target)) == pytest.approx(float(reference), rel=1e-5)


def test_kl_loss_safe_for_one_hot_targets_and_weighted() -> None:
    logits = torch.randn(4, 6, requires_grad=True)
    target = torch.eye(6)[:4]
    loss = kl_loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    rows = -F.log_softmax(logits, -1).gather(1, torch.arange(4).view(4, 1)).squeeze(1)
    weight = torch.tensor([1.0, 0.0, 0.0, 3.0])
    expected = (rows[0] + 3 * rows[3]) / 4
    torch.testing.assert_close(kl_loss(logits, target, weight), expected)
    assert np.isfinite(float(kl_loss(torch.tensor([[1e4, -1e4, 0, 0, 0, 0.0]]), target[1:2])))


# --------------------------------------------------------------------------- SpecCNN


def test_effnet_b0_default_at_real_size() -> None:
    model = SpecCNN(backbone="efficientnet_b0", views=["eeg"])
    assert model.inputs == ("eeg",)
    batch = make_batch(2)
    assert model.image(batch).shape == (2, 1, 512, 256)
    assert_trains(model, batch, model.backbone.conv_stem.weight)


def test_multispec_default_at_real_size() -> None:
    model = SpecCNN(
        backbone="efficientnet_b0",
        views=["kaggle", "eeg"],
        map_size=[128, 256],
        montage="double_banana_midline",
    )
    assert model.inputs == ("spec", "eeg")
    batch = make_batch(2, n_channels=18)
    assert model.image(batch).shape == (2, 1, 512, 512)
    assert_trains(model, batch, model.backbone.conv_stem.weight)


def test_multispec_b1_channels_layout_with_midline() -> None:
    model = SpecCNN(
        backbone="efficientnet_b1",
        views=["kaggle", "eeg"],
        layout="channels",
        combine="channels",
        map_size=[32, 64],
        eeg_spec={**SMALL_EEG_SPEC, "midline": True},
    )
    batch = make_batch(2, n_channels=18)
    assert model.image(batch).shape == (2, 9, 32, 64)
    assert model.backbone.conv_stem.in_channels == 9
    assert_trains(model, batch, model.backbone.conv_stem.weight)


def test_spec_cnn_overfits_tiny_batch() -> None:
    torch.manual_seed(0)
    model = SpecCNN(
        views=["kaggle", "eeg"],
        map_size=[32, 64],
        eeg_spec=SMALL_EEG_SPEC,
        drop_rate=0.0,
        drop_path_rate=0.0,
    )
    assert_overfits(model, make_batch(4), steps=10, lr=3e-4)


def test_spec_cnn_image_size_in_chans_and_channels_last() -> None:
    model = SpecCNN(
        eeg_spec=SMALL_EEG_SPEC, image_size=[96, 96], in_chans=3, channels_last=True
    ).eval()
    image = model.image(make_batch(2))
    assert image.shape == (2, 3, 96, 96)
    assert image.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(image[:, 0], image[:, 2])
    assert model(make_batch(2)).shape == (2, 6)


def test_spec_cnn_masks_only_in_training() -> None:
    model = SpecCNN(eeg_spec=SMALL_EEG_SPEC, time_mask=16, freq_mask=8, n_masks=2)
    batch = make_batch(2)
    model.eval()
    torch.testing.assert_close(model.image(batch), model.image(batch))
    model.train()
    torch.manual_seed(0)
    assert (model.image(batch) == 0).any()


def test_spec_cnn_maps_of_flipped_batch_are_mirrored() -> None:
    model = SpecCNN(views=["kaggle", "eeg"], map_size=[32, 64], eeg_spec=SMALL_EEG_SPEC).eval()
    batch = make_batch(2)
    maps, flipped = model.maps(batch), model.maps(flip_batch(batch))
    for view in model.views:
        perm = mirror_index(model.spectrograms[view].map_names)
        torch.testing.assert_close(flipped[view], maps[view][:, perm])


def test_spec_cnn_dataset_norm_fits_and_round_trips(tmp_path) -> None:
    kwargs = dict(views=["kaggle", "eeg"], map_size=[32, 64], eeg_spec=SMALL_EEG_SPEC)
    model = SpecCNN(norm="dataset", **kwargs).eval()
    batch = make_batch(2)
    with pytest.raises(RuntimeError, match="no statistics"):
        model(batch)
    model.fit_normalization([make_batch(2, seed=s) for s in range(3)])
    maps = model.maps(batch)
    assert all(abs(float(m.mean())) < 0.5 for m in maps.values())
    state = model.state_dict()
    assert "norms.kaggle.mean" in state and "norms.eeg.std" in state
    torch.save(state, tmp_path / "model.pt")
    rebuilt = SpecCNN(norm="dataset", **kwargs).eval()
    rebuilt.load_state_dict(torch.load(tmp_path / "model.pt"))
    torch.testing.assert_close(rebuilt(batch), model(batch))


def test_spec_cnn_rejects_inconsistent_arguments() -> None:
    with pytest.raises(ValueError, match="map_size"):
        SpecCNN(views=["kaggle", "eeg"])
    with pytest.raises(ValueError, match="views"):
        SpecCNN(views=["raw"])
    with pytest.raises(ValueError, match="in_chans"):
        SpecCNN(layout="channels", in_chans=3)


@pytest.mark.parametrize(("layout", "in_chans"), [("stack", 1), ("channels", 4)])
def test_pretrained_file_loads_offline_and_adapts_first_conv(
    tmp_path, monkeypatch, layout: str, in_chans: int
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = timm.create_model("efficientnet_b0", pretrained=False)  # 3 channels, 1000 classes
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(source.state_dict(), path)
    model = SpecCNN(
        layout=layout, eeg_spec=SMALL_EEG_SPEC, pretrained=True, pretrained_file=str(path)
    )
    assert model.in_chans == in_chans
    got, want = model.backbone.state_dict(), source.state_dict()
    stem = want["conv_stem.weight"]
    if in_chans == 1:
        torch.testing.assert_close(got["conv_stem.weight"], stem.sum(dim=1, keepdim=True))
    else:
        assert got["conv_stem.weight"].shape[1] == in_chans
    torch.testing.assert_close(got["blocks.3.0.conv_pw.weight"], want["blocks.3.0.conv_pw.weight"])
    assert got["classifier.weight"].shape == (6, source.num_features)


# --------------------------------------------------------------------------- ResNet1DGRU


def test_resnet1d_gru_default_at_real_size() -> None:
    model = ResNet1DGRU()
    assert model.inputs == ("eeg",)
    assert_trains(model, make_batch(2), model.stem[0].weight)


def test_resnet1d_gru_18_channels_and_overfit() -> None:
    torch.manual_seed(0)
    model = ResNet1DGRU(
        in_channels=18,
        stem_kernels=[3, 9],
        stem_channels=8,
        block_channels=[16, 32, 32],
        gru_hidden=16,
        gru_layers=1,
        dropout=0.0,
    )
    batch = make_batch(4, n_channels=18, t=2000)
    assert_overfits(model, batch, steps=15, lr=1e-2)
    with pytest.raises(ValueError, match="18 channels"):
        model(make_batch(1, n_channels=16, t=2000))


def test_only_hms_networks_can_be_built():
    """A checkpoint's net_class is a stranger's string: only nn.Module classes defined in
    hms.models are built from it."""
    from hms.models.module import net_class_from
    from hms.models.spec_cnn import SpecCNN

    assert net_class_from("hms.models.spec_cnn.SpecCNN") is SpecCNN
    for hostile in (
        "subprocess.run", "os.system", "builtins.eval", "hms.models.imagenet.timm",
        "hms.models.module.Augment", "hms.models.module.net_class_from", "hms.models", None,
    ):  # fmt: skip
        with pytest.raises(ValueError, match="not an hms network"):
            net_class_from(hostile)
    with pytest.raises(ImportError, match="cannot import"):
        net_class_from("hms.models.spec_cnn.NoSuchNet")


# --------------------------------------------------------------------------- centre pooling


def test_centre_slice_is_the_labelled_fifth() -> None:
    assert centre_slice(78) == slice(31, 47)  # ResNet1DGRU at 25 Hz: 16 of 78 steps, 10.3 s
    assert centre_slice(3) == slice(1, 2)  # a 96-frame image after EfficientNet: the middle one
    assert centre_slice(1) == slice(0, 1)
    with pytest.raises(ValueError):
        centre_slice(0)


def test_centre_pool_heads_read_the_centre() -> None:
    """With ``centre_pool`` the head reads the mean and max over the window's steps and over
    the steps of its central fifth, and both families still train."""
    torch.manual_seed(0)
    net = ResNet1DGRU(stem_kernels=[3, 7], block_channels=[16, 16], gru_hidden=8, gru_layers=1,
                      dropout=0.0, downsample=8, centre_pool=True)  # fmt: skip
    assert net.head[1].in_features == 8 * 8
    batch = make_batch(2)
    net.eval()
    with torch.no_grad():
        h = net.features(batch["eeg"])
        mid = h[:, centre_slice(h.shape[1])]
        pooled = torch.cat([h.mean(1), h.amax(1), mid.mean(1), mid.amax(1)], dim=1)
        torch.testing.assert_close(net(batch), net.head(pooled))
    assert_trains(net, batch, net.stem[0].weight)
    cnn = SpecCNN(eeg_spec=SMALL_EEG_SPEC, drop_rate=0.0, centre_pool=True)
    assert cnn.head[1].in_features == 2 * cnn.backbone.num_features
    assert_trains(cnn, make_batch(2), cnn.backbone.conv_stem.weight)
    with pytest.raises(ValueError, match="centre_pool"):
        SpecCNN(views=["kaggle", "eeg"], map_size=[16, 64], centre_pool=True)
    with pytest.raises(ValueError, match="centre_pool"):
        SpecCNN(layout="tile", centre_pool=True)


def test_vote_weight_is_n_over_n_plus_k() -> None:
    from hms.models.losses import vote_weights
    from hms.models.module import HMSModule

    net = {"stem_kernels": [3], "block_channels": [8], "gru_hidden": 4, "gru_layers": 1}
    batch = {"n_votes": torch.tensor([1.0, 6.0, 14.0])}
    module = HMSModule("r", "hms.models.resnet1d_gru.ResNet1DGRU", net, vote_weight=6)
    k = module.hparams.vote_weight
    torch.testing.assert_close(vote_weights(batch["n_votes"], k), torch.tensor([1 / 7, 0.5, 0.7]))
    unweighted = HMSModule("r", "hms.models.resnet1d_gru.ResNet1DGRU", net).hparams.vote_weight
    assert vote_weights(batch["n_votes"], unweighted) is None
    # the feature baseline's numpy votes get the same weights
    np.testing.assert_allclose(vote_weights(np.array([1, 6, 14]), k), [1 / 7, 0.5, 0.7])


# --------------------------------------------------------------------------- every model config


def demo_module(name: str):
    """The module of ``conf/model/<name>.yaml`` at the demo's size (every model has one)."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", "experiment=demo"])
    check_config(cfg)  # its conf/model_scale/demo/<name>.yaml is there
    torch.manual_seed(0)
    return cfg, instantiate(cfg.model, _convert_="all")


def spec_rows(n: int) -> dict:
    """Kaggle rows for the exports' (eeg, spec) signature, whatever a network reads."""
    return {"spec": torch.rand(n, 300, 400, generator=torch.Generator().manual_seed(3))}


def labelled(batch: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = next(iter(batch.values())).shape[0]
    return {
        **batch,
        "target": torch.softmax(2 * torch.randn(n, 6, generator=g), dim=-1),
        "n_votes": torch.full((n,), 5.0),
        "index": torch.arange(n) + 1000 * seed,
    }


def fit_or_step(module) -> None:
    """One training step of a gradient-trained network, or the one-pass fit of the other kind,
    on random inputs of the shapes it reads."""
    net: HMSNet = module.net
    if net.needs_fitting:
        net.fit_normalization([net.example_batch(8)])
    if net.one_pass:
        batches = [labelled(net.example_batch(64, seed=s), seed=s) for s in range(4)]
        report = net.fit(net.collect(batches), {i: i % 20 for i in range(4000)})
        assert report["n_samples"] == 256
        return
    before = [p.detach().clone() for p in module.parameters()]
    optimizer = build_optimizer(module.hparams.optimizer, module)
    module.train()
    batch = labelled(net.example_batch(4))
    loss = kl_loss(module(module.augment(batch)), batch["target"])
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize("name", model_names())
def test_every_model_config_builds_trains_and_traces(name) -> None:
    """Each conf/model/*.yaml: composed with the demo recipe, its network declares its inputs
    and montage, takes a training step (or its one-pass fit), and its traced probabilities with
    flip TTA equal the module's: what the exports rely on."""
    cfg, module = demo_module(name)
    net = module.net
    assert isinstance(net, HMSNet) and net.montage == cfg.data.window.montage
    assert net.inputs and set(net.inputs) <= {"eeg", "spec"}
    fit_or_step(module)
    module.eval()
    batch = {**net.example_batch(3, seed=7), **spec_rows(3)}
    with torch.no_grad():
        torch.testing.assert_close(net.body(net.encode(batch)), net(batch))
        expected = probabilities(net, batch, True, net.montage)
        wrapped = ProbabilityModel(net, tta_flip=True)  # what the TorchScript export traces
        traced = torch.jit.trace(wrapped, (batch["eeg"], batch["spec"]), check_trace=False)
        torch.testing.assert_close(traced(batch["eeg"], batch["spec"]), expected)
    assert torch.allclose(expected.sum(dim=1), torch.ones(3))


@pytest.mark.slow
@pytest.mark.parametrize("name", model_names())
def test_every_model_config_exports_to_onnx(name, tmp_path) -> None:
    """Each conf/model/*.yaml at the demo's size exports to an ONNX graph that onnxruntime runs
    to PyTorch's probabilities (two batch sizes, flip TTA on)."""
    from hms.backends.onnx import check_graph
    from hms.data.preprocess import WindowSettings
    from hms.onnx_export import GraphModel, export_graph, graph_difference

    cfg, module = demo_module(name)
    fit_or_step(module)
    model = GraphModel(module.net, tta_flip=True)
    export_graph(model, tmp_path / "g.onnx")
    window = WindowSettings.from_dict(cfg.data.window)
    check_graph(tmp_path / "g.onnx", tmp_path, list(model.names), window)
    parity = graph_difference(model, tmp_path / "g.onnx")
    assert parity.within(1e-4), parity
    assert (parity.encoded is None) == module.net.continuous  # trees are checked split


@pytest.mark.parametrize("model", model_names())
def test_experiment_none_is_the_seeds_sizes(model):
    """``experiment=none`` (README, the benchmarks, gpu_validate): no recipe, every model at its
    conf/model/ size; Hydra cannot set a default to null from the command line. (Its ImageNet
    start needs timm's hub, which this test leaves out: tests/test_imagenet.py.)"""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        seed = compose("train", overrides=[f"model={model}", "experiment=none", "pretrained=false"])
        plain = compose("train", overrides=[f"model={model}", "~experiment", "pretrained=false"])
    check_config(seed)
    assert seed.model_scale is None and seed.model == plain.model
    assert seed.experiment_name == "default"
