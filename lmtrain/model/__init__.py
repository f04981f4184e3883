"""The model: the recurrent cells (one definition each), the backends that run them, and the language
model around them (embedding -> stacked cells -> dropout -> decoder)."""

from lmtrain.model.language_model import RNNLanguageModel

__all__ = ["RNNLanguageModel"]
