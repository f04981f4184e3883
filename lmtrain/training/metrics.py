"""Where training metrics go: a small `MetricLogger` protocol and its implementations.

The trainer calls `scalars(step, {...})`, `text(step, tag, text)`, `image(step, tag, image)` and,
when a run ends, `hparams(step, config values, final metrics)`; `TensorBoardLogger` writes event files into
the run directory (watch them with `tensorboard --logdir runs`: every run directory is one run, and
the HParams tab lists them side by side with their final metrics), `NullLogger` drops everything
(for `log.tensorboard: false` and for tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from torch import Tensor


class MetricLogger(Protocol):
    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def text(self, step: int, tag: str, text: str) -> None: ...

    def image(self, step: int, tag: str, image: Tensor) -> None: ...

    def hparams(
        self, step: int, params: dict[str, float | int | str | bool], metrics: dict[str, float]
    ) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """Accepts metrics and keeps none."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def text(self, step: int, tag: str, text: str) -> None:
        pass

    def image(self, step: int, tag: str, image: Tensor) -> None:
        pass

    def hparams(
        self, step: int, params: dict[str, float | int | str | bool], metrics: dict[str, float]
    ) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars and text samples as TensorBoard event files in `log_dir`."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        # Imported here: loading TensorBoard takes a second that `sample` and `--help` need not pay.
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a crashed run wrote after its last checkpoint, so a resumed
        # run's curves do not double back.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def text(self, step: int, tag: str, text: str) -> None:
        # TensorBoard renders text as Markdown: indent by four spaces to keep line breaks verbatim.
        self.writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()), step)
        self.writer.flush()

    def image(self, step: int, tag: str, image: Tensor) -> None:
        """A uint8 RGB image `[3, H, W]`."""
        self.writer.add_image(tag, image, step, dataformats="CHW")
        self.writer.flush()

    def hparams(
        self, step: int, params: dict[str, float | int | str | bool], metrics: dict[str, float]
    ) -> None:
        """The run's settings and final metrics, for TensorBoard's HParams tab.

        `SummaryWriter.add_hparams` would put them in a new subdirectory per call; writing the same
        summaries into this run's own event file keeps one run per run directory.
        """
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(params, metrics):
            self.writer.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
