"""The car as a mesh of planar polygons with per-face looks, the builder that adds them, and polygon
helpers (normals, insets, clipping) for building parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Material ids. Their look is set per car in body.py; WHEEL is the outer tyre face with a procedural rim.
PAINT, TRIM, GLASS, TYRE, WHEEL, WELL, HEADLIGHT, TAILLIGHT, GRILLE, PLATE, BLACK = range(11)


@dataclass(frozen=True)
class Mesh:
    verts: np.ndarray  # (V, 3) the faces' vertices, face after face
    starts: np.ndarray  # (F + 1,) where each face's vertices begin in verts
    normals: np.ndarray  # (F, 3) unit outward normals
    centres: np.ndarray  # (F, 3) a point on each face
    base: np.ndarray  # (F, 3) linear RGB albedo
    f0: np.ndarray  # (F,) reflectance at normal incidence
    gloss: np.ndarray  # (F,) 1 = mirror-sharp reflections, 0 = blurry
    flop: np.ndarray  # (F,) metallic paint: brighter face-on, darker at grazing angles
    smooth: np.ndarray  # (F,) bool: shade with normals blended across neighbouring faces
    glass: np.ndarray  # (F,) bool: see-through
    wheel: np.ndarray  # (F,) index of the wheel whose outer face this is, -1 otherwise
    wheel_centres: np.ndarray  # (4, 3)


class MeshBuilder:
    def __init__(self) -> None:
        self.faces: list[tuple[np.ndarray, np.ndarray, int, bool, int]] = []

    def add(
        self, poly, material: int, outward=None, smooth: bool = False, wheel: int = -1
    ) -> np.ndarray | None:
        """Add a planar polygon; `outward` (a direction) fixes its winding when geometry alone cannot."""
        poly = np.asarray(poly, float)
        normal = _area_vector(poly)
        size = math.sqrt(normal @ normal)
        if size < 1e-6:
            return None
        normal /= size
        if outward is not None and normal @ np.asarray(outward, float) < 0:
            poly, normal = poly[::-1], -normal
        self.faces.append((poly, normal, material, smooth, wheel))
        return normal

    def decal(
        self, poly, normal: np.ndarray, material: int, lift: float = 0.004, smooth: bool = True
    ) -> None:
        """A polygon lying just above a face (glass, lights, plates), so it wins the depth test there."""
        self.add(np.asarray(poly, float) + lift * normal, material, normal, smooth)

    def hexahedron(self, corners: np.ndarray, material: int) -> None:
        """A convex box from corners[i, j, k] (i, j, k: its three axes); its faces must be planar."""
        centre = corners.reshape(-1, 3).mean(0)
        c = corners
        for quad in (
            [c[0, 0, 0], c[0, 1, 0], c[0, 1, 1], c[0, 0, 1]],
            [c[1, 0, 0], c[1, 1, 0], c[1, 1, 1], c[1, 0, 1]],
            [c[0, 0, 0], c[1, 0, 0], c[1, 0, 1], c[0, 0, 1]],
            [c[0, 1, 0], c[1, 1, 0], c[1, 1, 1], c[0, 1, 1]],
            [c[0, 0, 0], c[1, 0, 0], c[1, 1, 0], c[0, 1, 0]],
            [c[0, 0, 1], c[1, 0, 1], c[1, 1, 1], c[0, 1, 1]],
        ):
            quad = np.asarray(quad)
            self.add(quad, material, quad.mean(0) - centre)

    def box(
        self, xs: tuple[float, float], ys: tuple[float, float], zs: tuple[float, float], material: int
    ) -> None:
        """An axis-aligned box."""
        self.hexahedron(np.array([[[(x, y, z) for z in zs] for y in ys] for x in xs]), material)

    def loft(self, xs, sections, materials, caps=(PAINT, PAINT)) -> list[np.ndarray]:
        """A closed tube through cross-sections (k, 2) of (y, z), counter-clockwise, at increasing x.

        Consecutive sections must have parallel edges, which keeps every quad planar.
        Returns the two cap polygons (rear, front) for decals.
        """
        k = len(sections[0])
        for i in range(len(xs) - 1):
            for j in range(k):
                a = (xs[i], *sections[i][j])
                b = (xs[i + 1], *sections[i + 1][j])
                c = (xs[i + 1], *sections[i + 1][(j + 1) % k])
                d = (xs[i], *sections[i][(j + 1) % k])
                self.add([a, d, c, b], materials[j], smooth=True)  # this winding faces out for CCW sections
        ends = []
        for x, section, sign, material in (
            (xs[0], sections[0], -1, caps[0]),
            (xs[-1], sections[-1], 1, caps[1]),
        ):
            cap = np.column_stack([np.full(k, x), section])
            self.add(cap, material, (sign, 0, 0), smooth=True)
            ends.append(cap)
        return ends

    def build(self, looks: dict[int, tuple], wheel_centres: np.ndarray) -> Mesh:
        polys, normals, mats, smooth, wheel = zip(*self.faces, strict=True)
        lengths = [len(p) for p in polys]
        look = [looks[m] for m in mats]
        return Mesh(
            verts=np.concatenate(polys),
            starts=np.concatenate([[0], np.cumsum(lengths)]),
            normals=np.array(normals),
            centres=np.array([p.mean(0) for p in polys]),
            base=np.array([lk[0] for lk in look], float),
            f0=np.array([lk[1] for lk in look], float),
            gloss=np.array([lk[2] for lk in look], float),
            flop=np.array([lk[3] for lk in look], float),
            smooth=np.array(smooth),
            glass=np.array(mats) == GLASS,
            wheel=np.array(wheel),
            wheel_centres=wheel_centres,
        )


def _area_vector(poly: np.ndarray) -> np.ndarray:
    """Twice the area times the unit normal of a planar polygon (Newell's method; right-hand winding)."""
    (x, y, z), (x2, y2, z2) = poly.T, np.concatenate((poly[1:], poly[:1])).T
    return np.array([y @ z2 - z @ y2, z @ x2 - x @ z2, x @ y2 - y @ x2])


def plane_normal(poly: np.ndarray, outward) -> np.ndarray:
    normal = _area_vector(poly)
    normal /= np.linalg.norm(normal)
    return normal if normal @ np.asarray(outward, float) >= 0 else -normal


def inset(poly: np.ndarray, margins) -> np.ndarray:
    """Shrink a convex counter-clockwise 2-D polygon by a margin per edge (edge i: vertex i to i + 1)."""
    n = len(poly)
    lines = []
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        d = (q - p) / np.linalg.norm(q - p)
        inward = np.array([-d[1], d[0]])
        lines.append((p + margins[i] * inward, d))
    out = []
    for i in range(n):  # vertex i sits where edges i-1 and i meet
        (p1, d1), (p2, d2) = lines[i - 1], lines[i]
        t = _cross2(p2 - p1, d2) / _cross2(d1, d2)
        out.append(p1 + t * d1)
    return np.array(out)


def _cross2(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def clip(poly: np.ndarray, x: float, keep_above: bool) -> np.ndarray:
    """Cut a convex 2-D polygon with the vertical line at x and keep one side (Sutherland-Hodgman)."""
    out = []
    inside = (poly[:, 0] >= x) if keep_above else (poly[:, 0] <= x)
    for i in range(len(poly)):
        p, q = poly[i], poly[(i + 1) % len(poly)]
        if inside[i]:
            out.append(p)
        if inside[i] != inside[(i + 1) % len(poly)]:
            out.append(p + (x - p[0]) / (q[0] - p[0]) * (q - p))
    return np.array(out)


def bilinear(quad: np.ndarray, s0: float, s1: float, t0: float, t1: float) -> np.ndarray:
    """Sub-rectangle of a planar quad (a, b, c, d) in its own (s along a->b, t along a->d) coordinates."""
    a, b, c, d = quad

    def at(s: float, t: float) -> np.ndarray:
        return (1 - s) * (1 - t) * a + s * (1 - t) * b + s * t * c + (1 - s) * t * d

    return np.array([at(s0, t0), at(s1, t0), at(s1, t1), at(s0, t1)])
