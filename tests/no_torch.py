"""``python tests/no_torch.py <module> [args]``: run ``python -m <module> [args]`` in a process
where the torch stack (torch, torchvision, torchaudio, pytorch_lightning, lightning, timm) cannot
be imported, as on a machine that has only hms's light ONNX runtime (docs/onnx.md)."""

from __future__ import annotations

import importlib.abc
import runpy
import sys

BLOCKED = ("torch", "torchvision", "torchaudio", "pytorch_lightning", "lightning", "timm")


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked: a machine without torch)")
        return None


if __name__ == "__main__":
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            raise SystemExit(f"{name} was imported before the block")
    sys.meta_path.insert(0, Blocked())
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
