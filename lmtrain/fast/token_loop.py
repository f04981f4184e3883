"""Generation with every buffer made once: a loop of C calls per token, on lmtrain's generation kernels.

A generation step for a few streams reads each weight once, and for a model of a few million weights the C
calls of a token take a fraction of a millisecond. Around them, the per-token path of
``model.inference_step`` and ``sampling.next_tokens`` makes a dozen or more torch calls (new tensors for
every state, the softmax, the draw) and the Python between them, just after the token's weights have
pushed that code and data out of the core's caches; that overhead is a large part of a token's time.

``TokenLoop`` makes every tensor a token needs once: the tokens, each layer's state twice (the step reads
one and writes the other, and the two swap every token), the logits and the draw's uniform numbers. It
binds each C call to them once (``PackedLayerStep.bind``), so that a token is one call per layer, one for
the decoder and one that samples (``GenerationKernels.sampler``: the temperature, the softmax and the draw
in one), plus the uniform numbers drawn from the generator as ``sampling.draw`` draws them.

It computes what ``model.inference_step`` and ``sampling.next_tokens`` compute, with the same generator
draws: the same tokens, but for a uniform number that falls within float rounding of the boundary between
two tokens. ``TokenLoop.for_model`` returns None where it does not apply (see there); the caller then runs
the per-token path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lmtrain.fast.generation import kernel_step
from lmtrain.fast.kernels import fused_applies
from lmtrain.fast.kernels.generate import FEW_STREAMS, PackedLayerStep, PackedLinear, generation_kernels

if TYPE_CHECKING:
    from lmtrain.data.batching import State
    from lmtrain.generation.sampling import SamplingOptions
    from lmtrain.model.language_model import RNNLanguageModel


class TokenLoop:
    """The generation loop of ``model`` for ``streams`` streams on buffers made once.

    ``loop.start(logits, state)`` takes the logits ``[M, V]`` and the state after the context (or the initial
    ones, and ``loop.feed(token)`` then reads a context a token at a time); then
    ``loop.tokens(length, options, banned, generator)`` yields each step's tokens ``[M]`` (the loop's own
    buffer: read it before asking for the next), stepping the model between two yields.
    """

    def __init__(self, model: RNNLanguageModel, streams: int):
        kernels = generation_kernels()
        self._kernels = kernels
        weight = model.decoder.weight
        vocab = model.vocab_size
        fold = model.folds_embedding()
        self._tokens = torch.zeros(streams, dtype=torch.int64)
        self._logits = weight.new_zeros(streams, vocab)
        self._uniforms = torch.zeros(streams, 1, dtype=torch.float64)
        # Each layer's state twice: states[d][p] is what step p of the pair reads, states[d][1 - p] what it
        # writes; the next token's step reads it back.
        self._states = [
            [_zeros(weight, streams, layer.hidden_size, layer.num_states) for _ in range(2)]
            for layer in model.layers
        ]
        embedding = model.embedding.weight.detach()
        layer_steps = [
            kernel_step(layer, embedding if fold and depth == 0 else None)
            for depth, layer in enumerate(model.layers)
        ]
        if any(layer_step is None for layer_step in layer_steps):
            raise _NoKernelStep
        bias = model.decoder.bias
        decoder = kernels.linear_layer(weight.detach().contiguous(), None if bias is None else bias.detach())
        self._calls = [self._bind(model, layer_steps, decoder, embedding, fold, parity) for parity in (0, 1)]
        self._parity = 0

    @classmethod
    def for_model(cls, model: RNNLanguageModel, streams: int) -> TokenLoop | None:
        """The loop, or None where it does not apply: a model in training mode (dropout), not fp32 on the
        CPU, the reference backend asked for, more than ``FEW_STREAMS`` streams, no C kernels here, or a
        layer without a C step."""
        parameters = [
            model.decoder.weight,
            model.embedding.weight,
            *(layer.weight_aa for layer in model.layers),
        ]
        usable = (
            not model.training
            and all(layer.impl != "reference" for layer in model.layers)
            and streams <= FEW_STREAMS
            and fused_applies(*parameters)
            and generation_kernels() is not None
        )
        if not usable:
            return None
        try:
            return cls(model, streams)
        except _NoKernelStep:
            return None

    def _bind(
        self,
        model: RNNLanguageModel,
        layer_steps: list[PackedLayerStep],
        decoder: PackedLinear,
        embedding: Tensor,
        fold: bool,
        parity: int,
    ) -> list[Callable[[], object]]:
        """The calls of one token whose layers read state ``parity`` and write the other."""
        streams = self._tokens.shape[0]
        calls: list[Callable[[], object]] = []
        if fold:  # the first layer looks its input row up from the token ids themselves
            x = self._tokens
        else:
            x = embedding.new_empty(streams, embedding.shape[1])  # [M, E]
            calls.append(functools.partial(torch.index_select, embedding, 0, self._tokens, out=x))
        for layer, layer_step, states in zip(model.layers, layer_steps, self._states, strict=True):
            new_state = states[1 - parity]
            calls.append(layer_step.bind(x, states[parity], new_state))
            y = new_state[0]  # [M, H]
            if model.has_skip(layer):  # residual: the next layer reads y + x
                total = torch.empty_like(y)
                calls.append(functools.partial(torch.add, y, x, out=total))
                y = total
            x = y
        calls.append(decoder.bind(x, self._logits))
        return calls

    def start(self, logits: Tensor, state: State) -> None:
        """Begin from ``logits`` ``[M, V]`` and the model's ``state`` (one tuple of ``[M, H]`` tensors a
        layer)."""
        self._logits.copy_(logits)
        self._parity = 0
        for buffers, layer_state in zip(self._states, state, strict=True):
            for buffer, tensor in zip(buffers[0], layer_state, strict=True):
                buffer.copy_(tensor)

    def tokens(
        self,
        length: int,
        options: SamplingOptions,
        banned: int | None,
        generator: torch.Generator,
    ) -> Iterator[Tensor]:
        """Each step's tokens ``[M]``, ``length`` of them, chosen as ``sampling.next_tokens`` chooses them;
        the model steps on them when the next is asked for."""
        from lmtrain.generation.sampling import next_tokens

        restricted = options.top_k is not None or options.top_p is not None
        sample = self._kernels.sampler(
            self._logits, self._tokens, self._uniforms, options.temperature, options.greedy, banned
        )
        draws_uniforms = not options.greedy
        for position in range(length):
            if restricted:  # top-k / top-p: torch's sorting and masking
                self._tokens.copy_(next_tokens(self._logits, options, banned, generator))
            else:
                if draws_uniforms:
                    self._uniforms.uniform_(generator=generator)  # the numbers sampling.draw would draw
                sample()
            yield self._tokens
            if position + 1 < length:
                self._advance()

    def feed(self, token: int) -> None:
        """Step every stream on ``token`` (a context's token): the logits are then those after it."""
        self._tokens.fill_(token)
        self._advance()

    def _advance(self) -> None:
        """The model's step on ``_tokens``: the logits of the next token, and the state after these."""
        for call in self._calls[self._parity]:
            call()
        self._parity = 1 - self._parity


class _NoKernelStep(Exception):
    """A layer has no C generation step."""


def _zeros(like: Tensor, streams: int, hidden: int, count: int) -> tuple[Tensor, ...]:
    """``count`` zero tensors ``[M, H]`` of ``like``'s dtype and device: one layer's state."""
    return tuple(like.new_zeros(streams, hidden) for _ in range(count))
