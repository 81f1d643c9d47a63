"""The PyTorch backend of ``hms.inference``: weights folders of ``HMSModule`` checkpoints.

``TorchBackend`` resolves the device and precision, checks a checkpoint before any slow work
(``check_checkpoint``: at most ``MAX_CHECKPOINT_BYTES``, tensors and plain data only, an
``HMSModule`` of the member the ensemble names it under, whose network, built from its
hyperparameters on the CPU without more tensors than the file holds, has every tensor of the
checkpoint's state dict with its shape and dtype, no other, and only finite floats; the feature
baseline's tree tables, sized by the checkpoint, must index inside themselves) and loads it
(``load_member_checkpoint``: rebuilt offline, wandb kept out, the test-time flip as trained or
forced, the network's montage that of the member's windows). A loaded fold (``TorchFold``)
maps a batch of numpy arrays to the member's probabilities with ``HMSModule.predict_proba``
(``hms.models.module.probabilities``), under bf16 or fp16 autocast on a GPU when asked.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hms.backends.base import PRECISIONS
from hms.blend import ENSEMBLE_FILE
from hms.data.preprocess import WindowSettings
from hms.errors import HMSDataError

if TYPE_CHECKING:
    from hms.backends.base import MemberInfo
    from hms.models.base import HMSNet
    from hms.models.module import HMSModule


@contextlib.contextmanager
def _wandb_hidden() -> Iterator[None]:
    """Make ``import wandb`` fail inside the block, unless wandb is already imported.

    ``timm.utils.summary`` runs ``try: import wandb`` when timm is imported; prediction needs no
    logger, so hiding wandb there keeps it out of the process (no import cost, nothing of
    wandb's to start). ``import wandb`` works again after the block.
    """
    if "wandb" in sys.modules:
        yield
        return
    sys.modules["wandb"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("wandb", ...) is None:
            del sys.modules["wandb"]


def module_class() -> type[HMSModule]:
    """``HMSModule``, imported (with timm) while wandb is hidden."""
    with _wandb_hidden():
        from hms.models.module import HMSModule
    return HMSModule


# --------------------------------------------------------------------------- device


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: the GPU when CUDA is available, else the CPU; otherwise a torch device name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:  # a name torch does not know, or not a name
        raise HMSDataError(
            None, f"unknown device {device!r}; give auto, cpu, cuda or cuda:<index>"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HMSDataError(None, f"device {device!r} requested, but CUDA is not available")
    return resolved


def resolve_precision(precision: str | int | None, device: torch.device) -> str:
    """``"auto"``: bf16 autocast on a GPU, full float32 on the CPU; otherwise as given (one of
    ``PRECISIONS``; ``HMSDataError`` for another)."""
    if precision is None or str(precision) == "auto":
        return "bf16-mixed" if device.type == "cuda" else "32"
    if isinstance(precision, bool) or str(precision) not in PRECISIONS:
        raise HMSDataError(
            None, f"precision must be one of {list(PRECISIONS)} or null, got {precision!r}"
        )
    return str(precision)


# --------------------------------------------------------------------------- checkpoints

MAX_CHECKPOINT_BYTES = 2 * 1024**3  # hms's largest checkpoint (multispec_b1) is about 100 MB
MAX_HPARAM_VALUES = 100_000  # values in a checkpoint's hyperparameters, nested
MAX_HPARAM_DEPTH = 32
# What building a network from a checkpoint's hyperparameters may register beyond the tensors
# of its state dict (buffers computed at construction, not saved: DFT bases, filterbanks).
BUILD_MARGIN_BYTES = 512 * 1024**2
BUILD_MARGIN_TENSORS = 10_000


def _torch_load(path: Path) -> Any:
    """``torch.load`` of tensors and plain data only, memory-mapped when the format allows it
    (so that reading the hyperparameters costs no time for the weights)."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # files in the legacy (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _check_plain(value: Any, path: Path) -> None:
    """Hyperparameters are plain data (mappings with string keys, lists, strings, numbers,
    booleans, None) of bounded size and depth: what a network is built from."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_HPARAM_VALUES or depth > MAX_HPARAM_DEPTH:
            raise HMSDataError(
                path, f"hyperparameters larger than any network's (more than "
                f"{MAX_HPARAM_VALUES:,} values or {MAX_HPARAM_DEPTH} levels)",
            )  # fmt: skip
        if isinstance(item, Mapping):
            if not all(isinstance(k, str) for k in item):
                raise HMSDataError(path, "hyperparameters with keys that are not names")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
        elif not (item is None or isinstance(item, str | bool | int | float)):
            raise HMSDataError(
                path, f"hyperparameters hold a {type(item).__name__}, not plain data"
            )


def read_checkpoint(path: str | Path, member: str) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """``(hyperparameters, state dict)`` of an ``HMSModule`` checkpoint of model ``member``
    (its tensors memory-mapped), else an error.

    A file larger than ``MAX_CHECKPOINT_BYTES``, a file that torch cannot read, a checkpoint that
    is not an ``HMSModule``'s (hyperparameters of plain data), and a checkpoint of another model
    than ``member`` each raise ``HMSDataError`` naming the file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise HMSDataError(
            path, f"{size / 2**30:.1f} GiB: larger than any hms checkpoint (the limit is "
            f"{MAX_CHECKPOINT_BYTES / 2**30:.0f} GiB)",
        )  # fmt: skip
    try:
        ckpt = _torch_load(path)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise HMSDataError(
            path,
            f"not a PyTorch Lightning checkpoint ({type(exc).__name__}: {str(exc)[:300]}); "
            "expected the best.ckpt of a python -m hms.train run",
        ) from exc
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    if (
        not isinstance(hparams, Mapping)
        or "state_dict" not in ckpt
        or not {"name", "net_class"} <= set(hparams)
    ):
        raise HMSDataError(
            path,
            "not an hms model checkpoint (no HMSModule hyperparameters name and net_class); "
            "expected the best.ckpt of a python -m hms.train run",
        )
    _check_plain(hparams, path)
    if hparams["name"] != member:
        raise HMSDataError(
            path,
            f"checkpoint of model {str(hparams['name'])[:100]!r}, but the ensemble lists it "
            f"under member {member!r}",
        )
    state = ckpt["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise HMSDataError(path, "the checkpoint's state_dict is not a mapping of tensors")
    strange = [k for k, v in state.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if strange:
        raise HMSDataError(
            path,
            f"state_dict entries that are not named tensors: {[str(k)[:80] for k in strange[:5]]}",
        )
    return dict(hparams), state


def checkpoint_hparams(path: str | Path, member: str) -> dict[str, Any]:
    """The hyperparameters of an ``HMSModule`` checkpoint of model ``member`` (``read_checkpoint``
    without the state dict)."""
    return read_checkpoint(path, member)[0]


def rebuild_hparams(hparams: Mapping[str, Any], window: WindowSettings | None) -> dict[str, Any]:
    """What a checkpoint's network is rebuilt with: its hyperparameters, ``pretrained`` off (the
    weights come from the checkpoint: nothing is downloaded) and, for a checkpoint written before
    montages had names, the montage of the member's windows."""
    hparams = dict(hparams)
    net = hparams.get("net")
    net = dict(net) if isinstance(net, Mapping) else {}
    if net.get("pretrained"):
        hparams["net"] = net = {**net, "pretrained": False}
    if window is not None and "montage" not in net:
        hparams["net"] = {**net, "montage": window.montage}
    return hparams


class _TooLarge(Exception):
    """A network under construction registered more than its checkpoint could fill."""


@contextlib.contextmanager
def _bounded_construction(max_bytes: int, max_tensors: int) -> Iterator[None]:
    """Stop the construction of a network (``_TooLarge``) once it has registered more tensor
    bytes or tensors than allowed: a tensor is registered before it is initialised, so a
    network of absurd size is refused before its memory is touched."""
    seen = {"bytes": 0, "tensors": 0}

    def count(module: nn.Module, name: str, tensor: Any) -> None:
        if tensor is not None:
            seen["bytes"] += tensor.numel() * tensor.element_size()
            seen["tensors"] += 1
            if seen["bytes"] > max_bytes or seen["tensors"] > max_tensors:
                raise _TooLarge(f"{seen['tensors']} tensors, {seen['bytes']:,} bytes")

    registration = torch.nn.modules.module
    handles = [
        registration.register_module_parameter_registration_hook(count),
        registration.register_module_buffer_registration_hook(count),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class ExpectedState:
    """What a member's network built from its hyperparameters holds: each state-dict tensor's
    shape and dtype, which tensors the checkpoint sizes (modules that load tables of any size,
    the feature baseline's trees), the tree tables' prefixes and bounds, and its montage."""

    tensors: dict[str, tuple[tuple[int, ...], torch.dtype]]
    sized_by_checkpoint: set[str] = field(default_factory=set)
    trees: list[tuple[str, int | None, int]] = field(
        default_factory=list
    )  # prefix, features, classes
    montage: str = ""


def expected_state(
    hparams: Mapping[str, Any], path: Path, state_bytes: int, n_tensors: int
) -> ExpectedState:
    """Build the network of ``hparams`` on the CPU (bounded by what the checkpoint holds) and
    describe its state dict."""
    with _wandb_hidden():  # hms.models imports timm, which tries to import wandb
        from hms.models.features import TreeEnsemble

    max_bytes = 2 * state_bytes + BUILD_MARGIN_BYTES
    max_tensors = 2 * n_tensors + BUILD_MARGIN_TENSORS
    try:
        # A stranger's hyperparameters may build odd layers (zero channels, ...): what torch
        # warns about then is not for the user, whose answer is the check's one line.
        with (
            _wandb_hidden(),
            _bounded_construction(max_bytes, max_tensors),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            module = module_class()(**hparams)
    except _TooLarge as exc:
        raise HMSDataError(
            path, f"its hyperparameters build a network larger than the checkpoint holds ({exc} "
            f"registered, for {n_tensors} tensors of {state_bytes:,} bytes in the file)",
        ) from None  # fmt: skip
    except Exception as exc:  # hyperparameters from a stranger: anything may fail
        raise HMSDataError(
            path, f"cannot rebuild the model from this checkpoint ({type(exc).__name__}: "
            f"{str(exc)[:300]})",
        ) from None  # fmt: skip
    tensors = {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}
    expected = ExpectedState(tensors, montage=module.net.montage)
    base_load = nn.Module._load_from_state_dict
    tree_features = {f"net.{k}": v for k, v in module.net.tree_feature_counts().items()}
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        if type(sub)._load_from_state_dict is not base_load:
            own = [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)]
            expected.sized_by_checkpoint |= {prefix + k for k, _ in own if prefix + k in tensors}
        if isinstance(sub, TreeEnsemble):  # its feature count declared by the network, or None
            expected.trees.append((prefix, tree_features.get(name), int(sub.n_classes)))
    del module
    return expected


def _check_trees(path: Path, state: Mapping[str, Any], expected: ExpectedState) -> None:
    """The feature baseline's tree tables (sized by the checkpoint): consistent shapes, at least
    one tree, every index inside its table, a depth no deeper than a tree's nodes (the number
    of traversal rounds: a huge one would never end)."""
    for prefix, n_features, n_classes in expected.trees:
        t = {k: state[prefix + k] for k in ("feature", "threshold", "left", "right", "value",
                                            "tree_class", "depth")}  # fmt: skip
        shape = tuple(t["feature"].shape)
        problem = None
        if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
            problem = f"no trees (tables of shape {shape})"
        elif any(tuple(t[k].shape) != shape for k in ("threshold", "left", "right", "value")):
            problem = "tables of different shapes"
        elif tuple(t["tree_class"].shape) != shape[:1] or t["depth"].dim() != 0:
            problem = "tree_class or depth of the wrong shape"
        else:
            n_nodes = shape[1]
            bounds = {"left": n_nodes, "right": n_nodes, "tree_class": n_classes}
            if n_features is not None:
                bounds["feature"] = n_features
            for key, limit in bounds.items():
                low, high = int(t[key].min()), int(t[key].max())
                if low < 0 or high >= limit:
                    problem = f"{key} indices in [{low}, {high}], outside [0, {limit})"
                    break
            depth = int(t["depth"])
            if problem is None and not 0 <= depth <= n_nodes:
                problem = f"depth {depth} for trees of {n_nodes} nodes"
        if problem:
            raise HMSDataError(path, f"tree tables {prefix}*: {problem}")


def _finite(tensor: torch.Tensor) -> bool:
    """Every value finite: numpy's test where it can (no thread pool to start per tensor: on a
    busy CPU torch's costs milliseconds per tensor), torch's for bfloat16."""
    if tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(tensor.detach().cpu().numpy()).all())
    return bool(torch.isfinite(tensor.float()).all())


def check_checkpoint(
    path: str | Path,
    member: str,
    window: WindowSettings | None = None,
    built: dict[str, ExpectedState] | None = None,
) -> dict[str, Any]:
    """Check a fold checkpoint of ``member`` before any work: ``read_checkpoint``, then its state
    dict against the network its hyperparameters build (``expected_state``; ``built`` caches
    those by hyperparameters across a member's folds): the same tensors, no missing or
    unexpected one, each of the built shape (tables the checkpoint sizes: of the built number of
    dimensions) and dtype, every float finite, the tree tables' indices inside their tables, and
    the network's montage that of the member's windows. Returns the hyperparameters;
    ``HMSDataError`` naming the file and the tensor otherwise."""
    path = Path(path)
    hparams, state = read_checkpoint(path, member)
    build = rebuild_hparams(hparams, window)
    key = json.dumps(build, sort_keys=True, default=str)
    built = {} if built is None else built
    if key not in built:
        state_bytes = sum(t.numel() * t.element_size() for t in state.values())
        built[key] = expected_state(build, path, state_bytes, len(state))
    expected = built[key]
    missing = sorted(set(expected.tensors) - set(state))
    unexpected = sorted(set(state) - set(expected.tensors))
    if missing or unexpected:
        raise HMSDataError(
            path, f"its state_dict does not match the network its hyperparameters build: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
            f"{[k[:80] for k in unexpected[:5]]}{' ...' if len(unexpected) > 5 else ''}",
        )  # fmt: skip
    for name, tensor in state.items():
        shape, dtype = expected.tensors[name]
        if tensor.dtype != dtype:
            raise HMSDataError(
                path, f"tensor {name!r} is {tensor.dtype}, but the network has {dtype} there"
            )
        sized = name in expected.sized_by_checkpoint
        if (len(tensor.shape) != len(shape)) if sized else (tuple(tensor.shape) != shape):
            raise HMSDataError(
                path, f"tensor {name!r} has shape {tuple(tensor.shape)}, but the network built "
                f"from its hyperparameters has {shape}",
            )  # fmt: skip
        if tensor.is_floating_point() and not _finite(tensor):
            bad = int((~torch.isfinite(tensor.float())).sum())
            raise HMSDataError(path, f"tensor {name!r} holds {bad} NaN or infinite value(s)")
    _check_trees(path, state, expected)
    if window is not None and expected.montage != window.montage:
        raise HMSDataError(
            path,
            f"the network reads montage {expected.montage!r}, but {ENSEMBLE_FILE} gives member "
            f"{member!r} the windows of montage {window.montage!r}",
        )
    return hparams


def load_member_checkpoint(
    path: str | Path,
    member: str,
    device: torch.device | str = "cpu",
    tta_flip: bool | None = None,
    window: WindowSettings | None = None,
) -> HMSModule:
    """Load one fold checkpoint of ``member`` onto ``device``, in eval mode.

    The checkpoint must be an ``HMSModule`` checkpoint of the model the ensemble names it under.
    Its network is rebuilt without downloading anything (``pretrained`` forced off: the weights
    come from the checkpoint). ``tta_flip`` (when not None) overrides the checkpoint's setting.
    ``window``: the member's window settings (``ensemble.json``); the network's montage must be
    theirs, and a checkpoint written before montages had names takes theirs.
    """
    path = Path(path)
    hparams = checkpoint_hparams(path, member)
    rebuilt = rebuild_hparams(hparams, window)
    overrides = {"net": rebuilt["net"]} if rebuilt.get("net") != hparams.get("net") else {}
    try:
        module = module_class().load_from_checkpoint(
            path, map_location=torch.device(device), weights_only=True, **overrides
        )
    except (ImportError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise HMSDataError(
            path, f"cannot rebuild the model from this checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if window is not None and module.net.montage != window.montage:
        raise HMSDataError(
            path,
            f"the network reads montage {module.net.montage!r}, but {ENSEMBLE_FILE} gives member "
            f"{member!r} the windows of montage {window.montage!r}",
        )
    if tta_flip is not None:
        module.hparams.tta_flip = bool(tta_flip)
    return module.eval()


# --------------------------------------------------------------------------- the backend


class TorchFold:
    """One loaded fold checkpoint: a batch of numpy arrays -> (B, 6) float64 probabilities."""

    def __init__(self, module: HMSModule, device: torch.device, precision: str) -> None:
        self.module, self.device, self.precision = module.to(device).eval(), device, precision
        self.inputs = tuple(module.inputs)

    @property
    def network(self) -> HMSNet:
        return self.module.net

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        from hms.models.module import autocast_for

        inputs = {
            k: torch.from_numpy(np.asarray(batch[k])).to(self.device, non_blocking=True)
            for k in self.inputs
        }
        with autocast_for(self.device, self.precision):
            probs = self.module.predict_proba(inputs)
        out = probs.float().cpu().numpy().astype(np.float64)
        return out / out.sum(axis=1, keepdims=True)


class TorchBackend:
    """Runs ``HMSModule`` checkpoints (``.ckpt``) on a torch device."""

    name = "torch"
    suffix = ".ckpt"
    file_kind, builder = "checkpoint", "hms.ensemble"

    def __init__(self, device: str = "auto", precision: str | int | None = "auto") -> None:
        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)
        self.precision = resolve_precision(precision, self.torch_device)
        self._built: dict[str, ExpectedState] = {}  # networks built by the checks, described

    def check(self, path: Path, member: MemberInfo) -> None:
        check_checkpoint(path, member.name, member.window, self._built)

    def check_folder(self, folder: Path) -> None:
        """A PyTorch folder may hold more (hms.ensemble's report, OOF blend)."""

    def load(self, path: Path, member: MemberInfo, tta_flip: bool | None) -> TorchFold:
        module = load_member_checkpoint(
            path, member.name, self.torch_device, tta_flip, member.window
        )
        return TorchFold(module, self.torch_device, self.precision)

    def release(self) -> None:
        """Give the device's cached memory back between folds."""
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()
