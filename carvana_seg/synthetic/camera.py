"""The fixed studio camera for each view, and the rasteriser that draws the mesh through it.

Faces are filled with `cv2.fillPoly` into a small inverse-depth z-buffer, so hidden parts are hidden
exactly and the mask (every pixel some car face wins) comes from the very geometry the image shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from carvana_seg.synthetic.car import FULL_SIZE, VIEWS, Car
from carvana_seg.synthetic.mesh import Mesh

_REF_H, _REF_W = FULL_SIZE


@dataclass(frozen=True)
class Camera:
    rot: np.ndarray  # (3, 3) rows: the camera's right, down and forward axes in world coordinates
    pos: np.ndarray  # (3,) world position
    f: float
    cx: float
    cy: float
    yaw: float  # how far the turntable has turned the car, radians
    offset: tuple[float, float]  # where the car stands on the turntable, car frame

    def rotate(self, vecs: np.ndarray) -> np.ndarray:
        """Directions from the car frame to the world (x right, y away from the camera, z up)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        # At yaw 0 the car faces the camera (its x is world -y) and its left is the image's right.
        return vecs @ np.array([[s, -c, 0.0], [c, s, 0.0], [0.0, 0.0, 1.0]])

    def to_world(self, pts: np.ndarray) -> np.ndarray:
        return self.rotate(pts + np.array([*self.offset, 0.0]))

    def project(self, world: np.ndarray) -> np.ndarray:
        """World points to (u, v) pixel coordinates (pixel centres at integers)."""
        cam = (world - self.pos) @ self.rot.T
        return np.column_stack(
            [self.f * cam[:, 0] / cam[:, 2] + self.cx, self.f * cam[:, 1] / cam[:, 2] + self.cy]
        )


def camera(car: Car, size: tuple[int, int], view: int, scale: int = 1) -> Camera:
    height, width = size
    s = min(width / _REF_W, height / _REF_H) * scale
    pos = np.array([0.0, -car.distance, car.cam_height])
    forward = np.array([0.0, 0.0, car.aim]) - pos
    forward /= np.linalg.norm(forward)
    right = np.array([1.0, 0.0, 0.0])
    down = np.cross(forward, right)
    yaw = math.radians(-(view - 1) * 360.0 / VIEWS + car.yaw_jitter[view - 1])
    return Camera(
        rot=np.stack([right, down, forward]),
        pos=pos,
        f=car.focal * s,
        cx=(width * scale - 1) / 2 + car.shift[0] * s,
        cy=(height * scale - 1) / 2 + car.shift[1] * s,
        yaw=yaw,
        offset=car.offset,
    )


def rasterise(mesh: Mesh, cam: Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer the faces: (face id + 1, 0 for none) and inverse depth per pixel."""
    world = cam.to_world(mesh.verts)
    uv = cam.project(world)
    normals = cam.rotate(mesh.normals) @ cam.rot.T  # camera frame
    points = (cam.to_world(mesh.centres) - cam.pos) @ cam.rot.T
    dist = np.einsum("ij,ij->i", normals, points)  # plane offset; negative when the face looks at the camera
    # Inverse depth is affine in the pixel coordinates on a plane: 1/z = a*u + b*v + c.
    with np.errstate(divide="ignore", invalid="ignore"):
        a = normals[:, 0] / (cam.f * dist)
        b = normals[:, 1] / (cam.f * dist)
        c = (normals[:, 2] - normals[:, 0] * cam.cx / cam.f - normals[:, 1] * cam.cy / cam.f) / dist
    # Pixels on a face's rim may lie just off the face, where the plane of a steep face runs far away:
    # keep each face's inverse depth within the range of its corners.
    vert_inv = 1 / ((world - cam.pos) @ cam.rot[2])
    fixed = np.round(uv * 16).astype(np.int32)  # cv2's 4-bit sub-pixel coordinates
    zbuf = np.zeros((height, width), np.float32)
    ids = np.zeros((height, width), np.int16)
    cols = np.arange(width, dtype=np.float32)
    rows = np.arange(height, dtype=np.float32)[:, None]
    for face in np.flatnonzero(dist < -1e-3):  # back faces and faces seen edge-on cover nothing
        lo, hi = mesh.starts[face], mesh.starts[face + 1]
        x0, y0 = np.maximum(np.floor(uv[lo:hi].min(0)).astype(int), 0)
        x1, y1 = np.ceil(uv[lo:hi].max(0)).astype(int) + 1
        x1, y1 = min(x1, width), min(y1, height)
        if x1 <= x0 or y1 <= y0:
            continue
        cover = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(cover, [fixed[lo:hi] - (x0 * 16, y0 * 16)], 1, cv2.LINE_8, shift=4)
        inv_depth = (a[face] * cols[x0:x1] + c[face]) + b[face] * rows[y0:y1]
        np.clip(inv_depth, vert_inv[lo:hi].min(), vert_inv[lo:hi].max(), out=inv_depth)
        zone = zbuf[y0:y1, x0:x1]
        wins = cover.view(bool) & (inv_depth > zone)
        np.copyto(zone, inv_depth, where=wins)
        np.copyto(ids[y0:y1, x0:x1], face + 1, where=wins)
    return ids, zbuf
