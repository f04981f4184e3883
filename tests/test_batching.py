"""The TBPTT batch layout, checked against the picture in lmtrain/batching.py's docstring."""

import numpy as np
import torch

from lmtrain.data.batching import TokenStreams, batchify, detach_state, get_batch, num_windows, window_starts

# The docstring's picture: the stream 0..25 in B = 4 columns; tokens 24 and 25 are dropped.
EXPECTED = torch.tensor(
    [
        [0, 6, 12, 18],
        [1, 7, 13, 19],
        [2, 8, 14, 20],
        [3, 9, 15, 21],
        [4, 10, 16, 22],
        [5, 11, 17, 23],
    ]
)


def _source() -> torch.Tensor:
    return batchify(torch.arange(26), 4)


def test_batchify_matches_the_docstring():
    source = _source()
    assert source.shape == (6, 4)
    assert source.dtype == torch.int64
    assert source.is_contiguous()
    assert torch.equal(source, EXPECTED)


def test_batchify_exact_fit_and_single_stream():
    assert torch.equal(batchify(torch.arange(6), 3), torch.tensor([[0, 2, 4], [1, 3, 5]]))
    assert torch.equal(batchify(torch.arange(3), 1), torch.tensor([[0], [1], [2]]))
    assert batchify(torch.arange(3), 4).shape == (0, 4)


def test_get_batch_windows_match_the_docstring():
    source = _source()
    expected = [
        (0, EXPECTED[0:2], EXPECTED[1:3]),
        (2, EXPECTED[2:4], EXPECTED[3:5]),
        (4, EXPECTED[4:5], EXPECTED[5:6]),  # the shorter final window
    ]
    for start, want_x, want_y in expected:
        x, y = get_batch(source, start, bptt=2)
        assert torch.equal(x, want_x)
        assert torch.equal(y, want_y)
    x, y = get_batch(source, 4, bptt=2)
    assert torch.equal(x, torch.tensor([[4, 10, 16, 22]]))
    assert torch.equal(y, torch.tensor([[5, 11, 17, 23]]))


def test_get_batch_targets_are_next_tokens_of_each_stream():
    x, y = get_batch(_source(), 0, bptt=5)
    assert torch.equal(y, x + 1)  # the stream is 0..25, so each column's next token is one more


def test_window_starts_and_num_windows():
    source = _source()
    assert list(window_starts(source, 2)) == [0, 2, 4]
    assert num_windows(source, 2) == 3
    assert list(window_starts(source, 5)) == [0]
    assert num_windows(source, 5) == 1
    assert list(window_starts(source, 3)) == [0, 3]
    assert num_windows(source, 3) == 2
    assert list(window_starts(source, 1)) == [0, 1, 2, 3, 4]
    assert num_windows(source, 1) == 5
    one_row = batchify(torch.arange(4), 4)
    assert list(window_starts(one_row, 2)) == []
    assert num_windows(one_row, 2) == 0


def test_windows_cover_every_target_once():
    source = _source()
    for bptt in (1, 2, 3, 4, 5, 7):
        targets = [get_batch(source, i, bptt)[1] for i in window_starts(source, bptt)]
        assert len(targets) == num_windows(source, bptt)
        assert torch.equal(torch.cat(targets), source[1:])


def test_consecutive_windows_continue_each_column():
    source = _source()
    for bptt in (1, 2, 3, 4):
        starts = list(window_starts(source, bptt))
        for k in range(len(starts) - 1):
            _, y_k = get_batch(source, starts[k], bptt)
            x_next, _ = get_batch(source, starts[k + 1], bptt)
            assert torch.equal(x_next[0], y_k[-1])


def test_detach_state_keeps_values_and_cuts_the_graph():
    leaf = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    state = [(leaf * 2,), (leaf * 3, leaf + 1)]  # one rnn/gru-like layer, one lstm-like layer
    detached = detach_state(state)

    assert [len(layer) for layer in detached] == [1, 2]
    for old_layer, new_layer in zip(state, detached, strict=True):
        assert isinstance(new_layer, tuple)
        for old, new in zip(old_layer, new_layer, strict=True):
            assert old.requires_grad
            assert not new.requires_grad
            assert new.grad_fn is None
            assert torch.equal(new, old)

    # A loss on the detached state cannot reach the leaf that produced it.
    weight = torch.ones(2, requires_grad=True)
    loss = sum((tensor * weight).sum() for layer in detached for tensor in layer)
    loss.backward()
    assert leaf.grad is None
    assert torch.equal(weight.grad, torch.tensor([11.0, 8.0]))  # column sums of 2L + 3L + (L+1)


def test_token_streams_read_from_a_memory_map_give_the_windows_of_batchify(tmp_path):
    ids = np.arange(1000, dtype=np.uint16) * 7 % 65535
    ids.tofile(tmp_path / "ids.bin")
    mapped = np.memmap(tmp_path / "ids.bin", dtype=np.uint16, mode="r")
    for batch_size in (1, 3, 4, 7):
        streams = TokenStreams(mapped, batch_size)
        reference = batchify(torch.from_numpy(ids.astype(np.int64)), batch_size)
        assert (streams.size(0), streams.size(1)) == tuple(reference.shape)
        assert num_windows(streams, 9) == num_windows(reference, 9)
        for i in window_starts(streams, 9):
            for got, expected in zip(get_batch(streams, i, 9), get_batch(reference, i, 9), strict=True):
                assert got.dtype == torch.int64 and torch.equal(got, expected)
    assert isinstance(streams.by_stream.base, np.memmap | np.ndarray)  # a view, nothing copied


def test_token_streams_deliver_windows_on_their_device():
    streams = TokenStreams(np.arange(26, dtype=np.uint32), 4).to("meta")
    assert streams[0:2].device.type == "meta" and streams[0:2].shape == (2, 4)


def test_a_block_of_token_streams_is_those_columns_of_batchify():
    ids = np.arange(103, dtype=np.uint16)
    reference = batchify(torch.arange(103), 8)
    for block in (slice(0, 4), slice(4, 8), slice(2, 3), slice(8, 8)):
        streams = TokenStreams(ids, 8).block(block)
        assert (streams.size(0), streams.size(1)) == tuple(reference[:, block].shape)
        assert torch.equal(streams[3:9], reference[3:9, block])
