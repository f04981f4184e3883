"""The training loop: truncated backpropagation through time with gradient clipping.

One epoch walks the `batch_size` parallel streams of the training text window by window (see
`lmtrain.batching` for the layout). The hidden state starts at zero each epoch, is carried from
one window to the next and detached between them. Every step clips the global gradient norm and
logs the norm measured before clipping. Every `eval_interval` steps, and at the end, the model is
evaluated on the validation text (with carried state, as in the literature), a sample is
generated, and `last.pt` (and `best.pt` when validation loss improved) are written atomically.

Everything needed to continue a run exactly is in `last.pt`: weights, optimizer, step, epoch,
window, carried hidden state and every random generator's state. `resume=True` picks it up.
SIGINT (Ctrl-C) and SIGTERM stop the run after the current step and save `last.pt` first.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lmtrain.batching import State, batchify, detach_state, get_batch, num_windows, window_starts
from lmtrain.checkpoint import load_checkpoint, make_checkpoint, restore_config, save_checkpoint
from lmtrain.config import Config, config_to_yaml
from lmtrain.corpus import Corpus, load_corpus, unigram_perplexity
from lmtrain.errors import ConfigError, DataError, LmtrainError, TrainingError
from lmtrain.metrics import MetricLogger, NullLogger, TensorBoardLogger
from lmtrain.model import RNNLanguageModel
from lmtrain.rundir import RunDirectory
from lmtrain.sampling import sample_text

LN2 = math.log(2.0)


class TrainingInterrupted(LmtrainError):
    """SIGINT or SIGTERM stopped the run; `last.pt` holds everything needed to resume."""

    exit_code = 130


@dataclass
class Evaluation:
    """Validation (or test) metrics: mean cross-entropy per token, in nats."""

    loss: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def bits_per_token(self) -> float:
        return self.loss / LN2


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    steps: int
    seconds: float
    tokens_per_second: float
    best_valid_loss: float
    final_valid: Evaluation
    unigram_perplexity: float
    tokenizer_kind: str


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is available; use train.device=cpu or auto")
    return torch.device(name)


def build_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
        )
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def rng_states() -> dict:
    """Every random generator training draws from (dropout, and Python's for completeness)."""
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def check_corpus_size(corpus: Corpus, config: Config) -> None:
    """Refuse splits too short for one training window or one evaluation window."""
    need_train = (config.train.bptt + 1) * config.train.batch_size
    if corpus.train.numel() < need_train:
        raise DataError(
            f"the training text has {corpus.train.numel()} tokens, fewer than one batch of windows needs "
            f"((bptt + 1) x batch_size = {need_train}); use more text or lower train.batch_size / train.bptt"
        )
    need_valid = 2 * config.train.eval_batch_size
    if corpus.valid.numel() < need_valid:
        raise DataError(
            f"the validation text has {corpus.valid.numel()} tokens, fewer than evaluation needs "
            f"(2 x eval_batch_size = {need_valid}); use more text or lower train.eval_batch_size"
        )


@torch.no_grad()
def evaluate(model: RNNLanguageModel, ids: torch.Tensor, batch_size: int, bptt: int) -> Evaluation:
    """Mean cross-entropy of `ids`, read as `batch_size` streams with the state carried across windows."""
    was_training = model.training
    model.eval()
    device = model.decoder.weight.device
    source = batchify(ids, batch_size).to(device)
    state = model.initial_state(source.size(1), device)
    total_loss, total_tokens = 0.0, 0
    for i in window_starts(source, bptt):
        inputs, targets = get_batch(source, i, bptt)
        loss, state = model.language_model_loss(inputs, targets, state, reduction="sum")
        total_loss += float(loss)
        total_tokens += targets.numel()
    model.train(was_training)
    return Evaluation(loss=total_loss / total_tokens, tokens=total_tokens)


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Turn SIGINT/SIGTERM into a request to stop at the next step boundary.

    Yields a function that says whether a stop was requested. A second Ctrl-C stops at once.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum, frame):
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Trainer:
    """Holds a run's model, optimizer and progress; `fit()` trains it to the configured limit."""

    def __init__(
        self,
        config: Config,
        run: RunDirectory,
        report: Callable[[str], None] = tqdm.write,
        show_progress: bool = True,
        logger: MetricLogger | None = None,
    ):
        self.config = config
        self.run = run
        self.report = report
        self.show_progress = show_progress
        self.logger = logger
        self.device = resolve_device(config.train.device)
        torch.manual_seed(config.train.seed)
        random.seed(config.train.seed)
        self.corpus = load_corpus(config.data)
        check_corpus_size(self.corpus, config)
        self.tokenizer = self.corpus.tokenizer
        self.train_data = batchify(self.corpus.train, config.train.batch_size).to(self.device)
        self.windows_per_epoch = num_windows(self.train_data, config.train.bptt)
        self.model = RNNLanguageModel.from_config(self.tokenizer.vocab_size, config.model).to(self.device)
        self.optimizer = build_optimizer(self.model, config)
        self.step = 0
        self.epoch = 0
        self.window = 0  # index of the next window within the epoch
        self.carried: State | None = None
        self.best_valid_loss = math.inf
        self.last_valid: Evaluation | None = None

    # ----- checkpoints -------------------------------------------------------------------------

    def checkpoint(self) -> dict:
        progress = {
            "step": self.step,
            "epoch": self.epoch,
            "window": self.window,
            "best_valid_loss": self.best_valid_loss,
            "valid_loss": self.last_valid.loss if self.last_valid else None,
        }
        return make_checkpoint(
            self.config, self.tokenizer, self.model, self.optimizer, progress, self.carried, rng_states()
        )

    def resume_from(self, path: Path) -> None:
        """Continue exactly where `path` (a `last.pt`) stopped."""
        checkpoint = load_checkpoint(path)
        saved = restore_config(checkpoint)
        if saved.model != self.config.model or saved.data != self.config.data:
            raise ConfigError(
                f"cannot resume from {path}: its model or data config differs from this config; "
                "resume with the same model and data sections (training limits may change)"
            )
        if checkpoint["tokenizer"] != self.tokenizer.to_dict():
            raise DataError(f"cannot resume from {path}: the training text changed since it was written")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        progress = checkpoint["progress"]
        self.step, self.epoch, self.window = progress["step"], progress["epoch"], progress["window"]
        self.best_valid_loss = progress["best_valid_loss"]
        if checkpoint["carried_state"] is not None:
            self.carried = [tuple(t.to(self.device) for t in layer) for layer in checkpoint["carried_state"]]
        restore_rng_states(checkpoint["rng"])

    def save(self, improved: bool) -> None:
        checkpoint = self.checkpoint()
        save_checkpoint(checkpoint, self.run.last)
        if improved:
            save_checkpoint(checkpoint, self.run.best)

    # ----- training ------------------------------------------------------------------------------

    def total_steps(self) -> int:
        limits = []
        if self.config.train.epochs is not None:
            limits.append(self.config.train.epochs * self.windows_per_epoch)
        if self.config.train.max_steps is not None:
            limits.append(self.config.train.max_steps)
        return min(limits)

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        """One optimizer step on one window; returns (loss, gradient norm before clipping)."""
        self.model.train()
        state = detach_state(self.carried) if self.carried is not None else None
        loss, state = self.model.language_model_loss(inputs, targets, state)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss.item()} at step {self.step + 1}; the last good checkpoint "
                f"in {self.run.path} is kept; lower train.lr or set train.clip_norm"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.config.train.clip_norm if self.config.train.clip_norm is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.carried = detach_state(state)
        return loss.item(), grad_norm.item()

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The remaining windows of training, advancing epoch and window counters as they go."""
        epochs = self.config.train.epochs
        while epochs is None or self.epoch < epochs:
            starts = list(window_starts(self.train_data, self.config.train.bptt))
            while self.window < len(starts):
                yield get_batch(self.train_data, starts[self.window], self.config.train.bptt)
            self.epoch += 1
            self.window = 0
            self.carried = None  # each epoch starts from a zero state

    def evaluate_and_save(self, logger: MetricLogger) -> None:
        train = self.config.train
        valid = evaluate(self.model, self.corpus.valid, train.eval_batch_size, train.bptt)
        improved = valid.loss < self.best_valid_loss
        if improved:
            self.best_valid_loss = valid.loss
        self.last_valid = valid
        metrics = {"valid/loss": valid.loss, "valid/perplexity": valid.perplexity}
        line = f"step {self.step} | valid loss {valid.loss:.4f} | ppl {valid.perplexity:.2f}"
        if self.tokenizer.kind == "char":
            metrics["valid/bits_per_char"] = valid.bits_per_token
            line += f" | bpc {valid.bits_per_token:.4f}"
        logger.scalars(self.step, metrics)
        self.save(improved)
        self.report(line + (" | saved best.pt" if improved else ""))
        if self.config.log.sample_length > 0:
            text = sample_text(
                self.model,
                self.tokenizer,
                self.config.log.sample_length,
                self.config.log.sample_temperature,
                seed=train.seed + self.step,
            )
            logger.text(self.step, "sample", text)

    def fit(self) -> TrainResult:
        train, log = self.config.train, self.config.log
        total = self.total_steps()
        logger = self.logger or (
            TensorBoardLogger(self.run.path, purge_step=self.step + 1) if log.tensorboard else NullLogger()
        )
        tokens_per_step = train.batch_size * train.bptt
        bar = tqdm(
            total=total, initial=self.step, disable=not self.show_progress, unit="step", dynamic_ncols=True
        )
        started = time.perf_counter()
        interval_start, interval_losses, tokens_seen = started, [], 0
        evaluated_at = -1
        try:
            with stop_on_signals() as stop_requested:
                for inputs, targets in self.batches():
                    if self.step >= total:
                        break
                    loss, grad_norm = self.train_step(inputs, targets)
                    self.step += 1
                    self.window += 1
                    tokens_seen += targets.numel()
                    interval_losses.append(loss)
                    bar.update(1)
                    if self.step % log.log_interval == 0:
                        now = time.perf_counter()
                        mean_loss = sum(interval_losses) / len(interval_losses)
                        speed = len(interval_losses) * tokens_per_step / max(now - interval_start, 1e-9)
                        logger.scalars(
                            self.step,
                            {
                                "train/loss": mean_loss,
                                "train/perplexity": math.exp(min(mean_loss, 700.0)),
                                "train/grad_norm": grad_norm,
                                "train/lr": self.optimizer.param_groups[0]["lr"],
                                "train/tokens_per_second": speed,
                            },
                        )
                        bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{speed:,.0f}")
                        interval_start, interval_losses = now, []
                    if self.step % train.eval_interval == 0:
                        self.evaluate_and_save(logger)
                        evaluated_at = self.step
                    if stop_requested():
                        self.save(improved=False)
                        raise TrainingInterrupted(
                            f"training stopped by a signal at step {self.step}; saved {self.run.last}"
                        )
            if evaluated_at != self.step:
                self.evaluate_and_save(logger)
        finally:
            bar.close()
            logger.close()
        seconds = time.perf_counter() - started
        return TrainResult(
            run_dir=self.run.path,
            steps=self.step,
            seconds=seconds,
            tokens_per_second=tokens_seen / max(seconds, 1e-9),
            best_valid_loss=self.best_valid_loss,
            final_valid=self.last_valid,
            unigram_perplexity=unigram_perplexity(
                self.corpus.train, self.corpus.valid, self.tokenizer.vocab_size
            ),
            tokenizer_kind=self.tokenizer.kind,
        )


def train(
    config: Config,
    overwrite: bool = False,
    resume: bool = False,
    report: Callable[[str], None] = tqdm.write,
    show_progress: bool = True,
    logger: MetricLogger | None = None,
) -> TrainResult:
    """Train a model as `config` says, in `config.run_dir`; the library entry point of `lmtrain train`.

    `logger` replaces the TensorBoard logger the config asks for (tests pass a recording one).
    """
    with RunDirectory.open(Path(config.run_dir), overwrite=overwrite, resume=resume) as run:
        trainer = Trainer(config, run, report=report, show_progress=show_progress, logger=logger)
        if resume:
            trainer.resume_from(run.last)
            report(f"resumed from {run.last} at step {trainer.step} (epoch {trainer.epoch + 1})")
        run.write_config(config_to_yaml(config))
        return trainer.fit()
