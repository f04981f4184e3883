"""Checkpoints: a safe round trip, atomic writes, and a clear refusal of every bad file."""

import random
from pathlib import Path

import pytest
import torch

import lmtrain.checkpoint as checkpoint_module
from lmtrain.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    load_checkpoint,
    make_checkpoint,
    restore_model,
    save_checkpoint,
)
from lmtrain.config import ModelConfig, config_from_dict
from lmtrain.data.tokenizer import WordTokenizer
from lmtrain.errors import CheckpointError
from lmtrain.model import RNNLanguageModel

MODEL = {"cell": "lstm", "embedding_size": 4, "hidden_size": 5, "num_layers": 2, "dropout": 0.0}


def _write_marker(path: str) -> None:
    """What a malicious checkpoint would run on load: here, only a harmless file write."""
    Path(path).write_text("code ran while loading")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


class _AdamLikeOptimizer:
    """The state_dict layout of torch.optim.Adam after one step (int keys, tensors, a tuple of betas).

    Building a real optimizer imports torch._dynamo, which alone costs about 2 s; the layout is what
    the checkpoint has to carry through `weights_only=True`.
    """

    def __init__(self, params: list[torch.Tensor]):
        self.params = params

    def state_dict(self) -> dict:
        return {
            "state": {
                i: {
                    "step": torch.tensor(1.0),
                    "exp_avg": torch.ones_like(p),
                    "exp_avg_sq": torch.ones_like(p),
                }
                for i, p in enumerate(self.params)
            },
            "param_groups": [
                {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "params": list(range(len(self.params)))}
            ],
        }


def _checkpoint() -> dict:
    torch.manual_seed(0)
    config = config_from_dict(
        {"run_dir": "runs/tiny", "data": {"train": "t.txt", "valid": "v.txt"}, "model": MODEL}
    )
    tokenizer = WordTokenizer.build(["the cat sat", "the dog sat"])
    model = RNNLanguageModel(tokenizer.vocab_size, config.model)
    _, state = model(torch.tensor([[2, 3], [4, 1]]))  # the carried state after one window
    optimizer = _AdamLikeOptimizer(list(model.parameters()))
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    progress = {"step": 1, "epoch": 0, "window": 1, "best_valid_loss": 1.5, "valid_loss": 1.5}
    return make_checkpoint(config, tokenizer, model, optimizer, progress, state, rng)


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "last.pt"
    save_checkpoint(_checkpoint(), path)
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    return str(info.value)


def test_checkpoint_loads_with_weights_only(saved):
    raw = torch.load(saved, weights_only=True)
    assert raw["format"] == FORMAT
    assert raw["format_version"] == FORMAT_VERSION
    assert raw["tokenizer"] == {"kind": "word", "tokens": ["<unk>", "<eos>", "sat", "the", "cat", "dog"]}
    assert raw["progress"] == {"step": 1, "epoch": 0, "window": 1, "best_valid_loss": 1.5, "valid_loss": 1.5}
    assert raw["config"]["run_dir"] == "runs/tiny"
    assert raw["config"]["model"] == ModelConfig(**MODEL).model_dump()  # every default spelled out
    assert raw["config"]["model"].items() >= {**MODEL, "nonlinearity": "tanh"}.items()
    assert [len(layer) for layer in raw["carried_state"]] == [2, 2]  # (a, c) of two lstm layers
    assert raw["carried_state"][0][0].shape == (2, 5)
    assert not raw["carried_state"][0][0].requires_grad
    assert raw["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert sorted(raw["optimizer"]["state"]) == list(range(len(raw["model"])))
    assert torch.equal(raw["optimizer"]["state"][0]["exp_avg"], torch.ones(6, 4))  # embedding [V, E]
    assert isinstance(raw["rng"]["torch"], torch.Tensor)
    assert raw["rng"]["python"][0] == 3  # random.getstate()'s version


def test_round_trip_restores_model_tokenizer_and_config(saved):
    original = _checkpoint()
    model, tokenizer, config = restore_model(load_checkpoint(saved))
    assert not model.training
    expected = original["model"]
    assert model.state_dict().keys() == expected.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert isinstance(tokenizer, WordTokenizer)
    assert tokenizer.tokens == original["tokenizer"]["tokens"]
    assert config.model_dump(mode="json") == original["config"]
    # The restored model computes exactly what the saved one did.
    reference = RNNLanguageModel(tokenizer.vocab_size, config.model)
    reference.load_state_dict(expected)
    tokens = torch.tensor([[2, 3, 4], [1, 5, 0]])
    assert torch.equal(model(tokens)[0], reference.eval()(tokens)[0])


def test_save_leaves_no_temporary_file(tmp_path, saved):
    save_checkpoint(_checkpoint(), saved)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_failed_save_keeps_previous_file_and_removes_temporary(tmp_path, saved, monkeypatch):
    before = saved.read_bytes()

    def disk_full(obj, file):
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint({"format": FORMAT}, saved)
    message = str(info.value)
    assert message.startswith(f"could not write checkpoint {saved}: No space left on device;")
    assert "the previous checkpoint is unchanged" in message
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_interrupted_save_removes_temporary_and_reraises(tmp_path, saved, monkeypatch):
    before = saved.read_bytes()

    def interrupted(obj, file):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"format": FORMAT}, saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_refuses_missing_path(tmp_path):
    path = tmp_path / "missing.pt"
    assert _refusal(path) == f"checkpoint {path} does not exist; pass a .pt file written by `lmtrain train`"


def test_refuses_directory(tmp_path):
    assert _refusal(tmp_path) == f"checkpoint {tmp_path} is a directory; pass a .pt file"
    (tmp_path / "best.pt").write_bytes(b"x")
    assert _refusal(tmp_path) == f"checkpoint {tmp_path} is a directory; pass a .pt file (e.g. best.pt in it)"


def test_refuses_zero_byte_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    assert "is empty (0 bytes)" in _refusal(path)


def test_refuses_truncated_checkpoint(tmp_path, saved):
    data = saved.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    assert _refusal(path).startswith(f"checkpoint {path} is truncated or corrupt and cannot be read;")


def test_refuses_zip_magic_followed_by_garbage(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"PK\x03\x04" + random.Random(1).randbytes(1000))
    assert "is truncated or corrupt" in _refusal(path)


def test_refuses_random_bytes(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    assert f"checkpoint {path}" in _refusal(path)


@pytest.mark.parametrize(
    "data", [b"hello world\n", b"the cat sat on the mat\n"], ids=["KeyError", "IndexError"]
)
def test_refuses_text_file(tmp_path, data):
    path = tmp_path / "notes.pt"
    path.write_bytes(data)
    assert f"checkpoint {path}" in _refusal(path)


def test_refuses_plain_tensor(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    assert _refusal(path) == f"{path} is not an lmtrain checkpoint (it holds no lmtrain format marker)"


def test_refuses_another_tools_dict(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"weight": torch.ones(2, 2)}, "epoch": 3}, path)
    assert _refusal(path) == f"{path} is not an lmtrain checkpoint (it holds no lmtrain format marker)"


def test_refuses_newer_format_version(tmp_path):
    checkpoint = _checkpoint()
    checkpoint["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "future.pt"
    save_checkpoint(checkpoint, path)
    message = _refusal(path)
    assert (
        f"has format version {FORMAT_VERSION + 1}, newer than this lmtrain reads ({FORMAT_VERSION})"
        in message
    )
    assert "upgrade lmtrain" in message


def test_refuses_incomplete_checkpoint(tmp_path):
    checkpoint = _checkpoint()
    del checkpoint["model"], checkpoint["tokenizer"]
    path = tmp_path / "incomplete.pt"
    save_checkpoint(checkpoint, path)
    assert _refusal(path) == f"checkpoint {path} is incomplete: missing tokenizer, model"


def test_restore_refuses_weights_that_do_not_fit_the_config(saved):
    checkpoint = load_checkpoint(saved)
    checkpoint["config"]["model"]["hidden_size"] = 6
    with pytest.raises(CheckpointError, match="the checkpoint's weights do not fit its model config"):
        restore_model(checkpoint)


def test_restore_refuses_an_invalid_stored_config(saved):
    checkpoint = load_checkpoint(saved)
    checkpoint["config"]["train"]["lr"] = -1
    with pytest.raises(CheckpointError, match=r"the checkpoint's config has 1 problem\(s\): train.lr"):
        restore_model(checkpoint)


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    evil = _checkpoint()
    evil["model"] = _RunsCodeWhenUnpickled(marker)
    torch.save(evil, path)

    message = _refusal(path)
    assert message.startswith(f"checkpoint {path} was refused:")
    assert "loading it could run code" in message
    assert not marker.exists()

    # The payload is live: an unsafe load does run it, so the refusal above is what kept it out.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran while loading"


def test_a_format_1_checkpoint_is_upgraded_on_load(tmp_path):
    """lmtrain 0.1.0 wrote `train.clip_norm` and a window index; both still load, sample and resume."""
    old = _checkpoint()
    old["format_version"] = 1
    train = old["config"]["train"]
    del train["clip"], train["schedule"], train["on_nonfinite"], train["precision"]
    del train["variable_bptt"], train["bptt_std"]
    train["clip_norm"] = 0.25
    del old["config"]["resume"], old["config"]["log"]["grad_flow"], old["config"]["log"]["quiet"]
    old["progress"] = {"step": 7, "epoch": 0, "window": 3, "best_valid_loss": 1.5, "valid_loss": 1.5}
    del old["schedule"]
    path = tmp_path / "old.pt"
    save_checkpoint(old, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["format_version"] == FORMAT_VERSION
    assert checkpoint["progress"]["position"] == 3 * 35  # window x bptt
    _, _, config = restore_model(checkpoint)
    assert config.train.clip.max_norm == 0.25
