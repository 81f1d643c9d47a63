"""One module's batched prediction over a loader: out-of-fold scoring (``hms.training``) and
every ensemble prediction (``hms.inference``)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hms.models.module import HMSModule


def autocast_for(device: torch.device, precision: str | None) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and precision and "bf16" in str(precision):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and precision and "16" in str(precision):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_loader(
    module: HMSModule,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    precision: str | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """``(sample indices, probabilities (N, 6) float64, rows summing to 1)`` over a loader."""
    device = torch.device(device)
    module = module.to(device).eval()
    keys = module.inputs
    indices, probs = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in keys}
        with autocast_for(device, precision):
            p = module.predict_proba(inputs)
        indices.append(batch["index"].numpy())
        probs.append(p.float().cpu().numpy())
    if not probs:
        return np.zeros(0, np.int64), np.zeros((0, 6))
    out = np.concatenate(probs).astype(np.float64)
    return np.concatenate(indices), out / out.sum(axis=1, keepdims=True)
