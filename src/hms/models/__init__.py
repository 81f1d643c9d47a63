"""The model families; Hydra builds them by ``_target_`` (e.g. ``hms.models.SpecCNN``).

Every model takes primitive arguments only, has ``forward(batch) -> logits (B, 6)`` and an
``inputs`` attribute naming the batch keys it reads.
"""

from hms.models.losses import kl_loss, kl_per_class
from hms.models.resnet1d_gru import ResNet1DGRU
from hms.models.spec_cnn import SpecCNN

__all__ = ["ResNet1DGRU", "SpecCNN", "kl_loss", "kl_per_class"]
