"""Contact sheet of the synthetic data for the README: a few cars on the turntable, each view above its mask.

    python -m carvana_seg.synthetic.gallery --out docs/images/synthetic_views.png

The cars are picked to show the hard cases: a black car (on its own shadow), a white or silver car (on
the white backdrop), a car with a roof antenna (a part a few pixels wide) and an SUV with roof rails.
Everything is rendered in memory; no data set is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from carvana_seg.synthetic.car import FULL_SIZE, Car
from carvana_seg.synthetic.fleet import make_car
from carvana_seg.synthetic.render import render_view

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (40, 40, 40)


def pick_cars(seed: int = 0) -> list[tuple[str, Car]]:
    """The first car of `seed` (by index) for each showcase, all in different colours: (caption, car)."""
    wanted: list[tuple[str, Callable[[Car], bool]]] = [
        ("black car", lambda c: c.colour_name == "black"),
        ("white/silver car", lambda c: c.colour_name in ("white", "silver")),
        (
            "roof antenna",
            lambda c: c.antenna > 0 and c.colour_name in ("red", "blue", "green", "orange", "beige"),
        ),
        ("roof rails", lambda c: c.roof_rails and c.antenna == 0),
    ]
    picked: list[tuple[str, Car]] = []
    cars = [make_car(seed, index) for index in range(200)]
    for caption, test in wanted:
        car = next(c for c in cars if test(c) and all(c.colour_name != p.colour_name for _, p in picked))
        picked.append((caption, car))
    return picked


def _label(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45, colour=_INK) -> None:
    cv2.putText(img, text, org, _FONT, scale, colour, 1, cv2.LINE_AA)


def gallery(seed: int = 0, views: tuple[int, ...] = (1, 3, 5, 9, 13), cell_width: int = 300) -> np.ndarray:
    """RGB contact sheet: one block per showcase car, its views in a row and their masks under them."""
    cell_h = round(cell_width * FULL_SIZE[0] / FULL_SIZE[1])
    mask_h = cell_h // 2  # masks are simple shapes: half height is enough to read them
    margin, side = 8, 150
    blocks = []
    for caption, car in pick_cars(seed):
        images, masks = [], []
        for view in views:
            image, mask = render_view(car, view, FULL_SIZE)
            image = cv2.resize(image, (cell_width, cell_h), interpolation=cv2.INTER_AREA)
            _label(image, f"{car.car_id}_{view:02d}.jpg", (6, 16), 0.4)
            images.append(image)
            small = cv2.resize(mask * 255, (cell_width // 2, mask_h), interpolation=cv2.INTER_AREA)
            tile = np.full((mask_h, cell_width), 235, np.uint8)
            tile[:, cell_width // 4 : cell_width // 4 + small.shape[1]] = small
            _label(tile, f"mask {view:02d}", (6, 14), 0.4, 150)
            masks.append(cv2.cvtColor(tile, cv2.COLOR_GRAY2RGB))
        row = np.vstack([np.hstack(images), np.hstack(masks)])
        panel = np.full((row.shape[0], side, 3), 255, np.uint8)
        lines = [caption, f"{car.colour_name} {car.body}", f"car {car.car_id}"]
        for i, text in enumerate(lines):
            _label(panel, text, (8, 28 + 22 * i), 0.45 if i else 0.5)
        blocks.append(np.hstack([panel, row]))
        blocks.append(np.full((margin, blocks[-1].shape[1], 3), 255, np.uint8))
    sheet = np.vstack(blocks[:-1])
    title = np.full((40, sheet.shape[1], 3), 255, np.uint8)
    names = "/".join(f"{view:02d}" for view in views)
    _label(title, f"carvana_seg.synthetic.generate: turntable views {names} and their masks", (8, 26), 0.6)
    return np.vstack([title, sheet])


def main(argv: list[str] | None = None) -> None:
    """Write the contact sheet as a PNG."""
    parser = argparse.ArgumentParser(
        prog="python -m carvana_seg.synthetic.gallery", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="docs/images/synthetic_views.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=300, help="width of one view in the sheet, pixels")
    args = parser.parse_args(argv)
    sheet = gallery(args.seed, cell_width=args.width)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, {out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
