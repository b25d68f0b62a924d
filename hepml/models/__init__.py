"""Models: plain ``torch.nn.Module`` classes with plain hyperparameters.

Models are built by name from a workflow's ``model:`` section through
:func:`build_model`; checkpoints record the name and the arguments so a model can be
rebuilt without the workflow file.
"""

from hepml.models._registry import ACTIVATIONS, MODELS, activation, build_model, register_model
from hepml.models.cnn import JetImageCNN
from hepml.models.gnn import EventGNN
from hepml.models.particlenet import ParticleNet

__all__ = ["ACTIVATIONS", "MODELS", "EventGNN", "JetImageCNN", "activation", "build_model",
           "register_model", "ParticleNet"]
