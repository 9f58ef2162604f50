"""The built-in data as a LightningDataModule: generated in Kaggle's layout on first use, then read by
the same loader chain as the real photos (`conf/data/synthetic.yaml`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.synthetic.generate import ensure_dataset


class SyntheticDataModule(CarvanaDataModule):
    """`CarvanaDataModule` over the synthetic set described by `synthetic` (cars, size, seed,
    test_cars), written into `root` the first time and reused afterwards; every other argument is the
    CarvanaDataModule's."""

    def __init__(self, root: str | Path, synthetic: Mapping[str, Any], **options: Any) -> None:
        super().__init__(root, **options)
        self.synthetic = dict(synthetic)

    def prepare_data(self) -> None:
        """Generate the set on first use (Lightning runs this once per node; concurrent calls wait)."""
        ensure_dataset(self.root, **self.synthetic)
