"""The recurrent language model: embedding -> stacked recurrent layers -> dropout -> decoder.

    tokens [T, B] --embedding--> x [T, B, E] --layer 1..L--> a [T, B, H] --decoder--> logits [T, B, V]

Dropout is applied to the embeddings, between stacked layers and before the decoder (as in
Zaremba et al. 2014 and PyTorch's word_language_model). The hidden state is a list with one
tuple of tensors per layer: `(a,)` for rnn/gru, `(a, c)` for lstm, each `[B, H]`.
"""

from __future__ import annotations

import torch
from torch import nn

from lmtrain.batching import State
from lmtrain.cells import build_layer
from lmtrain.config import ModelConfig


class RNNLanguageModel(nn.Module):
    """Predicts the next token of every position from the tokens before it."""

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        embedding_size: int = 128,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        nonlinearity: str = "tanh",
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.layers = nn.ModuleList(
            build_layer(cell, embedding_size if i == 0 else hidden_size, hidden_size, nonlinearity)
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.reset_embedding_and_decoder()

    @classmethod
    def from_config(cls, vocab_size: int, config: ModelConfig) -> RNNLanguageModel:
        return cls(
            vocab_size,
            cell=config.cell,
            embedding_size=config.embedding_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            nonlinearity=config.nonlinearity,
        )

    def reset_embedding_and_decoder(self) -> None:
        """Small uniform embeddings and decoder weights, zero decoder bias (the cells init themselves)."""
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state of every layer."""
        dtype = self.decoder.weight.dtype
        device = device if device is not None else self.decoder.weight.device
        return [layer.initial_state(batch_size, device=device, dtype=dtype) for layer in self.layers]

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits `[T, B, V]` for the next token at each of `tokens` `[T, B]`, and the final state."""
        if state is None:
            state = self.initial_state(tokens.size(1), tokens.device)
        x = self.dropout(self.embedding(tokens))  # [T, B, E]
        new_state = []
        for depth, layer in enumerate(self.layers):
            if depth > 0:
                x = self.dropout(x)
            x, layer_state = layer(x, state[depth])  # [T, B, H]
            new_state.append(layer_state)
        return self.decoder(self.dropout(x)), new_state

    def step(self, token: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One time step for generation: logits `[B, V]` for the token after `token` `[B]`."""
        if state is None:
            state = self.initial_state(token.size(0), token.device)
        x = self.dropout(self.embedding(token))  # [B, E]
        new_state = []
        for depth, layer in enumerate(self.layers):
            if depth > 0:
                x = self.dropout(x)
            x, layer_state = layer.step(x, state[depth])  # [B, H]
            new_state.append(layer_state)
        return self.decoder(self.dropout(x)), new_state
