"""One labelled photo: where its files are, and decoding it at the training size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carvana_seg.data import rle
from carvana_seg.data.decode import mask_coverage, read_mask, read_photo, resize_mask


@dataclass(frozen=True)
class Sample:
    """One photo of one car and (when labelled) its mask file."""

    image: Path
    mask: Path | None
    car_id: str
    view: int

    @property
    def name(self) -> str:
        """The image file name, the key Kaggle's CSVs use."""
        return self.image.name


def load_sample(
    sample: Sample,
    size: tuple[int, int],
    rle_masks: Mapping[str, str] | None = None,
    soft: bool = False,
    mask_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one sample: the RGB photo at `size` and its mask (None if unlabelled) at `mask_size`
    (default: `size`; larger for training against finer masks than the photos).

    The mask is {0, 1}, resized nearest-neighbour; with `soft`, it is the share of car in each pixel,
    0..255, area-averaged from the full-size mask (see `mask_coverage`). Every error is a DataError
    naming the file (or, for a run-length mask, the image) it is about.
    """
    mask_size = mask_size or size
    image, full_size = read_photo(sample.image, size)
    if rle_masks is not None:
        mask = rle.decode(rle_masks[sample.name], full_size, name=sample.image)
        return image, mask_coverage(mask, mask_size) if soft else resize_mask(mask, mask_size)
    if sample.mask is None:
        return image, None
    if soft:
        return image, mask_coverage(read_mask(sample.mask, expect_size=full_size), mask_size)
    return image, read_mask(sample.mask, mask_size, expect_size=full_size)
