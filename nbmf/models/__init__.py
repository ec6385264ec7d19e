"""PyTorch model families (training and export only: decoding never imports torch).

>>> from nbmf.models import ModelConfig
>>> ModelConfig(family="hybrid", n_layers=4).mixers()
['recurrent', 'attention', 'recurrent', 'attention']
"""
from nbmf.models.config import FAMILIES, ModelConfig, sequence_for


def build_model(cfg: ModelConfig):
    """The causal model for ``cfg`` (imports torch)."""
    from nbmf.models.model import CausalModel

    return CausalModel(cfg)


__all__ = ["FAMILIES", "ModelConfig", "build_model", "sequence_for"]
