"""Clean-ups of a full-size mask after the threshold (`postprocess=[largest,fill_holes]` in evaluate and
predict; `largest` alone by default there, `[]` for none): a Carvana photo shows one car, in one piece,
without holes.

- `largest`: keep the largest connected piece of car (8-connected); stray blobs on the floor or the
  backdrop go, and so would a piece of the car cut off by a thin gap (an antenna's tip).
- `fill_holes`: background that does not reach the frame's edge (4-connected) becomes car: holes in
  windows and wheels go, and so would background truly enclosed by the car.

Whether each helps is measured on the car folds and the stress set (docs/RESULTS.md), not assumed:
`largest` leaves the folds' dice as it is and removes a far floor marked apart from the car.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from carvana_seg.errors import InputError


def pieces(mask: np.ndarray) -> int:
    """The number of 8-connected pieces of a uint8 {0, 1} mask: its outer borders, which border following
    (Suzuki's, cv2.findContours) puts at the top level of RETR_CCOMP's two levels, pieces inside another
    piece's hole included. It reads the borders only: 0.5 ms for a 1918x1280 car, where labelling every
    pixel takes 15 ms."""
    _, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return 0 if hierarchy is None else int(np.count_nonzero(hierarchy[0, :, 3] < 0))


def largest(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected piece of a uint8 {0, 1} mask."""
    if pieces(mask) <= 1:  # nearly every predicted car: nothing to remove, no labelling
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 2:  # background and at most one piece
        return mask
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == keep).view(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every 4-connected piece of background that does not touch the frame's edge filled."""
    count, labels = cv2.connectedComponents(1 - mask, connectivity=4)
    if count <= 1:  # no background at all
        return mask
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    outside = np.zeros(count, dtype=bool)
    outside[edge] = True
    outside[0] = False  # label 0 is the car itself
    return (~outside[labels]).view(np.uint8)


STEPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"largest": largest, "fill_holes": fill_holes}
# The clean-up the commands (conf/evaluate.yaml, conf/predict.yaml) and the Predictor apply by default.
DEFAULT_STEPS: tuple[str, ...] = ("largest",)


def check_steps(names: Sequence[str] | None) -> list[str]:
    """The post-processing step names, checked: an InputError names unknown ones and lists the known."""
    if isinstance(names, str):  # postprocess=largest: one step, not its letters
        names = [names]
    names = [str(name) for name in (names or [])]
    unknown = [name for name in names if name not in STEPS]
    if unknown:
        raise InputError(f"unknown postprocess step(s) {unknown}: choose from {', '.join(STEPS)}")
    return names


def postprocess(mask: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    """`mask` (uint8 {0, 1}, H x W) through each of `steps` in order."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    for step in steps:
        mask = STEPS[step](mask)
    return mask
