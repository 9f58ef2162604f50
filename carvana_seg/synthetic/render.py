"""Renderer behind the synthetic Carvana-like data: `render_view` draws one view of a car, image and mask."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from carvana_seg.synthetic.body import build_mesh
from carvana_seg.synthetic.camera import camera, rasterise
from carvana_seg.synthetic.car import FULL_SIZE, VIEWS, Car
from carvana_seg.synthetic.shading import paint_upsampled, shade, to_display
from carvana_seg.synthetic.studio import backdrop, shadow


def render_view(car: Car, view: int, size: tuple[int, int] = FULL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Render one turntable view.

    Args:
        car: the car, from make_car.
        view: 1..16; 1 is the front, 5 the left side, 9 the rear, 13 the right side.
        size: (height, width) of the output.

    Returns:
        RGB uint8 (H, W, 3) image and uint8 {0, 1} (H, W) mask of the car.
    """
    if not 1 <= view <= VIEWS:
        raise ValueError(f"view must be in 1..{VIEWS}, got {view}")
    height, width = size
    scale = 2 if width < 960 else 1  # small images are rendered at 2x and averaged down, as a camera would
    mesh = build_mesh(car)
    cam = camera(car, size, view, scale)
    h, w = height * scale, width * scale
    ids, zbuf = rasterise(mesh, cam, h, w)

    img = backdrop(car, height, width, scale).copy()
    if car.shadow > 0:
        # The shadow is smooth: compute it at a quarter of the size and stretch it.
        qh, qw = -(-h // 4), -(-w // 4)
        quarter = dataclasses.replace(
            cam, f=cam.f / 4, cx=(cam.cx + 0.5) / 4 - 0.5, cy=(cam.cy + 0.5) / 4 - 0.5
        )
        dark = cv2.resize(shadow(car, mesh, quarter, qh, qw), (4 * qw, 4 * qh))[:h, :w]
        rows, cols = np.nonzero(dark.max(axis=1) > 0.004)[0], np.nonzero(dark.max(axis=0) > 0.004)[0]
        if len(rows):
            zone = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            img[zone] = (img[zone] * (1 - dark[zone])[..., None]).astype(np.uint8)
    # Shading is smooth, so large images are shaded on every other pixel and interpolated.
    step = 2 if w >= 960 else 1
    ys, xs, colour, see_through = shade(car, mesh, cam, ids[::step, ::step], zbuf[::step, ::step], step)
    behind = img[ys * step, xs * step].astype(np.float32)
    paint = to_display(colour) * (1 - see_through[:, None]) + behind * see_through[:, None]
    if step == 1:
        img[ys, xs] = paint.astype(np.uint8)
    elif len(ys):
        paint_upsampled(img, ids, ys, xs, paint, step, to_display(mesh.base * 0.7))

    if scale > 1:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        mask = (rasterise(mesh, camera(car, size, view), height, width)[0] > 0).astype(np.uint8)
    else:
        img = cv2.GaussianBlur(img, (0, 0), 0.6)  # a real lens never gives pixel-sharp edges
        mask = (ids > 0).astype(np.uint8)
    grain = np.random.default_rng((car.noise_seed, view)).integers(-2, 3, (height, width), dtype=np.int8)
    img = cv2.add(img, cv2.merge([grain] * 3), dtype=cv2.CV_8U)
    return img, mask
