"""The shared base of the recurrent layers: parameters, initialisation, state creation, shape checks and
the time loop.

A layer runs a whole BPTT window per call, time-major:

    layer(x: [T, B, input_size], state) -> (y: [T, B, H], state)

The notes write every gate as one product with the stacked matrix, ``W_a [a<t-1>, x<t>] + b_a``. We store
``W_a`` as its two halves, ``weight_aa`` (acting on ``a<t-1>``) and ``weight_ax`` (acting on ``x<t>``), so
that ``W_a = torch.cat([weight_aa, weight_ax], dim=1)``. The product is the same, but the input half does
not depend on the previous step: ``forward`` computes it for all T steps in one matrix product before the
loop, and only the recurrent half ``weight_aa @ a<t-1>`` stays inside it.

Subclasses say how many gate blocks they stack (``num_gates``), how many tensors their state holds
(``num_states``) and implement ``_cell``, one time step given the precomputed input projection.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmtrain.model import backends
from lmtrain.model.backends import IMPLS, State, Step

INITS = ("default", "xavier", "orthogonal", "he", "identity")
"""Weight initialisation schemes, by the name a config uses (see ``RecurrentLayer.reset_parameters``)."""

INITIAL_STATES = ("zeros", "random", "learned")
"""How the state before the first step of a sequence is made (see ``RecurrentLayer.initial_state``)."""


class RecurrentLayer(nn.Module):
    """One unidirectional recurrent layer over a time-major window.

    Parameters, with G = ``num_gates`` gate blocks stacked along the rows in the order the subclass
    documents:

    - ``weight_aa``: ``[G*H, H]``, the recurrent half of the notes' ``W_a``.
    - ``weight_ax``: ``[G*H, input_size]``, the input half of ``W_a``.
    - ``bias``: ``[G*H]``, the stacked ``b`` of every gate.
    - ``initial_a`` (and ``initial_c`` for lstm): ``[H]``, only with ``initial_state="learned"``.

    ``W_a = torch.cat([weight_aa, weight_ax], dim=1)`` is the notes' stacked matrix ``[G*H, H + input_size]``
    acting on ``[a<t-1>, x<t>]``; keeping the halves apart lets the input half be computed once per window.

    Args:
        init: the weight initialisation scheme, one of ``INITS`` (see ``reset_parameters``).
        initial_state: ``zeros``, ``random`` or ``learned`` (see ``initial_state``).
        initial_state_scale: the standard deviation of the ``random`` initial state.
        impl: which backend runs a window: ``auto``, ``reference``, ``native`` or ``fused`` (``custom`` is
            another name for ``fused``); ``lmtrain.model.backends`` says what each is, and ``auto``'s rule.
    """

    num_gates: int = 1
    """G, the number of ``[H, .]`` gate blocks stacked in the weights."""

    num_states: int = 1
    """How many tensors the state holds: 1 for rnn, gru and esn (``a``), 2 for lstm (``a``, ``c``)."""

    state_names: tuple[str, ...] = ("a",)
    """What each tensor of the state is, in order (``num_states`` of them); used in error messages."""

    trains_recurrence: bool = True
    """False for the echo state network, whose ``weight_aa`` is a fixed buffer instead of a parameter."""

    cell_options: tuple[str, ...] = ()
    """The constructor's keyword options of this cell alone, beyond the sizes (passed by ``build_layer``)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        init: str = "default",
        initial_state: str = "zeros",
        initial_state_scale: float = 0.1,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"{name} needs input_size >= 1 and hidden_size >= 1, "
                f"got input_size={input_size}, hidden_size={hidden_size}"
            )
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        if initial_state not in INITIAL_STATES:
            raise ValueError(
                f"unknown initial_state {initial_state!r}; choose one of: {', '.join(INITIAL_STATES)}"
            )
        if init == "identity" and (self.num_gates != 1 or not self.trains_recurrence):
            has = f"{self.num_gates} gates" if self.trains_recurrence else "a fixed reservoir"
            raise ValueError(
                f"init='identity' is the IRNN initialisation of the plain rnn's recurrent matrix; "
                f"{name} has {has}"
            )
        if initial_state_scale < 0:
            raise ValueError(f"initial_state_scale must be >= 0, got {initial_state_scale}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; choose one of: {', '.join(IMPLS)}")
        if impl == "native" and self.native_type is None:
            raise ValueError(
                f"impl='native' needs a torch module computing the same function; {name} has none"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.init = init
        self.initial_state_mode = initial_state
        self.initial_state_scale = initial_state_scale
        self.impl = impl
        self.preferred_backend: str | None = None  # auto's choice where it timed the candidates
        factory = {"device": device, "dtype": dtype}
        rows = self.num_gates * hidden_size
        recurrent = torch.empty(rows, hidden_size, **factory)
        if self.trains_recurrence:
            self.weight_aa = nn.Parameter(recurrent)
        else:
            self.register_buffer("weight_aa", recurrent)
        self.weight_ax = nn.Parameter(torch.empty(rows, input_size, **factory))
        self.bias = nn.Parameter(torch.empty(rows, **factory))
        self._register_extra_parameters(factory)
        if initial_state == "learned":
            for state_name in self.state_names:
                self.register_parameter(
                    f"initial_{state_name}", nn.Parameter(torch.zeros(hidden_size, **factory))
                )
        self.reset_parameters()

    def _register_extra_parameters(self, factory: dict) -> None:
        """Where a subclass creates parameters beyond the three above (before they are initialised)."""

    # ----- initialisation ------------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Initialise the weights by ``self.init``; learned initial states start at zero.

        - ``default``: every weight and bias from U(-1/sqrt(H), 1/sqrt(H)), PyTorch's default for its
          recurrent modules.
        - ``xavier``: each gate's stacked ``W = [W_aa | W_ax]`` (``[H, H + input_size]``) from Glorot &
          Bengio's (2010) uniform, bound sqrt(6 / (fan_in + fan_out)) with fan_in = H + input_size and
          fan_out = H; biases 0.
        - ``orthogonal``: as ``xavier``, but each gate's ``[H, H]`` recurrent block is a random orthogonal
          matrix (Saxe et al. 2014), whose singular values of 1 neither shrink nor grow ``a<t-1>``.
        - ``he``: each gate's stacked ``W`` from N(0, 2 / fan_in), fan_in = H + input_size (He et al. 2015,
          the initialisation the notes name against vanishing gradients); biases 0.
        - ``identity``: the IRNN of Le, Jaitly & Hinton (2015), for the plain rnn only: ``W_aa = I``,
          ``W_ax`` from N(0, 0.001^2), biases 0, so that a ReLU rnn starts by carrying ``a<t-1>`` unchanged.

        Subclasses adjust after this (the lstm's forget-gate bias, the esn's reservoir).
        """
        hidden, inputs = self.hidden_size, self.input_size
        with torch.no_grad():
            if self.init == "default":
                bound = 1.0 / math.sqrt(hidden)
                for tensor in (self.weight_aa, self.weight_ax, self.bias):
                    nn.init.uniform_(tensor, -bound, bound)
            elif self.init == "identity":
                self.weight_aa.copy_(torch.eye(hidden))
                nn.init.normal_(self.weight_ax, 0.0, 1e-3)
                self.bias.zero_()
            else:
                fan_in, fan_out = hidden + inputs, hidden
                for gate in range(self.num_gates):
                    rows = slice(gate * hidden, (gate + 1) * hidden)
                    stacked = torch.empty(hidden, hidden + inputs, dtype=self.weight_ax.dtype)  # the gate's W
                    if self.init == "he":
                        nn.init.normal_(stacked, 0.0, math.sqrt(2.0 / fan_in))
                    else:
                        bound = math.sqrt(6.0 / (fan_in + fan_out))
                        nn.init.uniform_(stacked, -bound, bound)
                    recurrent, from_input = stacked.split([hidden, inputs], dim=1)
                    if self.init == "orthogonal":
                        recurrent = nn.init.orthogonal_(torch.empty_like(recurrent))
                    self.weight_aa[rows] = recurrent
                    self.weight_ax[rows] = from_input
                self.bias.zero_()
            for state_name in self.state_names:
                initial = getattr(self, f"initial_{state_name}", None)
                if initial is not None:
                    initial.zero_()

    # ----- state ---------------------------------------------------------------------------------

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """The state before the first step of a sequence, each tensor ``[batch_size, H]``.

        - ``zeros``: zeros, as the notes start ``a<0>``.
        - ``random``: in training mode, drawn fresh from N(0, initial_state_scale^2) each time (torch's
          global generator, like dropout), a regulariser that keeps the model from relying on one exact
          starting point; in eval mode zeros, the distribution's mean, so evaluation and sampling are
          deterministic.
        - ``learned``: a trained vector per state tensor (``initial_a``, ``initial_c``), the same for every
          sequence of the batch; it starts at zero.

        Device and dtype default to the weights'.
        """
        device = self.weight_ax.device if device is None else device
        dtype = self.weight_ax.dtype if dtype is None else dtype
        shape = (batch_size, self.hidden_size)
        if self.initial_state_mode == "learned":
            return tuple(
                getattr(self, f"initial_{name}").to(device=device, dtype=dtype).expand(shape)
                for name in self.state_names
            )
        if self.initial_state_mode == "random" and self.training:
            return tuple(
                torch.randn(shape, device=device, dtype=dtype) * self.initial_state_scale
                for _ in self.state_names
            )
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in self.state_names)

    # ----- running -------------------------------------------------------------------------------

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run a whole window.

        Args:
            x: ``[T, B, input_size]``, time-major.
            state: the state before the first step (see ``State``); None means ``initial_state``.

        Returns:
            ``y``: ``[T, B, H]``, the output ``a<t>`` of every step, and the state after the last step.
        """
        if x.dim() != 3 or x.shape[0] < 1 or x.shape[2] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects input of shape [T >= 1, B, input_size={self.input_size}], "
                f"got {list(x.shape)}"
            )
        state = self._checked_state(state, x)
        backend = backends.resolve_backend(self, x)
        if backend == "native":
            return self._run_native(x, state)
        if backend == "fused":
            return self._run_fused(x, state)
        return self._run_reference(x, state)

    def backend(self, x: Tensor) -> str:
        """The backend that runs this layer on windows like ``x``: ``reference``, ``native`` or ``fused``."""
        return backends.resolve_backend(self, x)

    def _run_fused(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The window on the fast layer's function for this cell (``lmtrain.fast``), or the reference where
        it has none."""
        window = backends.fused_window(self)
        return self._run_reference(x, state) if window is None else window(self, x, state)

    def _run_reference(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The window through ``_cell`` step by step, differentiated by autograd: the reference backend, the
        definition that every other backend is tested against."""
        # The input half of W_a [a<t-1>, x<t>] + b for every step at once.
        x_proj = F.linear(x, self.weight_ax, self.bias)  # [T, B, G*H]
        # Under autocast x_proj is bf16 while a carried state may be fp32: the window runs in x_proj's dtype.
        state = tuple(tensor.to(x_proj.dtype) for tensor in state)
        outputs = []
        for x_proj_t in x_proj.unbind(0):  # each [B, G*H]
            y_t, state = self._cell(x_proj_t, state)
            outputs.append(y_t)
        return torch.stack(outputs), state  # [T, B, H]

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run one time step, for generation: ``x_t`` ``[B, input_size]`` -> (``y_t`` ``[B, H]``, state).

        Computes exactly what one iteration of ``forward``'s loop computes.
        """
        if x_t.dim() != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}.step expects input of shape [B, input_size={self.input_size}], "
                f"got {list(x_t.shape)}"
            )
        state = self._checked_state(state, x_t)
        return self._cell(F.linear(x_t, self.weight_ax, self.bias), state)

    def inference_step(self, embedding: Tensor | None = None) -> Step:
        """``step`` for generation, with the weights laid out once for one token at a time.

        Returns ``step(x_t, state) -> (y_t, state)`` computing what ``step`` computes, without shape checks
        and without autograd (the weights are detached: call it under ``torch.inference_mode``). It reads
        the weights as they are now; make a new one after changing them.

        With ``embedding`` (``[V, input_size]``, the model's embedding matrix), the input half of the
        pre-activation is computed once for every token, ``table = embedding W_ax^T + b`` (``[V, G*H]``),
        and ``step`` takes token ids ``[B]`` instead of vectors: one row lookup replaces a matrix product
        per step. Worth it when ``V`` is not larger than ``input_size`` (the table is then no larger than
        ``W_ax``), as for character models.

        The fast layer's step where it has one for this cell (``lmtrain.model.backends``), else
        ``reference_inference_step``.
        """
        fast = backends.generation_step(self, embedding)
        return fast if fast is not None else self.reference_inference_step(embedding)

    def reference_inference_step(self, embedding: Tensor | None = None) -> Step:
        """``inference_step`` in plain torch: ``_cell`` on the input half computed by a table row (with
        ``embedding``) or by one matrix product."""
        weight_ax, bias = self.weight_ax.detach(), self.bias.detach()
        cell = self._cell
        if embedding is not None:
            table = F.linear(embedding.detach(), weight_ax, bias)  # [V, G*H]
            return lambda tokens, state: cell(table[tokens], state)
        return lambda x_t, state: cell(F.linear(x_t, weight_ax, bias), state)

    def _cell(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One step from ``x_proj_t = weight_ax @ x<t> + bias`` (``[B, G*H]``) and the previous state."""
        raise NotImplementedError

    def _checked_state(self, state: State | None, x: Tensor) -> State:
        """``initial_state`` when ``state`` is None; otherwise check it is a tuple of ``[B, H]`` tensors."""
        batch_size = x.shape[-2]
        if state is None:
            return self.initial_state(batch_size, device=x.device, dtype=x.dtype)
        name = type(self).__name__
        names = ", ".join(self.state_names)
        if not isinstance(state, tuple) or len(state) != self.num_states:
            got = f"a tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__
            raise ValueError(f"{name} expects its state as a tuple ({names}), got {got}")
        expected = [batch_size, self.hidden_size]
        for state_name, tensor in zip(self.state_names, state, strict=True):
            if not isinstance(tensor, Tensor) or list(tensor.shape) != expected:
                got = list(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(
                    f"{name} expects state {state_name} of shape [B={batch_size}, H={self.hidden_size}], "
                    f"got {got}"
                )
        return state

    def extra_repr(self) -> str:
        text = f"input_size={self.input_size}, hidden_size={self.hidden_size}"
        if self.init != "default":
            text += f", init={self.init!r}"
        if self.initial_state_mode != "zeros":
            text += f", initial_state={self.initial_state_mode!r}"
        if self.impl != "auto":
            text += f", impl={self.impl!r}"
        return text

    # ----- weight exchange with torch.nn.RNN / LSTM / GRU -----------------------------------------

    native_type: type[nn.RNNBase] | None = None
    """The torch module computing the same function (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``), or None."""

    def native_state_dict(self, index: int = 0) -> dict[str, Tensor]:
        """This layer's weights as layer ``index`` of a ``native_type`` module's state dict.

        Keys ``weight_ih_l{index}``, ``weight_hh_l{index}``, ``bias_ih_l{index}``, ``bias_hh_l{index}``;
        the tensors are copies, detached from ours.
        """
        self._require_native("native_state_dict")
        tensors = (t.detach().clone() for t in self._to_native_tensors())
        return dict(zip(_native_keys(index), tensors, strict=True))

    def load_native_state_dict(self, state_dict: dict[str, Tensor], index: int = 0) -> None:
        """Load layer ``index`` of a ``native_type`` module's state dict; missing biases count as zeros."""
        self._require_native("load_native_state_dict")
        weight_ih, weight_hh, bias_ih, bias_hh = _native_keys(index)
        for key in (weight_ih, weight_hh):
            if key not in state_dict:
                raise ValueError(
                    f"{type(self).__name__}.load_native_state_dict: no {key!r} in the state dict"
                )
        rows = self.num_gates * self.hidden_size
        expected = {weight_ih: [rows, self.input_size], weight_hh: [rows, self.hidden_size]}
        for key, shape in expected.items():
            if list(state_dict[key].shape) != shape:
                raise ValueError(
                    f"{type(self).__name__}.load_native_state_dict: {key} has shape "
                    f"{list(state_dict[key].shape)}, this layer needs {shape}"
                )
        zeros = torch.zeros(rows, dtype=state_dict[weight_ih].dtype, device=state_dict[weight_ih].device)
        with torch.no_grad():
            self._load_native_tensors(
                state_dict[weight_ih],
                state_dict[weight_hh],
                state_dict.get(bias_ih, zeros),
                state_dict.get(bias_hh, zeros),
            )

    def to_native(self) -> nn.RNNBase:
        """A one-layer, unidirectional, time-major ``native_type`` module computing the same function."""
        self._require_native("to_native")
        module = self.native_type(
            self.input_size,
            self.hidden_size,
            **self._native_options(),
            device=self.weight_ax.device,
            dtype=self.weight_ax.dtype,
        )
        module.load_state_dict(self.native_state_dict(0))
        return module

    @classmethod
    def from_native(cls, module: nn.RNNBase, index: int = 0) -> RecurrentLayer:
        """The layer computing the same function as layer ``index`` of a torch ``native_type`` module.

        The module may have any number of layers; it must be unidirectional and (lstm) have no
        ``proj_size``. ``batch_first`` does not change the weights, so it is accepted; our layer is
        time-major regardless. Torch's state carries a leading ``num_layers`` dimension; ours does not.
        """
        if cls.native_type is None:
            raise ValueError(f"{cls.__name__} has no torch counterpart to convert from")
        if not isinstance(module, cls.native_type):
            raise ValueError(
                f"{cls.__name__}.from_native expects an nn.{cls.native_type.__name__}, "
                f"got {type(module).__name__}"
            )
        problems = []
        if module.bidirectional:
            problems.append("bidirectional=True (need False; a backward direction is a separate layer)")
        if getattr(module, "proj_size", 0):
            problems.append(f"proj_size={module.proj_size} (need 0)")
        if not 0 <= index < module.num_layers:
            problems.append(f"index={index} (the module has {module.num_layers} layer(s))")
        if problems:
            raise ValueError(f"{cls.__name__}.from_native cannot convert this module: " + "; ".join(problems))
        weight = getattr(module, f"weight_ih_l{index}")
        input_size = module.input_size if index == 0 else module.hidden_size
        layer = cls(
            input_size,
            module.hidden_size,
            **cls._options_from_native(module),
            device=weight.device,
            dtype=weight.dtype,
        )
        layer.load_native_state_dict(module.state_dict(), index)
        return layer

    def _run_native(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The window on torch's fused kernel for this cell (oneDNN on a CPU, cuDNN on CUDA), fed with this
        layer's own parameters: ``native_type``'s forward runs through ``torch.func.functional_call`` with
        ``_to_native_tensors()``, which are differentiable functions of our parameters, so gradients reach
        them as from ``_run_reference`` and checkpoints do not depend on ``impl``.

        The torch module is a template on the meta device (it holds no memory; every weight it uses is
        passed in), kept out of the parameters and the state dict.
        """
        template = self.__dict__.get("_native_template")
        if template is None:
            template = self.native_type(
                self.input_size, self.hidden_size, **self._native_options(), device="meta"
            )
            self.__dict__["_native_template"] = template
        weights = dict(zip(_native_keys(0), self._to_native_tensors(), strict=True))
        hx = tuple(tensor.to(x.dtype).unsqueeze(0).contiguous() for tensor in state)  # [1, B, H] each
        with warnings.catch_warnings():
            # cuDNN copies weights that are not one flat buffer into one at every call (cheap next to the
            # window) and warns about it; ours are separate parameters by design.
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            y, hx = torch.func.functional_call(template, weights, (x, hx if len(hx) == 2 else hx[0]))
        hx = hx if isinstance(hx, tuple) else (hx,)
        return y, tuple(tensor.squeeze(0) for tensor in hx)  # y: [T, B, H]; state tensors [B, H]

    def _require_native(self, method: str) -> None:
        if self.native_type is None:
            raise ValueError(f"{type(self).__name__} has no torch counterpart; {method} is not available")

    def _native_options(self) -> dict:
        """Constructor arguments of ``native_type`` beyond the sizes (e.g. the rnn's nonlinearity)."""
        return {}

    @classmethod
    def _options_from_native(cls, module: nn.RNNBase) -> dict:
        """Our constructor arguments beyond the sizes, read from a torch module."""
        return {}

    def _to_native_tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) in torch's layout.

        The default suits cells whose gate order is torch's: our single bias goes to ``bias_ih`` and
        ``bias_hh`` is zero, as both are added to the same pre-activation.
        """
        return self.weight_ax, self.weight_aa, self.bias, torch.zeros_like(self.bias)

    def _load_native_tensors(
        self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor
    ) -> None:
        """The inverse of ``_to_native_tensors`` (called under no_grad); torch's two biases sum into ours."""
        self.weight_ax.copy_(weight_ih)
        self.weight_aa.copy_(weight_hh)
        self.bias.copy_(bias_ih + bias_hh)


def _native_keys(index: int) -> tuple[str, str, str, str]:
    """Torch's state-dict names of layer ``index``'s weights and biases."""
    return tuple(f"{name}_l{index}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
