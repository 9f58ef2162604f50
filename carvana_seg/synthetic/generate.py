"""Built-in Carvana-like data set: made-up cars on a studio turntable, written in Kaggle's layout.

The renderer lives beside this module in `carvana_seg.synthetic`; this module writes what it draws the way the
competition ships its data, so the same loader reads both:

    train/<car_id>_<NN>.jpg                 16 views per car, NN = 01..16
    train_masks/<car_id>_<NN>_mask.gif      palette GIF, pixel values {0, 1}
    train_masks.csv                         img,rle_mask
    metadata.csv                            id,year,make,model,trim1,trim2
    test/<car_id>_<NN>.jpg                  unlabelled cars (with --test-cars)
    sample_submission.csv                   img,rle_mask with "1 1" for every test image

Everything is a function of the arguments: the same call writes byte-identical files, and car k of a
seed is the same car whatever the number of cars asked for.

    python -m carvana_seg.synthetic --out data/synthetic --cars 8 --size 160x240
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from carvana_seg.data import rle
from carvana_seg.data.decode import encode_mask
from carvana_seg.data.lock import file_lock
from carvana_seg.durable import fsync_dir, fsync_tree
from carvana_seg.errors import DataError
from carvana_seg.synthetic.car import FULL_SIZE, VIEWS, Car
from carvana_seg.synthetic.fleet import make_car
from carvana_seg.synthetic.render import render_view

__all__ = [
    "FULL_SIZE",
    "GENERATOR_VERSION",
    "SPEC_FILE",
    "VIEWS",
    "Car",
    "ensure_dataset",
    "main",
    "make_car",
    "render_view",
    "write_dataset",
]

# Bump whenever the pictures change for the same arguments: ensure_dataset then refuses stale folders.
GENERATOR_VERSION = 1
SPEC_FILE = "synthetic_spec.json"

_MAKES = {
    "Autonova": ("Strada", "Veloce", "Terra", "Civo"),
    "Brightline": ("Arc", "Pulse", "Summit", "Nomad"),
    "Corvane": ("Estoril", "Kestrel", "Mistral", "Ranger"),
    "Dunmore": ("Highland", "Vista", "Cobalt", "Prairie"),
    "Elstrom": ("E3", "E5", "X7", "Tourer"),
    "Halvorsen": ("Fjord", "Nordkap", "Tundra", "Skarv"),
}
_TRIMS = ("Base", "S", "SE", "LE", "LX", "EX", "Sport", "Limited", "Touring", "Premium")
_TRIMS2 = ("", "", "AWD", "FWD", "Hybrid", "Turbo", "V6", "4WD")


def _metadata(car: Car) -> dict[str, str | int]:
    """Made-up catalogue entry for a car (Kaggle's metadata.csv has these columns)."""
    rng = np.random.default_rng(int(car.car_id, 16))
    make = sorted(_MAKES)[rng.integers(len(_MAKES))]
    return {
        "id": car.car_id,
        "year": int(rng.integers(2002, 2018)),
        "make": make,
        "model": _MAKES[make][rng.integers(len(_MAKES[make]))],
        "trim1": _TRIMS[rng.integers(len(_TRIMS))],
        "trim2": _TRIMS2[rng.integers(len(_TRIMS2))],
    }


def _write_car(out: Path, split: str, seed: int, index: int, size: tuple[int, int], jpeg_quality: int):
    """Render and write the 16 views of one car; returns the car and its (image name, rle) rows."""
    car = make_car(seed, index, split=split)
    rows = []
    for view in range(1, VIEWS + 1):
        image, mask = render_view(car, view, size)
        name = f"{car.car_id}_{view:02d}.jpg"
        ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        (out / split / name).write_bytes(jpeg.tobytes())
        if split == "train":
            (out / "train_masks" / f"{car.car_id}_{view:02d}_mask.gif").write_bytes(encode_mask(mask, "gif"))
            rows.append((name, rle.encode(mask)))
        else:
            rows.append((name, "1 1"))  # what Kaggle's sample_submission.csv holds
    return car, rows


def _write_car_job(job: tuple) -> tuple[Car, list[tuple[str, str]]]:
    return _write_car(*job)


def _quiet_worker() -> None:
    cv2.setNumThreads(1)  # the pool already keeps the cores busy


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_dataset(
    out: str | Path,
    cars: int = 8,
    size: tuple[int, int] = FULL_SIZE,
    seed: int = 0,
    test_cars: int = 0,
    jpeg_quality: int = 95,
    workers: int = 1,
) -> Path:
    """Write a synthetic data set in Kaggle's layout.

    Args:
        out: folder to write into (created if needed).
        cars: number of labelled cars (16 images each) under train/.
        size: (height, width) of every image; Kaggle's is (1280, 1918).
        seed: data set seed; train car k and test car k each depend only on (seed, k).
        test_cars: number of unlabelled cars under test/.
        jpeg_quality: JPEG quality of the images.
        workers: processes rendering cars in parallel; the files do not depend on it. They are spawned,
            so a script calling this with workers > 1 needs the usual `if __name__ == "__main__":` guard.

    Returns:
        The output folder.
    """
    if cars < 0 or test_cars < 0:
        raise ValueError(f"cars and test_cars must be >= 0, got {cars} and {test_cars}")
    height, width = size
    if height < 16 or width < 16:
        raise ValueError(f"size must be at least 16x16, got {height}x{width}")
    out = Path(out)
    folders = ["train", "train_masks"] + (["test"] if test_cars else [])
    for folder in folders:
        (out / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(out, "train", seed, k, (height, width), jpeg_quality) for k in range(cars)]
    jobs += [(out, "test", seed, k, (height, width), jpeg_quality) for k in range(test_cars)]
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")  # no forked copies of cv2's or torch's threads
        with ProcessPoolExecutor(
            min(workers, len(jobs)), mp_context=context, initializer=_quiet_worker
        ) as pool:
            results = list(pool.map(_write_car_job, jobs))
    else:
        results = [_write_car_job(job) for job in jobs]

    ids = [car.car_id for car, _ in results]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"two cars drew the same id with seed {seed}; use another seed")
    train = sorted(
        row for (car, rows), job in zip(results, jobs, strict=True) if job[1] == "train" for row in rows
    )
    test = sorted(
        row for (car, rows), job in zip(results, jobs, strict=True) if job[1] == "test" for row in rows
    )
    _write_csv(out / "train_masks.csv", ["img", "rle_mask"], train)
    _write_csv(
        out / "metadata.csv",
        ["id", "year", "make", "model", "trim1", "trim2"],
        [list(_metadata(car).values()) for car, _ in results],
    )
    if test_cars:
        _write_csv(out / "sample_submission.csv", ["img", "rle_mask"], test)
    return out


def _spec(cars: int, size: tuple[int, int], seed: int, test_cars: int) -> dict:
    return {
        # The generator's name from before the move into carvana_seg.synthetic: sets on disk stay valid.
        "generator": "carvana_seg.data.synthetic",
        "version": GENERATOR_VERSION,
        "cars": int(cars),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "test_cars": int(test_cars),
        "jpeg_quality": 95,
    }


def _read_spec(root: Path) -> dict | None:
    try:
        return json.loads((root / SPEC_FILE).read_text())
    except FileNotFoundError:
        return None


def ensure_dataset(
    root: str | Path, cars: int, size: tuple[int, int], seed: int = 0, test_cars: int = 0
) -> Path:
    """Return `root` holding exactly this set, generating it on first use and reusing it afterwards.

    Safe when several processes (sweep jobs, DDP ranks) call it at once: the set is built in a temporary
    sibling folder and renamed into place, and a spec file inside root (the arguments and the generator
    version) says what is there.

    Raises:
        DataError: root exists but holds something else (another spec, or files without a spec);
            nothing in it is touched.
    """
    root = Path(root)
    wanted = _spec(cars, size, seed, test_cars)

    def check() -> bool:
        found = _read_spec(root)
        if found == wanted:
            return True
        if found is not None:
            raise DataError(
                f"{root} holds a different synthetic data set ({found}), not the one asked for ({wanted}); "
                "point the data root somewhere else or delete that folder yourself"
            )
        if root.exists() and any(root.iterdir()):
            raise DataError(
                f"{root} exists and is not a synthetic data set (no {SPEC_FILE}); refusing to write into it"
            )
        return False

    if check():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock", what=f"generating {root.name}"):
        if check():  # another process finished it while this one waited
            return root
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            write_dataset(tmp, cars=cars, size=size, seed=seed, test_cars=test_cars)
            (tmp / SPEC_FILE).write_text(json.dumps(wanted, indent=2) + "\n")
            fsync_tree(tmp)  # on disk before the name says it is there
            try:
                os.rename(tmp, root)  # atomic; replaces root only if it is an empty folder
            except OSError:
                if not check():  # someone without the lock got there first with the same set: fine
                    raise
            fsync_dir(root.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like HEIGHTxWIDTH, e.g. 1280x1918, got {text!r}"
        ) from None
    return height, width


def main(argv: list[str] | None = None) -> None:
    """Command line: write a synthetic set and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m carvana_seg.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cars", type=int, default=8, help="labelled cars (16 views each)")
    parser.add_argument(
        "--size", type=_parse_size, default=FULL_SIZE, help="HEIGHTxWIDTH (default 1280x1918)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-cars", type=int, default=0, help="unlabelled cars under test/")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--jpeg-quality", type=int, default=95)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = write_dataset(
        args.out, args.cars, args.size, args.seed, args.test_cars, args.jpeg_quality, args.workers
    )
    seconds = time.perf_counter() - start
    images = (args.cars + args.test_cars) * VIEWS
    height, width = args.size
    print(
        f"wrote {args.cars} train + {args.test_cars} test cars ({images} images, {height}x{width}) "
        f"to {out} in {seconds:.1f} s ({seconds / max(images, 1):.3f} s per image)"
    )


if __name__ == "__main__":
    main()
