"""The decoded cache: identical tensors to the files, rebuilt when a file changes, corrupt files named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from carvana_seg.data.cache import DecodedCache
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.errors import DataError
from tests.conftest import car_id, write_carvana


def datamodule(root: Path, cache_dir: Path, cache: bool, **kwargs) -> CarvanaDataModule:
    module = CarvanaDataModule(
        root, image_size=(24, 36), num_workers=0, cache=cache, cache_dir=cache_dir, **kwargs
    )
    module.setup("fit")
    return module


def all_items(module: CarvanaDataModule) -> list[dict]:
    # Validation items: no augmentation, so cached and uncached must agree exactly.
    return [module.val_set[i] for i in range(len(module.val_set))] + [
        dict(zip(("image", "mask"), map(torch.from_numpy, module.train_set.load(i)), strict=True))
        for i in range(len(module.train_set))
    ]


@pytest.mark.parametrize("mask_source", ["files", "csv"])
def test_cached_and_uncached_give_identical_tensors(tmp_path, mask_source):
    root = write_carvana(tmp_path / "data", cars=3, views=4, size=(48, 72), masks_csv=mask_source == "csv")
    plain = all_items(datamodule(root, tmp_path / "cache", cache=False, mask_source=mask_source))
    cached_module = datamodule(root, tmp_path / "cache", cache=True, mask_source=mask_source)
    assert cached_module.train_set.cache is not None
    cached = all_items(cached_module)
    for a, b in zip(plain, cached, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(48, 72))
    first = datamodule(root, tmp_path / "cache", cache=True).train_set.cache
    again = datamodule(root, tmp_path / "cache", cache=True).train_set.cache
    assert again.folder == first.folder  # same files, same size: reused

    photo = root / "train" / f"{car_id(0)}_01.jpg"
    brighter = np.full((48, 72, 3), 250, np.uint8)
    from PIL import Image

    Image.fromarray(brighter).save(photo)
    os.utime(photo, ns=(1, 10**18))  # a new modification time, whatever the file system's resolution
    rebuilt = datamodule(root, tmp_path / "cache", cache=True).train_set.cache
    assert rebuilt.folder != first.folder
    assert not first.folder.exists()  # the stale cache of that size is removed
    assert rebuilt.get(photo.name)[0].min() > 200  # and the new one holds the new photo


def test_corrupt_files_in_the_cache_build_are_reported_by_name(tmp_path):
    root = write_carvana(tmp_path / "data", cars=3, views=3, size=(48, 72))
    bad_photo = root / "train" / f"{car_id(1)}_02.jpg"
    bad_mask = root / "train_masks" / f"{car_id(2)}_03_mask.gif"
    # Valid headers, broken bodies: only decoding finds these.
    bad_photo.write_bytes(bad_photo.read_bytes()[:200])
    bad_mask.write_bytes(bad_mask.read_bytes()[:40])
    with pytest.raises(DataError, match="could not be decoded") as error:
        datamodule(root, tmp_path / "cache", cache=True, check_files=False)
    assert bad_photo.name in str(error.value) and bad_mask.name in str(error.value)
    assert not list((tmp_path / "cache" / "decoded").glob("*/*x*"))  # no half-built cache is left


def test_a_pickled_cache_maps_its_files_again_instead_of_copying_arrays(tmp_path):
    import pickle

    root = write_carvana(tmp_path / "data", cars=2, views=2, size=(48, 72))
    cache = datamodule(root, tmp_path / "cache", cache=True).train_set.cache
    cache.get(cache.names[0])
    clone: DecodedCache = pickle.loads(pickle.dumps(cache))
    assert clone._images is None and len(pickle.dumps(cache)) < 10_000
    assert np.array_equal(clone.get(cache.names[0])[0], cache.get(cache.names[0])[0])


def test_a_listing_checked_once_is_not_read_again(tmp_path, monkeypatch):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(48, 72))
    datamodule(root, tmp_path / "cache", cache=False)
    calls = []
    monkeypatch.setattr(
        "carvana_seg.data.labelled.check_pairs", lambda samples, **_: calls.append(len(samples))
    )
    datamodule(root, tmp_path / "cache", cache=False)
    assert calls == []  # unchanged files: stat only
    (root / "train" / f"{car_id(0)}_01.jpg").touch()
    os.utime(root / "train" / f"{car_id(0)}_01.jpg", ns=(1, 10**18))
    datamodule(root, tmp_path / "cache", cache=False)
    assert calls == [6]


def _fewer_rows(path: Path) -> None:
    np.save(path, np.load(path)[:-1])


def _other_names(path: Path) -> None:  # as many rows, but not these photos': each a KeyError before
    path.write_text(json.dumps([f"other_{row:02d}.jpg" for row in range(len(json.loads(path.read_text())))]))


def _other_size(path: Path) -> None:  # as many rows, another size: trained at it without a word before
    masks = np.load(path)
    np.save(path, np.zeros((len(masks), 8, 12), np.uint8))


def _floats(path: Path) -> None:
    np.save(path, np.load(path).astype(np.float32))


@pytest.mark.parametrize(
    ("damaged", "change"),
    [
        ("names.json", lambda path: path.write_bytes(b"\x00 not what was written")),
        ("names.json", lambda path: path.write_text('{"a": 1}')),  # JSON, not a list of names
        ("images.npy", lambda path: path.write_bytes(b"\x00 not what was written")),
        ("masks.npy", _fewer_rows),  # a whole .npy of another shape
        ("names.json", _other_names),
        ("masks.npy", _other_size),
        ("images.npy", _floats),
    ],
    ids=[
        "names-not-json",
        "names-not-a-list",
        "images-not-npy",
        "masks-a-row-short",
        "names-of-other-photos",
        "masks-of-another-size",
        "images-not-uint8",
    ],
)
def test_a_damaged_cache_is_named_with_what_to_do(tmp_path, damaged, change):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(48, 72))
    folder = datamodule(root, tmp_path / "cache", cache=True).train_set.cache.folder
    change(folder / damaged)
    with pytest.raises(DataError, match=rf"decoded cache {folder} is damaged .*remove that folder"):
        module = datamodule(root, tmp_path / "cache", cache=True)
        module.train_set.load(0)
