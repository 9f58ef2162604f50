"""What a trained network keeps of its training run, inside its checkpoint: the input size it learnt
at and the data it learnt from, so that evaluate and predict need nothing but the checkpoint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from carvana_seg.errors import InputError


@dataclass(frozen=True)
class RunConfig:
    """The training run of a checkpoint.

    Attributes:
        image_size: (H, W) the network was trained at (and runs at by default).
        data_root: the absolute data folder it was trained on.
        image_dir: the photo folder under `data_root` (None: train/ or train_hq/).
        mask_source: where the masks came from: auto, files or csv.
        val_cars: the car ids held out for validation (the by-car split), sorted.
    """

    image_size: tuple[int, int]
    data_root: str | None = None
    image_dir: str | None = None
    mask_source: str = "auto"
    val_cars: tuple[str, ...] = ()

    @classmethod
    def of(cls, datamodule: Any) -> RunConfig:
        """The run config of a set-up CarvanaDataModule (or anything with the same attributes)."""
        return cls(
            image_size=tuple(datamodule.image_size),
            data_root=str(datamodule.root),
            image_dir=datamodule.image_dir,
            mask_source=datamodule.mask_source,
            val_cars=tuple(datamodule.split["val"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values only: what a checkpoint loaded with `weights_only=True` may hold."""
        record = asdict(self)
        record.update(image_size=list(self.image_size), val_cars=list(self.val_cars))
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RunConfig:
        """Read back `to_dict`'s record, checking every type (it comes from a file)."""
        size = record.get("image_size")
        if not _is_pair_of_sizes(size):
            raise InputError(f"run config: image_size must be [height, width], got {size!r}")
        val_cars = record.get("val_cars") or ()
        if not all(isinstance(car, str) for car in val_cars):
            raise InputError("run config: val_cars must be car ids")
        for key in ("data_root", "image_dir", "mask_source"):
            if record.get(key) is not None and not isinstance(record[key], str):
                raise InputError(f"run config: {key} must be text, got {record[key]!r}")
        return cls(
            image_size=(int(size[0]), int(size[1])),
            data_root=record.get("data_root"),
            image_dir=record.get("image_dir"),
            mask_source=record.get("mask_source") or "auto",
            val_cars=tuple(val_cars),
        )


def _is_pair_of_sizes(size: Any) -> bool:
    return (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    )
