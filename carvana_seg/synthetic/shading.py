"""Colours of the car's pixels: soft studio light from above, a Fresnel-weighted reflection of the studio
(bright walls, grey floor, a sharp horizon line on the doors) and procedural rims, per pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

from carvana_seg.synthetic.camera import Camera
from carvana_seg.synthetic.car import Car
from carvana_seg.synthetic.mesh import Mesh


def _smoothstep(lo: float, hi, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _environment(r: np.ndarray, gloss: np.ndarray) -> np.ndarray:
    """Radiance of the studio along unit directions r: grey floor, bright walls, brighter lights above."""
    e = r[:, 2]
    blur = 0.015 + 0.25 * (1 - gloss)
    wall = _smoothstep(-blur, blur, e)
    lights = _smoothstep(0.35 - blur, 0.6 + blur, e)
    # The dark lettering on the backdrop and the dimmer photographer's side of the room.
    letters = _smoothstep(0.01, 0.03, e) * (1 - _smoothstep(0.06, 0.09, e)) * (r[:, 1] > 0.3)
    behind = _smoothstep(0.4, 0.9, -r[:, 1]) * (1 - lights)
    return (0.24 + 0.62 * wall + 0.5 * lights - 0.3 * letters * gloss) * (1 - 0.6 * behind)


def shade(car: Car, mesh: Mesh, cam: Camera, ids: np.ndarray, zbuf: np.ndarray, step: int = 1):
    """Linear RGB of every car pixel of ids/zbuf, which sample the image every `step` pixels.

    Returns (rows, cols, colours) in the sampled grid.
    """
    f32 = np.float32
    ys, xs = np.nonzero(ids)
    if not len(ys):
        return ys, xs, np.zeros((0, 3), f32), np.zeros(0, f32)
    face = ids[ys, xs].astype(np.intp) - 1
    rot = cam.rot.astype(f32)
    rays = np.empty((len(xs), 3), f32)
    rays[:, 0] = (xs.astype(f32) * step - f32(cam.cx)) / f32(cam.f)
    rays[:, 1] = (ys.astype(f32) * step - f32(cam.cy)) / f32(cam.f)
    rays[:, 2] = 1
    rays = rays @ rot  # world direction through each pixel, scaled so its camera-forward part is 1
    depth = 1 / zbuf[ys, xs]
    height = f32(cam.pos[2]) + rays[:, 2] * depth
    view = rays / np.sqrt(np.einsum("ij,ij->i", rays, rays))[:, None]

    normals_w = cam.rotate(mesh.normals).astype(f32)
    normal = normals_w[face]
    # Blend the normals of neighbouring body faces over a few pixels: the facets of the loft and the
    # creases between panels then read as rounded sheet metal instead of a faceted box.
    y0, x0 = ys.min(), xs.min()
    roi = ids[y0 : ys.max() + 1, x0 : xs.max() + 1]
    table = np.vstack([np.zeros((1, 3), f32), normals_w * mesh.smooth[:, None]])
    ksize = max(3, int(0.008 * ids.shape[1] * step) // step | 1)
    smooth = mesh.smooth[face]
    blended = cv2.blur(table[roi], (ksize, ksize))[ys[smooth] - y0, xs[smooth] - x0]
    normal[smooth] = blended / np.maximum(np.sqrt(np.einsum("ij,ij->i", blended, blended)), 1e-6)[:, None]

    base = mesh.base.astype(f32)[face]
    f0, gloss = mesh.f0.astype(f32)[face], mesh.gloss.astype(f32)[face]
    rim = np.flatnonzero(mesh.wheel[face] >= 0)
    if len(rim):
        points = cam.pos + rays[rim] * depth[rim, None]
        q = points - cam.to_world(mesh.wheel_centres)[mesh.wheel[face[rim]]]
        qx, qz = q @ cam.rotate(np.array([1.0, 0.0, 0.0])), q[:, 2]
        rho = np.hypot(qx, qz) / car.wheel_radius
        inside = rho < car.rim_ratio
        # Spokes widen towards the hub; the lip and the hub are solid metal.
        spoke = np.cos(car.spokes * np.arctan2(qz, qx)) > 0.75 - 0.9 * (car.rim_ratio - rho)
        metal = inside & ((rho > car.rim_ratio - 0.07) | (rho < 0.2) | spoke)
        base[rim] = np.where(metal[:, None], car.rim_colour, np.where(inside[:, None], 0.01, base[rim]))
        f0[rim] = np.where(metal, 0.3, f0[rim])
        gloss[rim] = np.where(metal, 0.5, gloss[rim])

    cos_view = np.einsum("ij,ij->i", view, normal)
    facing = np.clip(-cos_view, 0, 1)
    # Soft studio light: bright from above, dim from the floor, a little fill from the camera side.
    irradiance = 0.65 + 0.35 * normal[:, 2] + 0.15 * facing
    occlusion = 1 - 0.5 * np.exp(-height / f32(0.15))  # the floor and the car's underside shade low parts
    flop = mesh.flop.astype(f32)[face]
    diffuse = irradiance * occlusion * ((1 - flop) + flop * (0.35 + 0.9 * facing * facing))
    fresnel = f0 + (1 - f0) * (1 - facing) ** 5 * (0.3 + 0.7 * gloss)
    reflected = view - (2 * cos_view)[:, None] * normal
    env = _environment(reflected, gloss) * fresnel * (0.5 + 0.5 * occlusion)
    colour = base * (diffuse * (1 - fresnel))[:, None]
    colour += env[:, None]
    # Windows show the studio through the car above the seats, more so when seen head-on.
    see_through = mesh.glass[face] * facing * _smoothstep(car.belt + 0.1, car.belt + 0.3, height) * 0.4
    return ys, xs, colour, see_through


_TO_DISPLAY = np.round(255 * np.linspace(0, 1, 4096) ** (1 / 2.2)).astype(np.uint8)


def to_display(linear: np.ndarray) -> np.ndarray:
    return _TO_DISPLAY[(np.clip(linear, 0, 1) * 4095).astype(np.intp)]


def paint_upsampled(img, ids, ys, xs, colours, step: int, flat: np.ndarray) -> None:
    """Paint the car pixels of img (where ids > 0) from colours sampled at (ys, xs) * step.

    Interpolation only mixes car samples (normalised by their weight); car pixels with no car sample
    nearby (an antenna thinner than the grid) take their face's flat colour.
    """
    rows, cols = np.nonzero(ids.any(axis=1))[0], np.nonzero(ids.any(axis=0))[0]
    y0, x0 = rows[0] // step * step, cols[0] // step * step
    y1, x1 = rows[-1] + 1, cols[-1] + 1
    sy0, sx0 = y0 // step, x0 // step
    samples = np.zeros(((y1 - y0) // step + 2, (x1 - x0) // step + 2, 4), np.float32)
    samples[ys - sy0, xs - sx0, :3] = colours
    samples[ys - sy0, xs - sx0, 3] = 1
    # Output pixel (x, y) of the zone reads the samples at (x / step, y / step).
    to_samples = np.array([[1 / step, 0, 0], [0, 1 / step, 0]])
    up = cv2.warpAffine(
        samples, to_samples, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    weight = up[..., 3]
    rgb = up[..., :3] / np.maximum(weight, 1e-3)[..., None]
    zone_ids = ids[y0:y1, x0:x1]
    lonely = (zone_ids > 0) & (weight < 0.2)
    rgb[lonely] = flat[zone_ids[lonely] - 1]
    np.copyto(img[y0:y1, x0:x1], rgb.astype(np.uint8), where=(zone_ids > 0)[..., None])
