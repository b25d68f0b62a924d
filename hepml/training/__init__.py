"""Training: one trainer for every model, checkpoints, chunked batches, torchrun helpers."""

from hepml.training.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    versions,
)
from hepml.training.data import ChunkedDataset, chunk_moments
from hepml.training.device import float_dtype, resolve_device, supports_float64, to_device
from hepml.training.splits import SPLIT_NAMES, assign_split, split_seed
from hepml.training.trainer import Trainer

__all__ = ["SPLIT_NAMES", "assign_split", "split_seed", "ChunkedDataset", "chunk_moments",
           "Trainer", "load_checkpoint", "model_from_checkpoint", "resolve_device",
           "save_checkpoint", "versions", "float_dtype", "supports_float64", "to_device"]
