"""The training loop: truncated backpropagation through time, clipping, schedules, evaluation.

One epoch walks the `batch_size` parallel streams of the training text window by window (see
`lmtrain.data.batching` for the layout; windows are `bptt` long, or drawn around it with
`variable_bptt`). Under torchrun each process trains its own block of the streams and
DistributedDataParallel averages the gradients (see `lmtrain.training.distributed`). The hidden state
starts at zero each epoch, is carried from one window to the next and detached between them. Every
step clips the gradients (`lmtrain.training.optim`), logs their norm measured before clipping, and sets the
learning rate the schedule gives for that step. Every `eval_interval` steps, and at the end, the
model is evaluated on the validation text (with carried state, as in the literature), the schedule
sees the validation loss, a sample is generated, and `last.pt` (and `best.pt` when validation loss
improved) are written atomically.

Everything needed to continue a run exactly is in `last.pt`: weights, optimizer, schedule, step,
epoch, data position, carried hidden state and every random generator's state. `resume=True` picks
it up. SIGINT (Ctrl-C) and SIGTERM stop the run after the current step and save `last.pt` first.
A NaN or infinite loss or gradient stops the run before the optimizer step (keeping the last
checkpoint) or, with `on_nonfinite: skip`, drops that batch.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lmtrain.analysis.grad_flow import gradient_flow
from lmtrain.checkpoint import load_checkpoint, make_checkpoint, restore_config, save_checkpoint
from lmtrain.config import Config, config_to_yaml
from lmtrain.data.batching import State, TokenStreams, WindowLengths, detach_state, get_batch
from lmtrain.data.corpus import Corpus, load_corpus, unigram_perplexity
from lmtrain.devices import (
    COMPUTE_DTYPES,
    autocast_factory,
    resolve_device,
    restore_rng_states,
    rng_states,
    state_in,
)
from lmtrain.errors import ConfigError, DataError, LmtrainError, TrainingError
from lmtrain.generation.sampling import sample_text
from lmtrain.model.language_model import RNNLanguageModel
from lmtrain.training.backend_trial import choose_backend
from lmtrain.training.distributed import DataParallel, WindowLoss, data_parallel
from lmtrain.training.evaluation import Evaluation, evaluate
from lmtrain.training.metrics import MetricLogger, NullLogger, TensorBoardLogger
from lmtrain.training.optim import LearningRateSchedule, build_optimizer, clip_gradients, set_learning_rate
from lmtrain.training.rundir import RunDirectory

LN2 = math.log(2.0)
MAX_CONSECUTIVE_SKIPS = 10
"""With `on_nonfinite: skip`, this many non-finite batches in a row stop training anyway."""


class TrainingInterrupted(LmtrainError):
    """SIGINT or SIGTERM stopped the run; `last.pt` holds everything needed to resume."""

    exit_code = 130


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    steps: int
    seconds: float
    tokens_per_second: float  # while training: the evaluations' time left out
    best_valid_loss: float
    final_valid: Evaluation
    unigram_perplexity: float
    tokenizer_kind: str


def check_corpus_size(corpus: Corpus, config: Config) -> None:
    """Refuse splits too short for one training window or one evaluation window."""
    need_train = (config.train.bptt + 1) * config.train.batch_size
    if len(corpus.train_ids) < need_train:
        raise DataError(
            f"the training text has {len(corpus.train_ids)} tokens, fewer than one batch of windows needs "
            f"((bptt + 1) x batch_size = {need_train}); use more text or lower train.batch_size / train.bptt"
        )
    need_valid = 2 * config.train.eval_batch_size
    if len(corpus.valid_ids) < need_valid:
        raise DataError(
            f"the validation text has {len(corpus.valid_ids)} tokens, fewer than evaluation needs "
            f"(2 x eval_batch_size = {need_valid}); use more text or lower train.eval_batch_size"
        )


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


@dataclass
class StepResult:
    """What one optimizer step reports."""

    loss: float
    grad_norm: float  # before clipping
    clipped: bool
    lr: float
    tokens: int


class Trainer:
    """Holds a run's model, optimizer and progress; `fit()` trains it to the configured limit."""

    def __init__(
        self,
        config: Config,
        run: RunDirectory,
        report: Callable[[str], None] = tqdm.write,
        show_progress: bool = True,
        logger: MetricLogger | None = None,
        parallel: DataParallel | None = None,
    ):
        train = config.train
        self.config = config
        self.run = run
        self.parallel = parallel or DataParallel(resolve_device(train.device))
        if not self.parallel.is_main:  # rank 0 alone prints and logs
            report, show_progress, logger = ignore, False, NullLogger()
        self.report = report
        self.quiet = config.log.quiet
        self.show_progress = show_progress and not self.quiet
        self.logger = logger
        self.device = self.parallel.device
        self.autocast = autocast_factory(train.precision, self.device)
        self.compute_dtype = COMPUTE_DTYPES[train.precision]
        torch.manual_seed(train.seed)
        random.seed(train.seed)
        self.corpus = load_corpus(config.data)
        check_corpus_size(self.corpus, config)
        self.tokenizer = self.corpus.tokenizer
        # [rows, B], read a window at a time from the memory-mapped ids; this process's block of
        # streams, [rows, B / world_size] (all of them in one process).
        streams = self.parallel.block(train.batch_size)
        self.train_data = TokenStreams(self.corpus.train_ids, train.batch_size, self.device).block(streams)
        # The same generator on every rank: all ranks draw the same window lengths.
        self.window_lengths = WindowLengths(train.bptt, train.variable_bptt, train.bptt_std, seed=train.seed)
        self.model = RNNLanguageModel(self.tokenizer.vocab_size, config.model).to(self.device)
        self.parallel.seed(train.seed)  # after the weights, which every rank initialises alike
        # A learned initial state is used only in the first window of an epoch: DDP must look for
        # parameters without gradient in the other windows.
        self.window_loss = self.parallel.wrap(
            WindowLoss(self.model), find_unused_parameters=config.model.initial_state == "learned"
        )
        self.optimizer = build_optimizer(self.model, train)
        self.schedule = LearningRateSchedule(train.schedule, train.lr, self.expected_total_steps())
        self.step = 0  # optimizer steps taken
        self.epoch = 0
        self.position = 0  # the row of train_data where the next window starts
        self.window = 0  # windows done in this epoch (skipped ones included)
        self.skipped_batches = 0
        self.consecutive_skips = 0
        self.carried: State | None = None
        self.best_valid_loss = math.inf
        self.last_valid: Evaluation | None = None
        self.evaluated_at = -1  # the step of the last evaluation
        self.backend: str | None = None  # model.impl auto's timed choice (backend_trial), kept on resume
        # The last window trained on, (inputs, targets, state it started from), for the grad-flow monitor.
        self.last_window: tuple[torch.Tensor, torch.Tensor, State | None] | None = None

    def inform(self, line: str) -> None:
        """A routine progress line, silenced by quiet mode."""
        if not self.quiet:
            self.report(line)

    # ----- checkpoints -------------------------------------------------------------------------

    def checkpoint(self) -> dict:
        """The checkpoint of the run so far; every rank must call it (it gathers their states)."""
        progress = {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "window": self.window,
            "skipped_batches": self.skipped_batches,
            "best_valid_loss": self.best_valid_loss,
            "valid_loss": self.last_valid.loss if self.last_valid else None,
            "world_size": self.parallel.world_size,
            "backend": self.backend,
        }
        every_rank = self.parallel.gather_objects(rng_states())
        rng = {**every_rank[0], "windows": self.window_lengths.state_dict()}
        if self.parallel.active:
            rng["ranks"] = every_rank  # rank r's dropout generators, for resuming with the same processes
        return make_checkpoint(
            self.config,
            self.tokenizer,
            self.model,
            self.optimizer,
            progress,
            self.parallel.gather_state(self.carried),  # all B streams
            rng,
            schedule=self.schedule.state_dict(),
        )

    def resume_from(self, path: Path) -> None:
        """Continue exactly where `path` (a `last.pt`) stopped.

        Rank 0 reads and checks the file and hands it to the other ranks; each takes its block of the
        carried state and its own random generators.
        """
        checkpoint = self.parallel.from_main(lambda: self.resumable_checkpoint(path))
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("schedule"):
            self.schedule.load_state_dict(checkpoint["schedule"])
        progress = checkpoint["progress"]
        self.step, self.epoch, self.position = progress["step"], progress["epoch"], progress["position"]
        self.window = progress.get("window", 0)
        self.skipped_batches = progress.get("skipped_batches", 0)
        self.best_valid_loss = progress["best_valid_loss"]
        self.backend = progress.get("backend")
        self.model.prefer_backend(self.backend)
        if checkpoint["carried_state"] is not None:
            streams = self.parallel.block(self.config.train.batch_size)
            # Per tensor [B, H] -> this rank's block, [B / world_size, H].
            self.carried = [
                tuple(t[streams].to(self.device) for t in layer) for layer in checkpoint["carried_state"]
            ]
        rng = checkpoint["rng"]
        restore_rng_states(rng["ranks"][self.parallel.rank] if self.parallel.active else rng)
        if "windows" in checkpoint["rng"]:
            self.window_lengths.load_state_dict(checkpoint["rng"]["windows"])

    def resumable_checkpoint(self, path: Path) -> dict:
        """The checkpoint at `path`, once it is known to continue this run."""
        checkpoint = load_checkpoint(path)
        saved = restore_config(checkpoint)
        if saved.model != self.config.model or saved.data != self.config.data:
            raise ConfigError(
                f"cannot resume from {path}: its model or data config differs from this config; "
                "resume with the same model and data sections (training limits may change)"
            )
        if checkpoint["tokenizer"] != self.tokenizer.to_dict():
            raise DataError(f"cannot resume from {path}: the training text changed since it was written")
        saved_world = checkpoint["progress"].get("world_size", 1)
        if saved_world != self.parallel.world_size:
            raise ConfigError(
                f"cannot resume from {path}: it was written by {processes(saved_world)} and this run has "
                f"{processes(self.parallel.world_size)}; resume with {processes(saved_world)} (torchrun "
                f"--nproc-per-node, or lmtrain train --nproc) so that each keeps its streams and random state"
            )
        return checkpoint

    def save(self, improved: bool) -> None:
        """Write `last.pt` (and `best.pt`) from rank 0; every rank must call it."""
        checkpoint = self.checkpoint()

        def write() -> None:
            save_checkpoint(checkpoint, self.run.last)
            if improved:
                save_checkpoint(checkpoint, self.run.best)

        self.parallel.on_main(write)

    # ----- training ------------------------------------------------------------------------------

    def expected_total_steps(self) -> int:
        """The steps of the whole run: exact for fixed windows, an estimate for variable ones."""
        train = self.config.train
        limits = []
        if train.epochs is not None:
            windows_per_epoch = math.ceil((self.train_data.size(0) - 1) / self.window_lengths.mean_length())
            limits.append(train.epochs * windows_per_epoch)
        if train.max_steps is not None:
            limits.append(train.max_steps)
        return min(limits)

    def finished(self) -> bool:
        train = self.config.train
        return (train.max_steps is not None and self.step >= train.max_steps) or (
            train.epochs is not None and self.epoch >= train.epochs
        )

    def next_window(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next training window `(inputs, targets)`, each `[T, B]`, or None when training is done.

        Reaching the end of the training text starts the next epoch from a zero state. The window's
        length is drawn only once training is known to go on, so a finished run's checkpoint holds
        the window-length generator exactly as the next step of a longer run would find it.
        """
        if self.position >= self.train_data.size(0) - 1:
            self.epoch += 1
            self.position = 0
            self.window = 0
            self.carried = None  # each epoch starts from a zero state
        if self.finished():
            return None
        return get_batch(self.train_data, self.position, self.window_lengths.draw())

    def try_backends(self) -> None:
        """Before a fresh run's first step, let ``model.impl: auto`` time its candidate backends on the first
        window and keep the faster (``backend_trial``). One process alone: ranks that timed apart could
        choose apart, so several processes take the rule's first candidate."""
        if self.step > 0 or self.parallel.active:
            return
        self.model.train()
        inputs, targets = get_batch(self.train_data, 0, self.config.train.bptt)

        def window_loss() -> torch.Tensor:
            state = state_in(self.model.initial_state(inputs.size(1), self.device), self.compute_dtype)
            with self.autocast():
                loss, _ = self.model.language_model_loss(inputs, targets, state)
            return loss

        result = choose_backend(self.model, window_loss, inputs.size(0), inputs.size(1))
        if result is not None:
            self.backend = result.backend
            self.inform(result.describe())

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepResult | None:
        """One optimizer step on one window; None when the batch was skipped (`on_nonfinite: skip`)."""
        self.model.train()
        if self.carried is not None:
            state = detach_state(self.carried)
        else:
            state = self.model.initial_state(inputs.size(1), self.device)
        state = state_in(state, self.compute_dtype)
        with self.autocast():
            loss, state = self.window_loss(inputs, targets, state)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = self.parallel.mean(loss)  # over every rank's streams: the same on all ranks
        if not math.isfinite(loss_value):
            return self.skip_or_stop(f"the training loss became {loss_value}", state)
        loss.backward()
        clip = clip_gradients(self.model.parameters(), self.config.train.clip)
        if not math.isfinite(clip.norm):
            return self.skip_or_stop(f"the gradient norm became {clip.norm}", state)
        lr = self.schedule.lr(self.step + 1, self.epoch)
        if self.window_lengths.variable:
            lr *= inputs.size(0) / self.config.train.bptt  # a short window takes a smaller step
        set_learning_rate(self.optimizer, lr)
        self.optimizer.step()
        self.carried = state_in(detach_state(state), torch.float32)
        self.consecutive_skips = 0
        return StepResult(loss_value, clip.norm, clip.clipped, lr, targets.numel() * self.parallel.world_size)

    def skip_or_stop(self, problem: str, state: State) -> None:
        """Handle a non-finite loss or gradient as `train.on_nonfinite` says; nothing has been updated."""
        where = f"{problem} at step {self.step + 1}"
        # The loss and the gradients are the same on every rank, and so is this decision.
        if self.config.train.on_nonfinite == "stop":
            raise self.parallel.together(
                TrainingError(
                    f"{where}; the last good checkpoint in {self.run.path} is kept; lower train.lr, set "
                    "train.clip.max_norm, or skip such batches with train.on_nonfinite=skip"
                )
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_batches += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
            raise self.parallel.together(
                TrainingError(
                    f"{where}, and the {MAX_CONSECUTIVE_SKIPS - 1} batches before it were skipped for the "
                    f"same reason; the last good checkpoint in {self.run.path} is kept; lower train.lr"
                )
            )
        # Carry the state on unless it is itself broken; a zero state is the next best start.
        finite = self.parallel.all(all(bool(torch.isfinite(t).all()) for layer in state for t in layer))
        self.carried = state_in(detach_state(state), torch.float32) if finite else None
        self.report(f"warning: {where}; skipped that batch ({self.skipped_batches} so far)")
        return None

    def log_grad_flow(self, logger: MetricLogger) -> None:
        """‖∂L<T>/∂a<t>‖ on the window just trained (`lmtrain.analysis.grad_flow`), as scalars and a plot."""
        inputs, targets, state = self.last_window
        norms = gradient_flow(self.model, inputs, targets, state)
        # Three digits: TensorBoard sorts tags as text, and variable windows vary T around bptt.
        values = {f"grad_flow/t{t:03d}": float(norm) for t, norm in enumerate(norms.tolist(), start=1)}
        values["grad_flow/ratio_first_to_last"] = float(norms[0] / norms[-1].clamp_min(1e-30))
        logger.scalars(self.step, values)
        # Imported here: matplotlib loads only in runs that draw this plot.
        from lmtrain.analysis.plots import gradient_flow_figure

        logger.figure(self.step, "grad_flow/profile", gradient_flow_figure(norms.tolist()))

    def evaluate_and_save(self, logger: MetricLogger, scheduled: bool = True) -> None:
        """Evaluate, log, let the schedule see the loss, checkpoint, and log a sample (and the gradient flow).

        Only the evaluations every `eval_interval` steps (`scheduled`) feed the schedule: the extra one
        at the end of a run must not, or a run stopped and resumed off the interval would divide
        its learning rate where the uninterrupted run does not. The time it takes is left out of the
        tokens/s figures, which measure training.
        """
        started = time.perf_counter()
        try:
            self._evaluate_and_save(logger, scheduled)
        finally:
            elapsed = time.perf_counter() - started
            self.evaluation_seconds += elapsed
            self.interval_start += elapsed

    def _evaluate_and_save(self, logger: MetricLogger, scheduled: bool) -> None:
        train = self.config.train
        if self.config.log.grad_flow and self.last_window is not None and self.parallel.is_main:
            self.log_grad_flow(logger)  # on rank 0's streams
        valid = evaluate(
            self.model,
            self.corpus.valid_ids,
            train.eval_batch_size,
            train.bptt,
            self.autocast,
            self.compute_dtype,
            streams=self.parallel.block(train.eval_batch_size),
        )
        if self.parallel.active:  # each rank read a block of the streams: add up their sums
            total_loss, tokens = self.parallel.sum([valid.loss * valid.tokens, valid.tokens])
            valid = Evaluation(loss=total_loss / tokens, tokens=round(tokens))
        self.evaluated_at = self.step
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
        if scheduled and self.schedule.observe(valid.loss):
            lr = self.schedule.lr(self.step + 1, self.epoch)
            self.inform(f"step {self.step} | validation stopped improving: learning rate now {lr:.3g}")
        self.save(improved)  # after the schedule has seen the loss, so that resume sees it too
        self.inform(line + (" | saved best.pt" if improved else ""))
        if self.config.log.sample_length > 0 and self.parallel.is_main:
            text = sample_text(
                self.model,
                self.tokenizer,
                self.config.log.sample_length,
                self.config.log.sample_temperature,
                seed=train.seed + self.step,
            )
            logger.text(self.step, "sample", text)

    def log_final_metrics(self, logger: MetricLogger) -> None:
        valid = self.last_valid
        metrics = {
            "final/valid_loss": valid.loss,
            "final/valid_perplexity": valid.perplexity,
            "final/best_valid_perplexity": math.exp(min(self.best_valid_loss, 700.0)),
        }
        if self.tokenizer.kind == "char":
            metrics["final/valid_bits_per_char"] = valid.bits_per_token
        logger.hparams(self.step, hparam_values(self.config), metrics)

    def fit(self) -> TrainResult:
        logger = self.logger or (
            TensorBoardLogger(self.run.path, purge_step=self.step + 1)
            if self.config.log.tensorboard
            else NullLogger()
        )
        bar = tqdm(
            total=self.expected_total_steps(),
            initial=self.step,
            disable=not self.show_progress,
            unit="step",
            dynamic_ncols=True,
        )
        self.try_backends()
        started = time.perf_counter()
        self.interval, self.interval_start, self.tokens_seen = [], started, 0
        self.evaluation_seconds = 0.0  # left out of the tokens/s figures, which measure training
        try:
            with stop_on_signals() as stop_requested:
                while (window := self.next_window()) is not None:
                    self.train_on(window, logger, bar)
                    if self.parallel.any(stop_requested()):  # all ranks stop after the same step
                        self.save(improved=False)
                        raise self.parallel.together(
                            TrainingInterrupted(
                                f"training stopped by a signal at step {self.step}; saved {self.run.last}"
                            )
                        )
            if self.evaluated_at != self.step:
                self.evaluate_and_save(logger, scheduled=False)
            self.log_final_metrics(logger)
        finally:
            bar.close()
            logger.close()
        seconds = time.perf_counter() - started
        return TrainResult(
            run_dir=self.run.path,
            steps=self.step,
            seconds=seconds,
            tokens_per_second=self.tokens_seen / max(seconds - self.evaluation_seconds, 1e-9),
            best_valid_loss=self.best_valid_loss,
            final_valid=self.last_valid,
            unigram_perplexity=unigram_perplexity(
                self.corpus.train_ids, self.corpus.valid_ids, self.tokenizer.vocab_size
            ),
            tokenizer_kind=self.tokenizer.kind,
        )

    def train_on(self, window: tuple[torch.Tensor, torch.Tensor], logger: MetricLogger, bar: tqdm) -> None:
        """Train on one window, then log and evaluate when their intervals come round."""
        inputs, targets = window
        start_state = self.carried
        result = self.train_step(inputs, targets)
        self.position += inputs.size(0)
        self.window += 1
        if result is None:  # skipped
            return
        self.step += 1
        self.tokens_seen += result.tokens
        self.interval.append(result)
        self.last_window = (inputs, targets, start_state)
        bar.update(1)
        if self.step % self.config.log.log_interval == 0:
            self.log_interval(logger, bar)
        if self.step % self.config.train.eval_interval == 0:
            self.evaluate_and_save(logger)

    def log_interval(self, logger: MetricLogger, bar: tqdm) -> None:
        """Scalars summarising the steps since the last log line, and the progress bar's figures."""
        steps, now = self.interval, time.perf_counter()
        mean_loss = sum(step.loss for step in steps) / len(steps)
        perplexity = math.exp(min(mean_loss, 700.0))
        speed = sum(step.tokens for step in steps) / max(now - self.interval_start, 1e-9)
        logger.scalars(
            self.step,
            {
                "train/loss": mean_loss,
                "train/perplexity": perplexity,
                "train/grad_norm": steps[-1].grad_norm,
                "train/clipped_fraction": sum(step.clipped for step in steps) / len(steps),
                "train/lr": steps[-1].lr,
                "train/tokens_per_second": speed,
                "train/skipped_batches": self.skipped_batches,
            },
        )
        bar.set_postfix(loss=f"{mean_loss:.3f}", ppl=f"{perplexity:.1f}", tok_s=f"{speed:,.0f}")
        self.interval, self.interval_start = [], now


def hparam_values(config: Config) -> dict[str, float | int | str | bool]:
    """The data, model and train settings as flat `section.key` values, as TensorBoard's HParams wants."""
    values: dict[str, float | int | str | bool] = {}

    def walk(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            elif value is None or isinstance(value, list):
                values[f"{prefix}{key}"] = "null" if value is None else str(value)  # e.g. data.split
            else:
                values[f"{prefix}{key}"] = value

    dumped = config.model_dump(mode="json")
    walk("", {section: dumped[section] for section in ("data", "model", "train")})
    return values


def wants_resume(config: Config, resume: bool, overwrite: bool) -> bool:
    """Whether to continue the run in run_dir: `--resume`, `resume: true`, or `resume: auto` and a last.pt."""
    if (resume or config.resume is True) and overwrite:
        raise ConfigError("resuming and --overwrite exclude each other; pick one")
    if config.resume == "auto":
        return not overwrite and (Path(config.run_dir) / "last.pt").exists()
    return resume or config.resume is True


def train(
    config: Config,
    overwrite: bool = False,
    resume: bool = False,
    report: Callable[[str], None] = tqdm.write,
    show_progress: bool = True,
    logger: MetricLogger | None = None,
) -> TrainResult:
    """Train a model as `config` says, in `config.run_dir`; the library entry point of `lmtrain train`.

    `resume` (or `config.resume`) continues the run from its `last.pt`. `logger` replaces the
    TensorBoard logger the config asks for (tests pass a recording one). Under torchrun this process
    trains as one rank of a data-parallel run (see `lmtrain.training.distributed`): rank 0 opens, locks and
    writes the run directory, and the other ranks learn from it whether that worked.
    """
    with data_parallel(config.train) as parallel, ExitStack() as stack:
        resume = parallel.from_main(lambda: wants_resume(config, resume, overwrite))
        run = parallel.on_main(
            lambda: stack.enter_context(RunDirectory.open(Path(config.run_dir), overwrite, resume))
        )
        run = run or RunDirectory(Path(config.run_dir))  # ranks other than 0 never write to it
        trainer = parallel.everywhere(  # reading the corpus may fail on one machine only
            lambda: Trainer(
                config, run, report=report, show_progress=show_progress, logger=logger, parallel=parallel
            )
        )
        if resume:
            trainer.resume_from(run.last)
            trainer.report(f"resumed from {run.last} at step {trainer.step} (epoch {trainer.epoch + 1})")
        parallel.on_main(lambda: run.write_config(config_to_yaml(config)))
        return trainer.fit()


def processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"


def ignore(line: str) -> None:
    """A `report` that prints nothing (ranks other than 0)."""
