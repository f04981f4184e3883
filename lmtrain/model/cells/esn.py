"""The echo state network: a plain rnn whose recurrent matrix is a fixed random reservoir."""

from __future__ import annotations

import torch

from lmtrain.model.cells.rnn import RNNLayer


class ESNLayer(RNNLayer):
    """An echo state network layer (Jaeger 2001), the remedy for vanishing gradients the notes name:

        a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a),    g = tanh (or relu),    W_aa fixed

    The same equation as the plain rnn, but ``W_aa`` is a reservoir: drawn once from N(0, 1), scaled so
    that its spectral radius (largest eigenvalue modulus) is ``spectral_radius``, and never trained. It is
    a buffer, not a parameter: it gets no gradient, the optimizer never sees it, and it is saved in the
    state dict so a checkpoint restores the same reservoir. A radius below 1 gives the "echo state
    property": the effect of old inputs fades geometrically instead of exploding. Only the input weights
    ``W_ax``, ``b_a`` (with the model's embedding) and the readout (the model's decoder) learn; gradients
    still reach them through time via the fixed ``W_aa``.

    Shapes and parameters as ``RNNLayer``, with ``weight_aa`` ``[H, H]`` a buffer. ``init`` applies to the
    input weights only; ``identity`` is refused (the recurrent matrix is the reservoir). There is no
    torch counterpart to exchange weights with (``native_type`` is None).
    """

    trains_recurrence = False
    cell_options = ("nonlinearity", "spectral_radius")
    native_type = None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        spectral_radius: float = 0.9,
        **options,
    ) -> None:
        if not spectral_radius > 0:
            raise ValueError(f"spectral_radius must be > 0, got {spectral_radius}")
        self.spectral_radius = spectral_radius
        super().__init__(input_size, hidden_size, nonlinearity, **options)

    def reset_parameters(self) -> None:
        """The input weights by ``init``; a fresh reservoir scaled to ``spectral_radius``."""
        super().reset_parameters()
        with torch.no_grad():
            reservoir = torch.randn(self.hidden_size, self.hidden_size, dtype=torch.float64)
            radius = torch.linalg.eigvals(reservoir).abs().max()
            self.weight_aa.copy_(reservoir * (self.spectral_radius / radius))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, spectral_radius={self.spectral_radius}"
