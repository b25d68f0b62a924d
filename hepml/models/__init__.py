"""Models: plain ``torch.nn.Module`` classes with plain hyperparameters.

Models are built by name from a workflow's ``model:`` section through
:func:`build_model`; checkpoints record the name and the arguments so a model can be
rebuilt without the workflow file. Registered kinds: ``cnn`` (jet images),
``particlenet`` (particle clouds), ``gnn`` (event graphs), ``interaction_network`` (hit-graph
edge classifier), ``lstm_tracker`` (next-hit predictor), and the anomaly detectors
``autoencoder`` (dense, feature vectors) and ``conv_autoencoder`` (images, detector maps),
each optionally variational, denoising or sparse, and ``calogan`` (a conditional
generator of calorimeter showers with its discriminator).

Each family declares its contract in its own file (see :mod:`hepml.models._registry`):
how it sizes itself from a representation's ``output_shape`` (``data_kwargs``) and the
names of its inputs and outputs (``contract``). :func:`model_spec` sizes a family for
tasks and benchmarks; ``hepml export`` reads :func:`model_contract`. A new family is one
new file, imported below.
"""

from hepml.models._registry import (
    ACTIVATIONS,
    MODELS,
    ModelContract,
    activation,
    build_model,
    model_contract,
    model_spec,
    output_names,
    register_model,
)
from hepml.models.autoencoder import AutoencoderBase, ConvAutoencoder, DenseAutoencoder
from hepml.models.caloflow import CaloFlow
from hepml.models.calogan import CaloGAN
from hepml.models.cnn import JetImageCNN
from hepml.models.gnn import EventGNN
from hepml.models.hit_gnn import EdgeClassifierIN
from hepml.models.lstm_tracker import LSTMTracker
from hepml.models.particlenet import ParticleNet

__all__ = ["ACTIVATIONS", "MODELS", "AutoencoderBase", "CaloFlow", "CaloGAN", "ConvAutoencoder",
           "DenseAutoencoder", "EdgeClassifierIN", "EventGNN", "LSTMTracker", "JetImageCNN",
           "ModelContract", "activation", "build_model", "model_contract", "model_spec",
           "output_names", "register_model", "ParticleNet"]
