"""The studio around the car, drawn in image space: backdrop, lettering, floor, turntable and the car's
soft shadow.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from carvana_seg.synthetic.camera import Camera, camera
from carvana_seg.synthetic.car import FULL_SIZE, Car
from carvana_seg.synthetic.mesh import Mesh

_REF_H = FULL_SIZE[0]


@functools.lru_cache(maxsize=4)
def backdrop(car: Car, height: int, width: int, scale: int) -> np.ndarray:
    """The empty studio for this car's camera (same for all its views): wall, lettering, floor, turntable."""
    studio = car.studio
    cam = camera(car, (height, width), 1, scale)
    h, w = height * scale, width * scale
    horizon = float(cam.project(np.array([[0.0, studio.wall_distance, 0.0]]))[0, 1])
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = (np.arange(w, dtype=np.float32) - w / 2) / (w / 2)
    falloff = 1 - 0.05 * cols**2
    wall = np.asarray(studio.wall, np.float32) * (0.97 + 0.03 * np.clip(rows / horizon, 0, 1))[..., None]
    depth = np.clip((rows - horizon) / (h - horizon), 0, 1)
    floor = np.asarray(studio.floor, np.float32) * (1 + 0.22 * depth)[..., None]
    # Large soft brightness variations on the floor, as scuffs and uneven lighting give real floors.
    rng = np.random.default_rng(car.noise_seed)
    blotches = cv2.resize(
        rng.normal(0, 0.025, (6, 9)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    floor = floor * (1 + blotches)[..., None]
    is_floor = (rows >= horizon)[..., None]
    img = np.where(is_floor, floor, wall) * falloff[None, :, None]
    band = (rows > horizon - 0.012 * h) & (rows < horizon)
    img = np.where(band[..., None], np.minimum(img + 8, 255), img)

    # The turntable: a slightly different disc with a thin dark rim.
    angles = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    ring = np.column_stack(
        [studio.disc_radius * np.cos(angles), studio.disc_radius * np.sin(angles), np.zeros(180)]
    )
    disc = np.round(cam.project(ring) * 16).astype(np.int32)
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [disc], 1, cv2.LINE_AA, shift=4)
    img *= (1 + (studio.disc_shade - 1) * inside)[..., None]
    edge = np.zeros((h, w), np.uint8)
    cv2.polylines(edge, [disc], True, 255, max(1, round(2 * h / _REF_H)), cv2.LINE_AA, shift=4)
    img *= (1 - 0.12 * edge / 255.0)[..., None]

    # Big dark lettering on the backdrop, stretched across most of the width, standing on the floor line.
    text_h = studio.letter_height * h
    (tw, th), base = cv2.getTextSize(studio.letters, cv2.FONT_HERSHEY_DUPLEX, 4.0, 5)
    canvas = np.zeros((th + base + 24, tw + 24), np.uint8)
    cv2.putText(canvas, studio.letters, (12, th + 12), cv2.FONT_HERSHEY_DUPLEX, 4.0, 255, 5, cv2.LINE_AA)
    ink_rows, ink_cols = np.nonzero(canvas.any(axis=1))[0], np.nonzero(canvas.any(axis=0))[0]
    canvas = canvas[ink_rows[0] : ink_rows[-1] + 1, ink_cols[0] : ink_cols[-1] + 1]
    target_w, target_h = int(0.86 * w), max(2, int(text_h))
    glyphs = cv2.resize(canvas, (target_w, target_h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    top = int(horizon - 0.045 * h - target_h)
    left = (w - target_w) // 2
    if top > 0:
        zone = img[top : top + target_h, left : left + target_w]
        zone += (studio.letter_grey - zone) * glyphs[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def shadow(car: Car, mesh: Mesh, cam: Camera, height: int, width: int) -> np.ndarray:
    """How much the car darkens the floor, at (height, width): soft shade around it, darker under it."""
    ppm = cam.f / car.distance  # pixels per metre at the turntable
    world = cam.to_world(mesh.verts)
    drift = np.asarray(car.studio.light)
    ground = world[:, :2] + drift * world[:, 2:3]  # each vertex dropped to the floor along the light
    hull = cv2.convexHull(ground.astype(np.float32)).reshape(-1, 2)

    def layer(polys, sigma_m: float) -> np.ndarray:
        canvas = np.zeros((height, width), np.float32)
        for poly in polys:
            pts = cam.project(np.column_stack([poly, np.zeros(len(poly))]))
            cv2.fillConvexPoly(canvas, np.round(pts * 16).astype(np.int32), 1.0, cv2.LINE_AA, shift=4)
        return cv2.GaussianBlur(canvas, (0, 0), max(0.5, sigma_m * ppm))

    half, r, wb = car.width / 2, car.wheel_radius, car.wheelbase / 2
    under = np.array(
        [(-wb - 0.3, -half + 0.1), (wb + 0.3, -half + 0.1), (wb + 0.3, half - 0.1), (-wb - 0.3, half - 0.1)]
    )
    tyres = []
    for x in (-wb, wb):
        for s in (1, -1):
            y0, y1 = s * (half - 0.03), s * (half - 0.03 - car.tyre_width)
            tyres.append(
                np.array([(x - 0.35 * r, y0), (x + 0.35 * r, y0), (x + 0.35 * r, y1), (x - 0.35 * r, y1)])
            )

    def on_floor(pts2: np.ndarray) -> np.ndarray:
        return cam.to_world(np.column_stack([pts2, np.zeros(len(pts2))]))[:, :2]

    dark = (
        0.42 * layer([hull], 0.35)
        + 0.35 * layer([on_floor(under)], 0.12)
        + 0.5 * layer(map(on_floor, tyres), 0.04)
    )
    return np.clip(dark, 0, 0.85) * car.shadow
