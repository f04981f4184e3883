"""Where training metrics go: a small `MetricLogger` protocol and its implementations.

The trainer calls `scalars(step, {...})`, `text(step, tag, text)`, `figure(step, tag, figure)` (a
matplotlib `Figure` from `lmtrain.analysis.plots`) and, when a run ends, `hparams(step, config values,
final metrics)`; `TensorBoardLogger` writes event files into the run directory (watch them with
`tensorboard --logdir runs`: every run directory is one run, and the HParams tab lists them side by
side with their final metrics), `NullLogger` drops everything (for `log.tensorboard: false` and for
tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # matplotlib loads only where a figure is drawn
    from matplotlib.figure import Figure


class MetricLogger(Protocol):
    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def text(self, step: int, tag: str, text: str) -> None: ...

    def figure(self, step: int, tag: str, figure: Figure) -> None: ...

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

    def figure(self, step: int, tag: str, figure: Figure) -> None:
        pass

    def hparams(
        self, step: int, params: dict[str, float | int | str | bool], metrics: dict[str, float]
    ) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars, text samples and figures as TensorBoard event files in `log_dir`."""

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

    def figure(self, step: int, tag: str, figure: Figure) -> None:
        """The figure rendered to an image (Images tab) at its own size and dpi; the figure is closed."""
        self.writer.add_figure(tag, figure, step)
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
