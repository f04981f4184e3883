"""The recurrent language model: embedding -> stacked recurrent layers -> dropout -> decoder.

    tokens [T, B] --embedding--> x [T, B, E] --layer 1..L--> a [T, B, H] --decoder--> logits [T, B, V]

Dropout is applied to the embeddings, between stacked layers and before the decoder (as in
Zaremba et al. 2014 and PyTorch's word_language_model). The dropout is `nn.Dropout`, or the fast layer's
drop-in subclass of it where that is loaded (`lmtrain.model.backends`). The hidden state is a list with
one tuple of tensors per layer: `(a,)` for rnn/gru/esn, `(a, c)` for lstm, each `[B, H]`.

Options:
- `residual`: a layer whose input is as wide as its output adds its input to its output,
  `x_{l+1} = layer_l(x_l) + x_l` (He et al. 2016; Wu et al. 2016 for stacked LSTMs). Upper layers always
  qualify; the first one only when `embedding_size == hidden_size`.
- `tie_weights`: the decoder's `[V, H]` matrix is the embedding's `[V, E]` matrix (Press & Wolf 2017;
  Inan et al. 2017), which needs `E == H`.
- `bidirectional`: a second stack of layers reads the text right to left and predicts the previous token,
  ELMo's biLM (Peters et al. 2018): two language models that share the embedding and the decoder but not
  their recurrent layers. They are never merged before the decoder, so no position ever sees the token it
  predicts (a BiRNN that concatenates both directions would see it through the other direction).

        forward:   reads w0 .. wt        -> predicts w(t+1)      (`forward`, `step`)
        backward:  reads wT .. w(t+1)    -> predicts wt          (`backward_logits`)

  The training loss is the mean of the two directions' losses (`language_model_loss`). Generation
  (`step`, sampling) uses the forward direction only.

  Carried state: truncated BPTT reads the text left to right, carrying the forward state from one window
  to the next. The backward direction cannot do that: the state it would need at a window's right end
  summarises text that lies in the future and has not been read yet. So the backward stack reads each
  window right to left from its initial state (zeros by default), and its final state is not carried;
  near a window's right end it has little context, which is why a biLM's backward loss is higher than
  its forward loss at short `bptt`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmtrain.config import ModelConfig
from lmtrain.data.batching import State
from lmtrain.model import backends
from lmtrain.model.cells import RecurrentLayer, build_layer


class RNNLanguageModel(nn.Module):
    """Predicts the next token of every position from the tokens before it (and, when bidirectional, the
    previous token from the tokens after it).

    Args:
        vocab_size: V.
        config: the `model` section of the config; the model keeps a copy as `config`.
    """

    def __init__(self, vocab_size: int, config: ModelConfig):
        super().__init__()
        self.config = config.model_copy()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                build_layer(config, config.embedding_size if i == 0 else config.hidden_size)
                for i in range(config.num_layers)
            )

        self.layers = stack()
        self.backward_layers = stack() if config.bidirectional else None
        self.dropout = backends.dropout_class(config.impl)(config.dropout)
        self.decoder = nn.Linear(config.hidden_size, vocab_size)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight  # ModelConfig ensures embedding_size == hidden_size
        self.reset_embedding_and_decoder()
        if config.init_range is not None:
            self.reset_uniform(config.init_range)

    def reset_embedding_and_decoder(self) -> None:
        """Small uniform embeddings and decoder weights, zero decoder bias (the cells init themselves)."""
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def reset_uniform(self, init_range: float) -> None:
        """Every weight and bias from U(-init_range, init_range), as Zaremba et al. (2014) start their PTB
        models (0.1 small, 0.05 medium); the lstm's forget bias is then set to its ``forget_bias`` again
        and learned initial states stay at zero."""
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if ".initial_" not in name:
                    parameter.uniform_(-init_range, init_range)
            for layer in self.recurrent_layers():
                forget_bias = getattr(layer, "forget_bias", None)
                if forget_bias is not None:
                    layer.bias[layer.hidden_size : 2 * layer.hidden_size].fill_(forget_bias)

    def recurrent_layers(self) -> list[nn.Module]:
        """The forward layers, then the backward ones of a bidirectional model."""
        return [*self.layers, *(self.backward_layers or [])]

    def backend_candidates(self) -> list[str]:
        """The backends ``model.impl: auto`` chooses between for this model's layers on its device, in order
        of preference (``lmtrain.model.backends.auto_candidates``); one name when there is no choice."""
        if any(layer.impl != "auto" for layer in self.recurrent_layers()):
            return []
        probe = self.decoder.weight  # the device and dtype the windows run on
        return backends.auto_candidates(self.layers[0], probe)

    def prefer_backend(self, backend: str | None) -> None:
        """Run every ``auto`` layer on ``backend`` (one of ``backend_candidates()``); None: the rule's
        first candidate."""
        for layer in self.recurrent_layers():
            layer.preferred_backend = backend

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The forward layers' initial state (zeros unless the config's `initial_state` says otherwise)."""
        dtype = self.decoder.weight.dtype
        device = device if device is not None else self.decoder.weight.device
        return [layer.initial_state(batch_size, device=device, dtype=dtype) for layer in self.layers]

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """The forward language model: logits `[T, B, V]` for the next token at each of `tokens` `[T, B]`,
        and the final state."""
        if state is None:
            state = self.initial_state(tokens.size(1), tokens.device)
        x, state = self._run_stack(self.layers, self.embedding(tokens), state)
        return self.decoder(self.dropout(x)), state

    def backward_logits(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """The backward language model, right to left: logits `[T, B, V]` whose entry t is the distribution
        of the token *before* `tokens[t]`, having read `tokens[T-1], ..., tokens[t]`, and the state after
        reading `tokens[0]`.

        It mirrors `forward`: for a text `w` of T + 1 tokens, `forward(w[:-1])` predicts `w[1:]` and
        `backward_logits(w[1:])` predicts `w[:-1]`. `torch.log_softmax(logits, -1)` gives the backward
        log-probabilities for scoring. `state` None starts from the backward layers' initial state.
        """
        if self.backward_layers is None:
            raise ValueError("backward_logits needs a bidirectional model (model.bidirectional: true)")
        x, state = self._run_stack(self.backward_layers, self.embedding(tokens.flip(0)), state)
        return self.decoder(self.dropout(x)).flip(0), state

    def language_model_loss(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        state: State | None = None,
        reduction: str = "mean",
    ) -> tuple[torch.Tensor, State]:
        """Cross-entropy of one window, and the forward state to carry to the next window.

        `inputs` and `targets` are `[T, B]`, `targets[t] = inputs[t + 1]` within the text (see
        `lmtrain.data.batching.get_batch`). The forward model reads `inputs` from `state` and predicts
        `targets`. A bidirectional model also reads `targets` right to left from its backward initial state
        and predicts `inputs`, and the loss is the mean of the two directions' losses. `reduction` is
        `mean` (per token) or `sum`, as in `F.cross_entropy`.
        """
        logits, state = self(inputs, state)
        # [T, B, V] -> [T * B, V] against [T * B] targets.
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)
        if self.backward_layers is not None:
            backward, _ = self.backward_logits(targets)
            backward_loss = F.cross_entropy(backward.flatten(0, 1), inputs.flatten(), reduction=reduction)
            loss = (loss + backward_loss) / 2
        return loss, state

    def step(self, token: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One time step of the forward model, for generation: logits `[B, V]` for the token after
        `token` `[B]`."""
        if state is None:
            state = self.initial_state(token.size(0), token.device)
        x = self.dropout(self.embedding(token))  # [B, E]
        new_state = []
        for depth, layer in enumerate(self.layers):
            inputs = self.dropout(x) if depth > 0 else x
            y, layer_state = layer.step(inputs, state[depth])  # [B, H]
            x = self._skip(layer, inputs, y)
            new_state.append(layer_state)
        return self.decoder(self.dropout(x)), new_state

    def inference_step(self) -> Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]:
        """``step`` for generation, with each layer's weights laid out once (``inference_step`` of the
        cells), in eval mode and under ``torch.inference_mode``.

        Returns ``step(token [B], state) -> (logits [B, V], state)``, the same function as ``step``
        (dropout is off in eval mode) with less work per token: no shape checks, no autograd, contiguous
        transposed weights, and, when the vocabulary is no larger than the embedding (character models),
        the embedding folded into the first layer's input projection (a row lookup per token instead of an
        embedding lookup and a matrix product). It reads the weights as they are now.
        """
        if self.training:
            raise ValueError("inference_step needs eval mode (dropout would be skipped); call model.eval()")
        skips = [self.has_skip(layer) for layer in self.layers]
        fold = self.folds_embedding()
        embedding = self.embedding.weight.detach()
        layer_steps = [
            layer.inference_step(embedding if fold and depth == 0 else None)
            for depth, layer in enumerate(self.layers)
        ]
        decoder = self._generation_decoder()  # [B, H] -> [B, V]

        def step(token: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
            x = token if fold else F.embedding(token, embedding)
            new_state = []
            for layer_step, skip, layer_state in zip(layer_steps, skips, state, strict=True):
                y, layer_state = layer_step(x, layer_state)
                x = y + x if skip else y
                new_state.append(layer_state)
            return decoder(x), new_state

        return step

    def _generation_decoder(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The decoder for a few rows at a time, weights read as they are now: the fast layer's
        ``generation_linear`` where it is loaded, else ``F.linear``."""
        weight, bias = self.decoder.weight.detach(), self.decoder.bias.detach()
        fast = backends.fast_operation("generation_linear")
        return fast(weight, bias) if fast is not None else (lambda x: F.linear(x, weight, bias))

    @torch.no_grad()
    def round_weights(self, dtype: torch.dtype) -> None:
        """Round every parameter to the nearest ``dtype`` number (to nearest, ties to even), stored as before.

        ``lmtrain sample --weights bf16``: the generation kernels then read the weights as bfloat16, half
        the bytes per token (``lmtrain.fast.kernels.generate``), and every other path (torch's, CUDA) computes
        with the same rounded numbers, so the paths still agree. The arithmetic stays in the parameters'
        dtype.
        """
        for parameter in self.parameters():
            parameter.copy_(parameter.to(dtype))

    def folds_embedding(self) -> bool:
        """Whether ``inference_step`` folds the embedding into the first layer's input projection: when the
        vocabulary is no larger than that layer's input (a ``[V, G*H]`` table is then no larger than
        ``W_ax``) and no residual connection needs the embedded input itself."""
        first = self.layers[0]
        return self.vocab_size <= first.input_size and not self.has_skip(first)

    def _run_stack(
        self, layers: nn.ModuleList, embedded: torch.Tensor, state: State | None
    ) -> tuple[torch.Tensor, State]:
        """Run `layers` over a window of embeddings `[T, B, E]`; the top layer's output `[T, B, H]`."""
        x = self.dropout(embedded)
        if state is None:
            state = [None] * len(layers)
        new_state = []
        for depth, layer in enumerate(layers):
            inputs = self.dropout(x) if depth > 0 else x
            y, layer_state = layer(inputs, state[depth])  # [T, B, H]
            x = self._skip(layer, inputs, y)
            new_state.append(layer_state)
        return x, new_state

    def _skip(self, layer: RecurrentLayer, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """A layer's output, plus its input when `residual` is on and the widths match."""
        return outputs + inputs if self.has_skip(layer) else outputs

    def has_skip(self, layer: RecurrentLayer) -> bool:
        """Whether `layer`'s input is added to its output (`residual` on, and the widths match)."""
        return self.config.residual and layer.input_size == layer.hidden_size
