"""The batch layout of truncated backpropagation through time (TBPTT).

The token stream is cut into `B` equal parallel streams, laid side by side as the columns of a
time-major matrix (the remainder that does not fill a whole row is dropped). With the stream
0 1 2 ... 25 and B = 4 (tokens 24 and 25 are dropped):

    batchify(ids, 4)          stream: 0    1    2    3
                              t = 0 [ 0,   6,  12,  18 ]
                              t = 1 [ 1,   7,  13,  19 ]
                              ...
                              t = 5 [ 5,  11,  17,  23 ]      shape [N // B, B] = [6, 4]

The model reads it in windows of `bptt` rows. `get_batch(source, i, bptt)` returns the inputs
`x = source[i : i+T]` and the targets `y = source[i+1 : i+1+T]` (the next token of each stream),
with T = min(bptt, len(source) - 1 - i), so the last window may be shorter:

    bptt = 2:   window 0: x = rows 0-1, y = rows 1-2
                window 1: x = rows 2-3, y = rows 3-4
                window 2: x = row  4,   y = row  5

Because window k+1 continues exactly where window k stopped in every column, the hidden state at
the end of one window is the right initial state of the next: the trainer carries it over, and
`detach_state` cuts the graph so that gradients flow back at most `bptt` steps.

With `train.variable_bptt` the windows still tile the rows end to end, but each one's length T is
drawn by `WindowLengths` (Merity et al. 2017, AWD-LSTM): N(bptt, std) rounded, centred on bptt / 2
instead one time in 20, and never below 5. So a window does not always start at the same rows
epoch after epoch, and every token is sometimes near a window's start:

    bptt = 2, lengths drawn 3, 1, ...:   window 0: x = rows 0-2, y = rows 1-3
                                         window 1: x = row  3,   y = row  4
                                         window 2: x = row  4,   y = row  5

The trainer therefore keeps the row where the next window starts (`position`), not a window index,
and scales the learning rate by T / bptt so that a short window does not get a full-size step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

State = list[tuple[torch.Tensor, ...]]


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Lay a 1-D stream of ids out as `batch_size` parallel streams: `[N] -> [N // B, B]`."""
    rows = ids.numel() // batch_size
    # [rows * B] -> [B, rows] (each row one contiguous stream) -> [rows, B] time-major.
    return ids[: rows * batch_size].view(batch_size, rows).t().contiguous()


class TokenStreams:
    """The layout of `batchify`, read a window at a time from a 1-D id array that is never loaded whole.

    The array is usually the memory-mapped id cache of a split (`lmtrain.data.corpus`), stored as uint16
    or uint32, so training on a corpus larger than memory only ever holds the current window.
    Indexing rows (`streams[i : i + T]`) gives what `batchify(ids, B)[i : i + T]` gives: an int64
    tensor `[T, B]` on `device`. So `get_batch`, `window_starts` and `num_windows` take either.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, device: torch.device | str = "cpu"):
        rows = len(ids) // batch_size
        self.by_stream = ids[: rows * batch_size].reshape(batch_size, rows)  # [B, rows], a view
        self.device = torch.device(device)

    def size(self, dim: int) -> int:
        """`[rows, B]`, as the tensor `batchify` would return."""
        return (self.by_stream.shape[1], self.by_stream.shape[0])[dim]

    def to(self, device: torch.device | str) -> TokenStreams:
        """The same streams, with windows delivered on `device`."""
        return self._with(self.by_stream, device)

    def block(self, streams: slice) -> TokenStreams:
        """Only the streams `streams` (one process's share in data-parallel training), as
        `batchify(ids, B)[:, streams]` would give them."""
        return self._with(self.by_stream[streams], self.device)

    @staticmethod
    def _with(by_stream: np.ndarray, device: torch.device | str) -> TokenStreams:
        streams = TokenStreams.__new__(TokenStreams)
        streams.by_stream, streams.device = by_stream, torch.device(device)
        return streams

    def __getitem__(self, rows: slice) -> torch.Tensor:
        window = np.ascontiguousarray(self.by_stream[:, rows].T, dtype=np.int64)  # [B, T] -> [T, B]
        return torch.from_numpy(window).to(self.device)


def get_batch(source: torch.Tensor | TokenStreams, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs `[T, B]` starting at row `i` and their targets `[T, B]`, one row later."""
    length = min(bptt, source.size(0) - 1 - i)
    return source[i : i + length], source[i + 1 : i + 1 + length]


def window_starts(source: torch.Tensor | TokenStreams, bptt: int) -> Iterator[int]:
    """The first row of every window of one pass over `source`."""
    return iter(range(0, source.size(0) - 1, bptt))


def num_windows(source: torch.Tensor | TokenStreams, bptt: int) -> int:
    """How many windows one pass over `source` has."""
    return len(range(0, source.size(0) - 1, bptt))


def detach_state(state: State) -> State:
    """The same hidden state, cut from the graph of the window that produced it."""
    return [tuple(tensor.detach() for tensor in layer_state) for layer_state in state]


MIN_WINDOW = 5
"""Variable-length windows are never shorter than this (or than bptt, if bptt is smaller)."""

HALF_WINDOW_PROBABILITY = 0.05
"""How often a variable-length window is centred on bptt / 2 instead of bptt."""


class WindowLengths:
    """The length of each training window: always `bptt`, or drawn around it when `variable`.

    The draws come from a generator of their own, seeded with the run's seed, whose state goes into
    the checkpoint: a resumed run draws the same lengths as an uninterrupted one.
    """

    def __init__(self, bptt: int, variable: bool = False, std: float = 5.0, seed: int = 0):
        self.bptt = bptt
        self.variable = variable
        self.std = std
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> int:
        if not self.variable:
            return self.bptt
        halve = float(torch.rand((), generator=self.generator)) < HALF_WINDOW_PROBABILITY
        mean = self.bptt / 2 if halve else float(self.bptt)
        length = round(float(torch.normal(mean, self.std, (), generator=self.generator)))
        return max(min(MIN_WINDOW, self.bptt), length)

    def mean_length(self) -> float:
        """About how long a window is on average (for estimating the steps of an epoch)."""
        if not self.variable:
            return float(self.bptt)
        return max(float(min(MIN_WINDOW, self.bptt)), self.bptt * (1 - HALF_WINDOW_PROBABILITY / 2))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
