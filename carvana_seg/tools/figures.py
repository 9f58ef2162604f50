"""The study's figures, made from a finished sweep folder (what `make figures` and notebooks/02 use).

    python -m carvana_seg.tools.figures runs/study --out docs/images

writes `study_curves.png` (validation dice and pixel accuracy per step: CNN vs U-Net, and the three
losses) and
`study_table.md` (the sweep's summary table) and, scoring the best U-Net of the study at full size with
the evaluate command, `worst_errors.png` (its worst validation image: false positives and negatives).
Curves come from the TensorBoard event files through tensorboard's own reader.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, works in CI and over ssh
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from carvana_seg.durable import atomic_file, atomic_write
from carvana_seg.errors import InputError, exit_on_input_error
from carvana_seg.tools.sweep_summary import Job, best_job, find_jobs, to_markdown


def read_scalars(run_dir: str | Path, tag: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar over all event files of a run's tensorboard folder."""
    points: dict[int, float] = {}
    for events in sorted(Path(run_dir).glob("tensorboard/**/events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            points.update({event.step: event.value for event in accumulator.Scalars(tag)})
    steps = sorted(points)
    return steps, [points[step] for step in steps]


def label(job: Job) -> str:
    return " ".join(job.overrides.get(key, "?") for key in ("model", "loss"))


def study_curves(sweep_dir: str | Path, tag: str | Sequence[str] = "val/dice") -> Figure:
    """Two panels per tag (one row each) against the training step: every job by model, then the
    U-Net's losses; `tag=("val/dice", "val/accuracy")` shows accuracy beside dice, as the seed did."""
    sweep_dir = Path(sweep_dir)
    tags = [tag] if isinstance(tag, str) else list(tag)
    jobs = [job for job in find_jobs(sweep_dir) if job.metrics is not None]
    figure, panels = plt.subplots(len(tags), 2, figsize=(11, 4 * len(tags)), squeeze=False)
    styles = {"cnn": ":", "unet": "-", "resnet_unet": "--"}
    for (by_model, by_loss), name in zip(panels, tags, strict=True):
        by_loss.sharey(by_model)
        for job in jobs:
            steps, values = read_scalars(sweep_dir / str(job.num), name)
            model = job.overrides.get("model", "?")
            by_model.plot(steps, values, styles.get(model, "-."), marker=".", label=label(job))
            if model == "unet":
                by_loss.plot(steps, values, marker=".", label=job.overrides.get("loss", "?"))
        by_model.set_title(f"{name}: CNN (dotted) vs U-Net (solid)")
        by_loss.set_title(f"{name} of the U-Net by loss")
        for axes in (by_model, by_loss):
            axes.set_xlabel("training step")
            axes.grid(alpha=0.3)
            if axes.get_legend_handles_labels()[0]:
                axes.legend(fontsize=8, loc="lower right")
        by_model.set_ylabel(name)
    figure.tight_layout()
    return figure


def best_checkpoint(sweep_dir: str | Path, model: str = "unet") -> Path:
    """The best checkpoint of the sweep's best finished `model` job (of any job when none is that model)."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir) if sweep_dir.is_dir() else []
    job = best_job([job for job in jobs if job.overrides.get("model") == model]) or best_job(jobs)
    if job is None:
        raise InputError(f"{sweep_dir} holds no finished job of a sweep (run `make study` first)")
    ckpt = sweep_dir / str(job.num) / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise InputError(f"{ckpt} does not exist: job {job.num} is the study's best but kept no best.ckpt")
    return ckpt


def worst_errors(sweep_dir: str | Path, out: str | Path, model: str = "unet", worst_k: int = 4) -> Path:
    """Score the best `model` job of the sweep at full size (the evaluate command, on its validation
    cars) and copy the picture of its worst image to `out`; the evaluation lands in `<sweep>/eval`."""
    from carvana_seg.config import compose
    from carvana_seg.evaluate import evaluate

    ckpt = best_checkpoint(sweep_dir, model)
    output_dir = Path(sweep_dir) / "eval" / ckpt.parent.parent.name
    cfg = compose(
        "evaluate",
        [f"ckpt_path={ckpt.resolve()}", f"paths.output_dir={output_dir.resolve()}", f"worst_k={worst_k}"],
    )
    evaluate(cfg)
    worst = sorted((output_dir / "worst").glob("01_*.png"))[0]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, worst.read_bytes())
    return Path(out)


def make_all(sweep_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Every figure of the study into `out_dir`; returns their paths. The sweep is checked and the full-size
    evaluation run before any figure is written: a missing job or checkpoint, or a failed evaluation,
    leaves the figures already there as they were."""
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    best_checkpoint(sweep_dir)  # a missing sweep, job or checkpoint named before minutes of work
    jobs = find_jobs(sweep_dir)
    figure = study_curves(sweep_dir, ("val/dice", "val/accuracy"))
    worst = worst_errors(sweep_dir, out_dir / "worst_errors.png")
    curves = out_dir / "study_curves.png"
    with atomic_file(curves) as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
    table = out_dir / "study_table.md"
    atomic_write(table, to_markdown(jobs).encode())
    return [curves, table, worst]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a finished study's sweep folder, e.g. runs/study")
    parser.add_argument("--out", default="docs/images", help="folder for the figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    for path in exit_on_input_error(make_all, args.sweep_dir, args.out):
        print(path)


if __name__ == "__main__":
    main()
