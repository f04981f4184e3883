"""lmtrain: train recurrent language models and generate text from them."""

__version__ = "0.1.0"
