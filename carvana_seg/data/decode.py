"""Read Carvana photos and masks from disk, already reduced towards the training size (and write
masks in the same formats).

JPEGs go through simplejpeg's libjpeg-turbo, which decodes straight to 1/2, 1/4 or 1/8 of the full size
(much cheaper than decoding 1918x1280 and shrinking) and, in its strict mode, turns libjpeg's "corrupt
data" warnings into errors: OpenCV and PIL decode a JPEG with a damaged stretch (a hole of zeros from
an interrupted copy) into smeared blocks without an error. Other photos go through OpenCV. The last
step to the exact size uses area interpolation. Masks go through PIL, which reads the Kaggle GIFs about
3x faster than OpenCV, and are resized with exact nearest-neighbour sampling so they stay binary.

Every file is read as stored: an EXIF orientation tag is ignored here as PIL ignores it, so a photo,
its header size and its mask (Kaggle's masks are in the stored orientation) always agree. A file cut
short is an error, never half a photo: `read_image` checks the format's end marker first
(`check_complete` does the same from the last bytes alone; a JPEG without the marker at its end is
walked marker by marker before it is called truncated, as phones append data after it). `check_photo`
and `check_mask` decode a whole file once, for the set-up check that runs before training.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from carvana_seg.errors import DataError

_REDUCTIONS = (8, 4, 2)  # the scales libjpeg decodes to directly (1/8, 1/4, 1/2), smallest first
# What PIL raises on a damaged or hostile file: OSError (UnidentifiedImageError, "image file is
# truncated"), SyntaxError ("broken PNG file"), EOFError and DecompressionBombError, which is no OSError;
# reading a file also ValueError (a PNG text chunk that inflates past PIL's limit, met when the file is
# opened or, after the pixels, when they are decoded).
_PIL_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)
_JPEG, _PNG, _GIF = b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"GIF8"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every whole PNG
_TAIL = 4096  # bytes read from the end of a JPEG or PNG for its end marker


def image_size(path: str | Path, data: bytes | None = None) -> tuple[int, int]:
    """(height, width) of an image or mask file, read from its header only (from `data`, the file's
    bytes, when the caller has them already)."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            width, height = img.size
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read image file {path}: {err}") from err
    return height, width


def _gif_end(data: bytes) -> str | None:
    """Why the GIF `data` is not whole, or None: walks the blocks (a Kaggle mask: ~25 of them) to the
    trailer 0x3B. A file that ends right after a whole image, with only the trailer missing, passes."""
    size, pos, images = len(data), 13, 0
    if size < 13:
        return "is truncated: it ends inside its GIF header"
    if data[10] & 0x80:
        pos += 3 << ((data[10] & 7) + 1)  # the global colour table
    while pos < size:
        block = data[pos]
        if block == 0x3B:
            return None
        if block == 0x2C:  # an image: descriptor, local colour table, LZW code size, data sub-blocks
            if pos + 10 > size:
                break
            packed = data[pos + 9]
            pos += 11 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0)
            images += 1
        elif block == 0x21:  # an extension: label, then sub-blocks
            pos += 2
        else:
            return f"is damaged: an unknown GIF block {block:#04x} at byte {pos}"
        while pos < size and data[pos]:
            pos += data[pos] + 1
        pos += 1  # the block terminator
    if pos == size and images:
        return None
    return "is truncated: its GIF data ends early (no trailer 0x3B)"


def _end_problem(head: bytes, tail: bytes) -> str | None:
    """Why a file that starts with `head` and ends with `tail` (a GIF: the whole file) is cut short,
    or None. JPEG: the end-of-image marker FFD9, then only padding (0x00 or 0xFF); PNG: the IEND chunk;
    GIF: whole blocks up to the trailer. Other formats are not checked."""
    if head.startswith(_JPEG):
        if not tail.rstrip(b"\x00\xff").endswith(b"\xff\xd9"):
            return "is truncated: it does not end with the JPEG end-of-image marker FFD9"
    elif head.startswith(_PNG):
        if not tail.rstrip(b"\x00").endswith(_PNG_END):
            return "is truncated: it does not end with the PNG end chunk IEND"
    elif head.startswith(_GIF):
        return _gif_end(tail)
    return None


def _jpeg_reaches_its_end(data: bytes) -> bool:
    """Whether the JPEG's own structure (segments by their lengths, each scan up to the next marker)
    reaches its end-of-image marker. A file with data after the marker (a phone's trailer, a motion
    photo's video) does; one cut short runs out first (a cut file with other data appended could, by
    chance, seem to reach one there). Asked only of the rare JPEG whose last bytes lack the marker: the
    usual check stays a read of its last 4 KiB."""
    pos, size = 2, len(data)  # after the start-of-image marker
    while pos + 2 <= size:
        if data[pos] != 0xFF:
            return False  # not a marker where the structure needs one: damaged
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF or 0xD0 <= marker <= 0xD7:  # fill byte, restart marker: no length
            pos += 1 if marker == 0xFF else 2
            continue
        if pos + 4 > size:
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker != 0xDA:
            continue
        while True:  # a scan's coded data: 0xFF occurs in it only as FF00 (a data byte) or FFD0-FFD7
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= size:
                return False
            following = data[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                pos += 2
            elif following == 0xFF:
                pos += 1  # fill bytes before the next marker
            else:
                break
    return False


def _cut_short(head: bytes, tail: bytes, whole: Callable[[], bytes]) -> str | None:
    """`_end_problem`, except for a JPEG with data after its end marker: `whole()` (the file's bytes,
    read only then) is walked to the marker before the file is called truncated."""
    problem = _end_problem(head, tail)
    if problem is not None and head.startswith(_JPEG) and _jpeg_reaches_its_end(whole()):
        return None
    return problem


def check_complete(path: str | Path) -> None:
    """Raise a DataError naming `path` when the file is cut short (an interrupted download or copy).

    Cheap: the first bytes and the last 4 KiB of a JPEG or PNG (~20 us), a GIF mask's few KiB whole.
    A truncated file keeps its header, so `image_size` alone passes it.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
            if head.startswith(_GIF):
                tail = head + handle.read()
            else:
                end = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, end - _TAIL))
                tail = handle.read()
    except OSError as err:
        raise DataError(f"cannot read image file {path}: {err}") from err
    try:
        problem = _cut_short(head, tail, Path(path).read_bytes)
    except OSError as err:
        raise DataError(f"cannot read image file {path}: {err}") from err
    if problem is not None:
        raise DataError(f"image file {path} {problem}: fetch it again or remove it")


def _reduction(full: tuple[int, int], size: tuple[int, int] | None, exact: bool = True) -> int:
    """The largest factor libjpeg can decode a `full`-sized JPEG down by that still covers `size`;
    `exact`: only factors that divide the full size."""
    if size is None:
        return 1
    for factor in _REDUCTIONS:
        # libjpeg rounds a reduced size up (1918 / 8 -> 240 pixels covering 1920), which would shift a
        # photo against its mask by up to 2 pixels: what is trained on or scored needs a factor that divides.
        if exact and (full[0] % factor or full[1] % factor):
            continue
        if -(-full[0] // factor) >= size[0] and -(-full[1] // factor) >= size[1]:
            return factor
    return 1


def _decode(
    path: Path, size: tuple[int, int] | None, exact: bool = True
) -> tuple[np.ndarray, tuple[int, int]]:
    """The photo at `path` as RGB, decoded at the largest reduction that still covers `size` (None:
    full size; `exact` as in `_reduction`), and its header's (H, W). Every way the file can be broken
    is a DataError naming it."""
    try:
        raw = path.read_bytes()  # once: the end check, the header and the decode all use these bytes
    except OSError as err:
        raise DataError(f"cannot read image file {path}: {err}") from err
    head = raw[:16]
    problem = _cut_short(head, raw if head.startswith(_GIF) else raw[-_TAIL:], lambda: raw)
    if problem is not None:
        raise DataError(f"image file {path} {problem}: fetch it again or remove it")
    full = image_size(path, raw)
    if head.startswith(_JPEG):
        factor = _reduction(full, size, exact)
        try:
            rgb = simplejpeg.decode_jpeg(
                raw,
                colorspace="RGB",
                strict=True,
                min_height=-(-full[0] // factor),
                min_width=-(-full[1] // factor),
            )
        except ValueError as err:  # libjpeg's message: "Corrupt JPEG data: ...", "Bogus marker length"
            raise DataError(
                f"image file {path} is damaged (libjpeg: {err}): fetch it again or remove it; if it was "
                "never damaged (some cameras write such errors), save it again as a clean JPEG or PNG"
            ) from err
    else:
        factor = 1
        try:
            bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        except cv2.error as err:
            raise DataError(f"cannot decode image {path}: {err}") from err
        if bgr is None:
            raise DataError(f"cannot decode image {path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if rgb.shape[:2] != (-(-full[0] // factor), -(-full[1] // factor)):
        raise DataError(
            f"image {path} decodes to {rgb.shape[1]}x{rgb.shape[0]}, its header says {full[1]}x{full[0]}"
        )
    return rgb, full


def read_photo(path: str | Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """`read_image`'s photo and the (H, W) its header gives, from one read of the file."""
    rgb, full = _decode(Path(path), size)
    if size is not None and rgb.shape[:2] != tuple(size):
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return rgb, full


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of the photo at `path`, resized to `size` = (H, W) when given.

    The photo is decoded as stored (any EXIF orientation ignored, as in its header size and its mask);
    a file cut short or damaged is a DataError naming it, never a partly grey or smeared photo.
    """
    return read_photo(path, size)[0]


def check_photo(path: str | Path) -> tuple[int, int]:
    """(H, W) of a photo, checked by decoding it whole: a JPEG at 1/8 scale (~1.5 ms for a Kaggle
    photo; libjpeg still reads every coefficient), another format at full size. Damaged data then
    stops the set-up check, not a training epoch."""
    return _decode(Path(path), (1, 1), exact=False)[1]


_IDENTITY = np.arange(256, dtype=np.uint8)
_DARK, _BRIGHT = 64, 192  # below: dark; from: bright; between: grey, which no threshold can place
_GREY_SHARE = 0.01  # at most this share of grey pixels (anti-aliased or resampled edges) is tolerated
_LABEL_SHARE = 0.05  # a second dark (or bright) level covering this share of the pixels is a second label


def binarize_mask(
    values: np.ndarray,
    brightness: np.ndarray | None = None,
    path: str | Path | None = None,
    grey_share: float = _GREY_SHARE,
) -> np.ndarray:
    """uint8 {0, 1} mask, 1 for the car, from the stored values of a mask (H, W) uint8.

    `brightness` (256 uint8), when given, is the brightness of each value (a palette's colours); else a
    value is its own brightness (grey levels). The rule, in terms of brightness:
      - one value: car if it is not black (all car), else all background;
      - two values: the brighter is the car (Kaggle's palette GIF {0: black, 1: white}, 0/1 and 0/255
        greys, a red car on black, a car at any palette index painted in any non-black colour);
      - more: dark (< 64) is background and bright (>= 192) car, provided there is some of each, at
        most 1% of the pixels are grey in between (edges) and no second dark or bright level covers
        5% of them (VOC-style 0/1/255 labels); anything else (a photo, a soft mask, class labels
        0/1/2) is refused with a DataError naming `path` (`grey_share`: the share tolerated).
    Two stored values cost one comparison pass, as a plain threshold did.
    """
    if values.dtype != np.uint8:  # bool, or wider integers holding 0..255
        values = np.clip(values, 0, 255).astype(np.uint8)
    brightness = _IDENTITY if brightness is None else brightness
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    between = high - low - 1  # stored values strictly between the lowest and the highest: one pass
    if between <= 0 or not np.count_nonzero(values - np.uint8(low + 1) < np.uint8(between)):
        if brightness[low] == brightness[high]:
            return np.full(values.shape, brightness[low] > 0, np.uint8)
        return (values == (high if brightness[high] > brightness[low] else low)).astype(np.uint8)
    grey = values if brightness is _IDENTITY else cv2.LUT(values, brightness)
    counts = cv2.calcHist([np.ascontiguousarray(grey)], [0], None, [256], [0, 256]).ravel()
    car_from = _car_from(counts, path, grey_share)
    if car_from > 255:
        return np.zeros(grey.shape, np.uint8)
    return (grey >= car_from).astype(np.uint8)


def _car_from(counts: np.ndarray, path: str | Path | None, grey_share: float = _GREY_SHARE) -> int:
    """The lowest brightness that is car (256: none), from the count of pixels at each brightness;
    a DataError naming `path` when the mask is not two-coloured (the rule of `binarize_mask`)."""
    levels = np.flatnonzero(counts)
    if len(levels) == 0:
        return 256
    if len(levels) == 1:
        return 1 if levels[0] > 0 else 256
    if len(levels) == 2:
        return int(levels[1])
    total = counts.sum()
    share = float(counts[_DARK:_BRIGHT].sum() / total)
    where = f"mask {path}" if path is not None else "mask"
    if levels[0] >= _DARK or levels[-1] < _BRIGHT or share > grey_share:
        raise DataError(
            f"{where} is not a two-colour mask: {len(levels)} brightness levels from {levels[0]} to "
            f"{levels[-1]}, {share:.1%} of the pixels grey (64..191), so no threshold can tell car from "
            "background (a photo, a soft mask or class labels?): save it with a black background and a "
            "white car"
        )
    for side, name in ((counts[:_DARK], "dark"), (counts[_BRIGHT:], "bright")):
        # Two dark (or bright) levels that each cover a region are two labels, not a colour and its
        # noise (JPEG's spreads over levels near it along the edges, well under a region's share):
        # VOC-style 0 background, 1 car, 255 outline would otherwise read as the outline.
        first, second = np.argsort(side, kind="stable")[::-1][:2]
        if side[second] > _LABEL_SHARE * total:
            offset = 0 if name == "dark" else _BRIGHT
            raise DataError(
                f"{where} has two {name} levels that each cover a region ({first + offset}: "
                f"{side[first] / total:.1%}, {second + offset}: {side[second] / total:.1%} of the pixels), "
                "so which is car cannot be told (class labels, or an outline label as in VOC's 255?): save "
                "it with a black background and a white car"
            )
    return 128


def _palette(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The RGB colour (256 x 3, int16) and brightness (256, uint8) of each of a palette image's indices
    (those past its palette: black), read from the header: `getpalette` would decode the whole image."""
    palette = img.palette
    if palette is not None and palette.rawmode is None and palette.mode in ("RGB", "RGBA"):
        channels = len(palette.mode)
        raw = np.frombuffer(bytes(palette.palette), np.uint8)
        entries = raw[: len(raw) // channels * channels].reshape(-1, channels)[:256]
    else:
        entries = np.asarray(img.getpalette("RGB") or [0, 0, 0], np.uint8).reshape(-1, 3)[:256]
    colours = np.zeros((256, 3), np.int16)
    colours[: len(entries)] = entries[:, :3]
    brightness = np.zeros(256, np.uint8)
    brightness[: len(entries)] = entries[:, :3].max(axis=1)
    if entries.shape[1] == 4:
        brightness[: len(entries)] = (
            brightness[: len(entries)].astype(np.uint16) * entries[:, 3] + 127
        ) // 255
    transparency = img.info.get("transparency")
    if isinstance(transparency, int) and 0 <= transparency < 256:
        brightness[transparency] = 0
    elif isinstance(transparency, bytes):
        alpha = np.frombuffer(transparency[:256], np.uint8)
        brightness[: len(alpha)] = (brightness[: len(alpha)].astype(np.uint16) * alpha + 127) // 255
    return colours, brightness


def _mask_values(img: Image.Image, path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W) uint8 values of a mask image and, for a palette image, the brightness of each index.

    Brightness is the brightest channel (a red car on black is car), scaled by opacity (a transparent
    pixel is background): palettes through their colours, 16-bit and 32-bit greys scaled to 8 bits.
    """
    if img.mode == "P":
        values, (colours, brightness) = np.asarray(img), _palette(img)
        if not _two_plain_levels(colours, brightness):  # Kaggle's (black, white) needs no count of indices
            used = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
            _check_palette_colours(colours, brightness, used, path)
        return values, brightness
    if img.mode == "L":
        return np.asarray(img), None
    if img.mode == "1":
        return np.asarray(img).view(np.uint8), None
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        wide = np.asarray(img).astype(np.float64)
        top = float(wide.max(initial=0))
        if top > 255:
            wide *= 255 / (65535 if top <= 65535 else top)
        return np.clip(np.rint(wide), 0, 255).astype(np.uint8), None
    rgba = np.asarray(img.convert("RGBA"))
    grey = cv2.max(cv2.max(rgba[..., 0], rgba[..., 1]), rgba[..., 2])
    low, high = cv2.minMaxLoc(grey)[:2]
    if low == high and not np.ptp(rgba[..., 3]):  # transparency, where there is some, tells them apart
        _one_brightness(max(int(np.ptp(rgba[..., c])) for c in range(3)), int(high), path)
    return cv2.multiply(grey, rgba[..., 3], scale=1 / 255), None


def _check_palette_colours(
    colours: np.ndarray, brightness: np.ndarray, used: np.ndarray, path: str | Path | None
) -> None:
    """`_one_brightness` for the palette indices `used` by a mask (`_palette`'s colours and brightness)."""
    if len(np.unique(brightness[used])) == 1:  # one brightness over the whole mask: in which colours?
        _one_brightness(int(np.ptp(colours[used], axis=0).max()), int(brightness[used[0]]), path)


def _one_brightness(spread: int, brightness: int, path: str | Path | None) -> None:
    """A DataError for a mask whose every pixel has one non-black brightness in colours that differ
    clearly (`spread`: the widest range of a channel over them): a red car on white, or on green, which
    brightest-is-car would read as all car, and where nothing tells which colour is the car."""
    if brightness > 0 and spread >= _BRIGHT - _DARK:
        raise DataError(
            f"mask {path} has colours of one brightness ({brightness}): which is car cannot be told; save "
            "it with a black background and a white car"
        )


def read_mask(
    path: str | Path, size: tuple[int, int] | None = None, expect_size: tuple[int, int] | None = None
) -> np.ndarray:
    """uint8 {0, 1} mask (H, W) from a GIF or PNG, at the file's own size or resized to `size`;
    `expect_size` (H, W), when given, is the size the file must have (its photo's).

    Any reasonable encoding of a two-colour mask reads as car = 1 (see `binarize_mask` for the rule):
    palette images through their palette's colours, RGB(A) by their brightest channel; a mask that is
    not two-coloured is refused. The resize happens inside PIL, before the pixels become a numpy array:
    copying a full 1918x1280 mask out of PIL costs more than decoding it. PIL's nearest filter samples
    pixel centres exactly as `resize_mask` does, so both paths give identical masks.
    """
    try:
        with Image.open(path) as img:
            stored = (img.size[1], img.size[0])
            if expect_size is None or stored == tuple(expect_size):
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
                values, brightness = _mask_values(img, path)
    except DataError:  # a ValueError too: ours, already naming the file
        raise
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read mask file {path}: {err}") from err
    if expect_size is not None and stored != tuple(expect_size):
        raise DataError(f"mask {path} is {stored[0]}x{stored[1]}, its photo {tuple(expect_size)}")
    return binarize_mask(values, brightness, path)


def _two_plain_levels(colours: np.ndarray, brightness: np.ndarray) -> bool:
    """A palette (`_palette`'s colours and brightness) of at most two brightness levels, no two clearly
    different colours sharing a lit one (Kaggle's GIFs, `encode_mask`'s): it proves the mask two-coloured."""
    if len(np.unique(brightness)) > 2:
        return False
    lit = colours[brightness > 0]
    return len(lit) < 2 or np.ptp(lit, axis=0).max() < _BRIGHT - _DARK


def _brightness_counts(img: Image.Image, path: str | Path) -> np.ndarray:
    """The number of pixels at each brightness 0..255 of a mask image, counted by PIL (no copy out)."""
    if img.mode in ("L", "1"):
        return np.asarray(img.histogram(), np.float64)
    if img.mode == "P":
        by_index = np.asarray(img.histogram(), np.float64)
        colours, brightness = _palette(img)
        _check_palette_colours(colours, brightness, np.flatnonzero(by_index), path)
        return np.bincount(brightness, weights=by_index, minlength=256)
    values, _ = _mask_values(img, path)
    return np.bincount(values.ravel(), minlength=256).astype(np.float64)


def check_mask(path: str | Path, decode: bool = True) -> tuple[int, int]:
    """(H, W) of a mask file, checked to read as a two-colour mask (a DataError naming it otherwise).

    For 1-bit files and palette files whose palette has at most two brightness levels (Kaggle's GIFs,
    `encode_mask`'s) the header proves two colours; with `decode` (the masks training will read) the
    pixels are decoded too (~6 ms for a Kaggle GIF), so that data PIL cannot decode (a GIF's broken
    LZW stream) stops the set-up check, not a training epoch. Other files (grey or RGB PNGs) are
    always decoded, to count them by brightness (~8 ms for 1918x1280), with half the grey share
    `read_mask` tolerates, so that a mask that passed here is not refused later at another size.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            proven = img.mode == "1" or (img.mode == "P" and _two_plain_levels(*_palette(img)))
            if proven and decode:
                img.load()
            counts = None if proven else _brightness_counts(img, path)
    except DataError:  # a ValueError too: ours, already naming the file
        raise
    except _PIL_ERRORS as err:
        raise DataError(f"cannot read mask file {path}: {err}") from err
    if counts is not None:
        _car_from(counts, path, _GREY_SHARE / 2)
    return height, width


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to (H, W); INTER_NEAREST_EXACT samples pixel centres like PIL does."""
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def mask_coverage(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) share of car in each pixel of a {0, 1} mask area-averaged to `size`, 0..255.

    A soft target for training below full size: a network that learns the share of car per pixel puts
    the 0.5 crossing of its bilinearly up-sampled logits where the edge really is, between pixels,
    instead of where a nearest-neighbour mask's staircase put it.
    """
    if mask.shape[:2] == tuple(size):
        return mask * np.uint8(255)
    return cv2.resize(mask * np.uint8(255), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def encode_mask(mask: np.ndarray, file_format: str = "gif") -> bytes:
    """A {0, 1} mask as file bytes: a palette GIF with indices {0, 1} like Kaggle's, or a 0/255 PNG.

    The GIF is written with `optimize=False`: PIL's optimiser would otherwise renumber the palette of a
    mask that holds a single value, so an all-car mask would read back as all background.
    """
    buffer = io.BytesIO()
    if file_format == "gif":
        image = Image.fromarray(mask.astype(np.uint8), mode="P")
        image.putpalette([0, 0, 0, 255, 255, 255])
        image.save(buffer, format="GIF", optimize=False)
    elif file_format == "png":
        Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(buffer, format="PNG")
    else:
        raise ValueError(f"mask format must be gif or png, got {file_format!r}")
    return buffer.getvalue()
