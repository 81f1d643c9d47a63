"""The networks and ``HMSModule``, the one LightningModule that trains and runs any of them.

How a model is built: a model config (``conf/model/<name>.yaml``) has ``_target_:
hms.models.module.HMSModule``, the network's import path as a string (``net_class:
hms.models.spec_cnn.SpecCNN``) and its keyword arguments (``net: {...}``). Hydra builds only the
``HMSModule``; the module imports the network class itself (``net_class_from`` accepts
``nn.Module`` classes of this package only) and keeps both strings as hyperparameters, so that
``HMSModule.load_from_checkpoint`` rebuilds any run without Hydra or the configs.

Every network takes primitive arguments only, has ``forward(batch) -> logits (B, 6)`` and an
``inputs`` attribute naming the batch keys it reads. A network with ``collect`` and ``fit`` (the
feature baseline, ``features.FeatureGBM``) is fitted in one pass instead of by gradient steps.
"""

from hms.models.losses import kl_loss
from hms.models.resnet1d_gru import ResNet1DGRU
from hms.models.spec_cnn import SpecCNN

__all__ = ["ResNet1DGRU", "SpecCNN", "kl_loss"]
