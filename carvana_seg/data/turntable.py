"""Renderer behind the synthetic Carvana-like data: cars as simple 3-D shapes on a studio turntable.

A car is built in its own frame (x forward, y to the car's left, z up, metres, origin on the floor under
the middle of the wheelbase) from planar polygons: a lofted lower body with wheel arches, a cabin with
glass, four wheels, mirrors, lights, plates and sometimes an antenna and roof rails. A fixed camera
looks at the turntable; view v turns the car by (v - 1) * 22.5 degrees, so view 1 shows the front,
view 5 the left side with the nose to the image's left, view 9 the rear (Carvana's numbering).

Faces are filled with `cv2.fillPoly` into a small inverse-depth z-buffer, so hidden parts are hidden
exactly and the mask (every pixel some car face wins) comes from the very geometry the image shows.
Shading is per pixel: soft studio light from above, a Fresnel-weighted reflection of the studio (bright
walls, grey floor, a sharp horizon line on the doors) and procedural rims. The backdrop, floor,
turntable and soft shadow are drawn in image space.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

VIEWS = 16
FULL_SIZE = (1280, 1918)  # (height, width) of Kaggle's train/ images
_REF_H, _REF_W = FULL_SIZE

# Material ids. Their look is set per car in _build_mesh; WHEEL is the outer tyre face with a procedural rim.
PAINT, TRIM, GLASS, TYRE, WHEEL, WELL, HEADLIGHT, TAILLIGHT, GRILLE, PLATE, BLACK = range(11)


@dataclass(frozen=True)
class Studio:
    """The photo booth a car was shot in: it stays the same for all 16 views of the car."""

    wall: tuple[float, float, float]  # display RGB (0-255) of the backdrop near the floor
    floor: tuple[float, float, float]  # display RGB of the floor near the wall
    wall_distance: float  # metres behind the turntable centre where the floor meets the wall
    disc_radius: float  # turntable radius, metres
    disc_shade: float  # turntable brightness relative to the floor
    letters: str  # the big dark lettering on the backdrop
    letter_grey: float
    letter_height: float  # fraction of the image height
    light: tuple[float, float]  # horizontal drift of the shadow per metre of height (world x, y)


@dataclass(frozen=True)
class Car:
    """Everything needed to render one car's 16 views; lengths in metres, colours linear RGB."""

    car_id: str
    body: str  # sedan, coupe, hatchback, wagon or suv
    length: float
    width: float
    wheelbase: float
    front_overhang: float
    clearance: float  # sill height above the floor
    belt: float  # height of the window line (the bonnet meets the windscreen here)
    roof: float
    nose: float  # height of the bonnet's front edge
    tail: float  # height of the boot lid's rear edge
    cabin: tuple[float, float, float, float]  # x of rear-window base, roof rear, roof front, windscreen base
    roof_inset: float  # tumblehome: the roof is this much narrower than the body on each side
    bevel: float  # size of the chamfer between the body sides and the bonnet/boot
    wheel_radius: float
    tyre_width: float
    colour_name: str
    colour: tuple[float, float, float]
    metallic: bool
    rim_colour: tuple[float, float, float]
    rim_ratio: float  # rim radius over tyre radius
    spokes: int
    trim: bool  # black plastic cladding along the sills and bumpers
    mirror_black: bool
    antenna: float  # antenna length, 0 for none
    antenna_width: float
    antenna_tilt: float  # degrees back from vertical
    roof_rails: bool
    offset: tuple[float, float]  # where the car stands on the turntable (car frame), metres
    distance: float  # camera distance from the turntable axis
    cam_height: float
    aim: float  # height the camera points at, over the turntable axis
    focal: float  # pixels at full size
    shift: tuple[float, float]  # principal point offset from the image centre, pixels at full size
    yaw_jitter: tuple[float, ...]  # per-view turntable error, degrees
    studio: Studio
    noise_seed: int
    shadow: float = 1.0  # shadow strength (0 turns the shadow off; tests use it)


# ----------------------------------------------------------------------------------------------------
# Sampling cars


class _Body(NamedTuple):
    """Ranges a body style draws from (metres); cabin: stations as fractions of the length from the tail."""

    weight: float
    length: tuple[float, float]
    width: tuple[float, float]
    belt: tuple[float, float]
    roof: tuple[float, float]
    wheel: tuple[float, float]
    clearance: tuple[float, float]
    cabin: tuple[float, float, float, float]  # rear-window base, roof rear, roof front, windscreen base


# fmt: off
_BODIES = {  # weight, length, width, belt, roof; wheel radius, clearance, cabin
    "sedan": _Body(0.33, (4.5, 5.0), (1.78, 1.90), (0.88, 0.97), (1.40, 1.50),
        (0.32, 0.35), (0.13, 0.17), (0.20, 0.34, 0.61, 0.73)),
    "coupe": _Body(0.10, (4.4, 4.9), (1.78, 1.90), (0.90, 0.98), (1.30, 1.38),
        (0.31, 0.34), (0.11, 0.14), (0.22, 0.40, 0.58, 0.71)),
    "hatchback": _Body(0.20, (3.9, 4.4), (1.70, 1.82), (0.88, 0.97), (1.45, 1.55),
        (0.30, 0.33), (0.13, 0.16), (0.04, 0.11, 0.60, 0.73)),
    "wagon": _Body(0.07, (4.6, 4.95), (1.78, 1.88), (0.88, 0.96), (1.44, 1.52),
        (0.31, 0.34), (0.13, 0.16), (0.03, 0.07, 0.62, 0.74)),
    "suv": _Body(0.30, (4.4, 5.0), (1.82, 1.96), (1.00, 1.12), (1.65, 1.80),
        (0.36, 0.40), (0.19, 0.24), (0.03, 0.06, 0.63, 0.76)),
}
# fmt: on

# Linear RGB paints and how often they occur: dark cars on their own shadow and white/silver cars on
# the white backdrop are the hard cases, and together they make up most of the fleet, as at Carvana.
_PAINTS = {  # name: (weight, colour, metallic)
    "black": (0.18, (0.010, 0.010, 0.012), False),
    "dark grey": (0.10, (0.045, 0.048, 0.052), True),
    "grey": (0.06, (0.15, 0.155, 0.16), True),
    "silver": (0.15, (0.42, 0.43, 0.45), True),
    "white": (0.20, (0.76, 0.76, 0.74), False),
    "red": (0.09, (0.42, 0.02, 0.02), False),
    "blue": (0.08, (0.03, 0.08, 0.30), True),
    "dark blue": (0.04, (0.010, 0.018, 0.07), True),
    "green": (0.03, (0.05, 0.11, 0.05), True),
    "beige": (0.04, (0.36, 0.29, 0.19), True),
    "orange": (0.03, (0.55, 0.16, 0.02), False),
}
_WORDS = ("AUTOSTUDIO", "TURNTABLE", "CARSHOTS", "AUTOPHOTO", "DRIVEWAY")


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    probs = np.array(list(weights.values()))
    return list(weights)[rng.choice(len(weights), p=probs / probs.sum())]


def make_car(seed: int, index: int, *, split: str = "train") -> Car:
    """Sample car `index` of the set with `seed`; independent of how many cars the set has.

    Args:
        seed: data set seed.
        index: car number within the split.
        split: "train" or "test"; the two splits draw different cars from the same seed.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(("train", "test").index(split), index))
    )
    car_id = f"{int(rng.integers(0, 2**48)):012x}"
    body = _pick(rng, {name: style.weight for name, style in _BODIES.items()})
    style = _BODIES[body]
    u = rng.uniform
    length, width = u(*style.length), u(*style.width)
    belt, roof = u(*style.belt), u(*style.roof)
    wheel_radius = u(*style.wheel)
    wheelbase = length * u(0.57, 0.62)
    front_overhang = (length - wheelbase) * u(0.52, 0.58)
    tail_x = -wheelbase / 2 - (length - wheelbase - front_overhang)
    cabin = tuple(tail_x + length * (f + u(-0.015, 0.015)) for f in style.cabin)
    cabin = (max(cabin[0], tail_x + 0.15), *cabin[1:])  # keep the rear window on the full-width body
    colour_name = _pick(rng, {name: paint[0] for name, paint in _PAINTS.items()})
    _, colour, metallic = _PAINTS[colour_name]
    shade = u(0.85, 1.15)
    colour = tuple(float(np.clip(c * shade * u(0.97, 1.03), 0, 0.9)) for c in colour)
    rim_colour = [(0.45, 0.46, 0.48), (0.02, 0.02, 0.022), (0.12, 0.12, 0.13)][
        rng.choice(3, p=[0.6, 0.25, 0.15])
    ]
    has_antenna = rng.random() < 0.35
    studio = Studio(
        wall=tuple(float(v) for v in u(236, 250) + u(-3, 3, 3)),
        floor=tuple(float(v) for v in (u(132, 175) + np.array([-3, 0, 3]) * u(-1, 1.5))),
        wall_distance=u(9.0, 13.0),
        disc_radius=u(2.7, 3.3),
        disc_shade=u(0.95, 1.06),
        letters=_WORDS[rng.integers(len(_WORDS))],
        letter_grey=u(70, 105),
        letter_height=u(0.10, 0.125),
        light=(u(-0.25, 0.25), u(-0.1, 0.35)),
    )
    car = Car(
        car_id=car_id,
        body=body,
        length=length,
        width=width,
        wheelbase=wheelbase,
        front_overhang=front_overhang,
        clearance=u(*style.clearance),
        belt=belt,
        roof=roof,
        nose=min(belt - 0.04, max(belt - u(0.10, 0.20), 2 * wheel_radius + 0.17)),  # bonnet clears the arches
        tail=belt - (u(0.02, 0.08) if body in ("sedan", "coupe") else 0.0),
        cabin=cabin,
        roof_inset=u(0.14, 0.22),
        bevel=u(0.05, 0.10),
        wheel_radius=wheel_radius,
        tyre_width=u(0.20, 0.26),
        colour_name=colour_name,
        colour=colour,
        metallic=bool(metallic),
        rim_colour=rim_colour,
        rim_ratio=u(0.62, 0.76),
        spokes=int(rng.choice([5, 5, 6, 7, 10])),
        trim=bool(rng.random() < (0.5 if body == "suv" else 0.15)),
        mirror_black=bool(rng.random() < 0.25),
        antenna=u(0.30, 0.60) if has_antenna else 0.0,
        antenna_width=u(0.011, 0.019),
        antenna_tilt=u(0, 30),
        roof_rails=bool(body in ("suv", "wagon") and rng.random() < 0.45),
        offset=(u(-0.12, 0.12), u(-0.08, 0.08)),
        distance=u(5.3, 6.0),
        cam_height=u(1.75, 2.1),
        aim=u(0.5, 0.7),
        focal=u(1540, 1660),
        shift=(u(-25, 25), u(-25, 25)),
        yaw_jitter=tuple(float(v) for v in rng.uniform(-0.8, 0.8, VIEWS) + u(-1.5, 1.5)),
        studio=studio,
        noise_seed=int(rng.integers(0, 2**31)),
    )
    return _fit_in_frame(car)


def _fit_in_frame(car: Car, margin: float = 0.035) -> Car:
    """Move the camera back until all views keep the car `margin` (a fraction of the frame) off the edges."""
    verts = _build_mesh(car).verts
    for _ in range(30):
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        for view in range(1, VIEWS + 1):
            cam = _camera(car, FULL_SIZE, view)
            uv = cam.project(cam.to_world(verts))
            lo, hi = np.minimum(lo, uv.min(0)), np.maximum(hi, uv.max(0))
        if (
            lo[0] > margin * _REF_W
            and lo[1] > margin * _REF_H
            and hi[0] < (1 - margin) * _REF_W
            and (hi[1] < (1 - margin) * _REF_H)
        ):
            return car
        car = dataclasses.replace(car, distance=car.distance * 1.04)
    return car


# ----------------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class _Mesh:
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


class _MeshBuilder:
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

    def build(self, looks: dict[int, tuple], wheel_centres: np.ndarray) -> _Mesh:
        polys, normals, mats, smooth, wheel = zip(*self.faces, strict=True)
        lengths = [len(p) for p in polys]
        look = [looks[m] for m in mats]
        return _Mesh(
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


def _inset(poly: np.ndarray, margins) -> np.ndarray:
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


def _clip(poly: np.ndarray, x: float, keep_above: bool) -> np.ndarray:
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


def _bilinear(quad: np.ndarray, s0: float, s1: float, t0: float, t1: float) -> np.ndarray:
    """Sub-rectangle of a planar quad (a, b, c, d) in its own (s along a->b, t along a->d) coordinates."""
    a, b, c, d = quad

    def at(s: float, t: float) -> np.ndarray:
        return (1 - s) * (1 - t) * a + s * (1 - t) * b + s * t * c + (1 - s) * t * d

    return np.array([at(s0, t0), at(s1, t0), at(s1, t1), at(s0, t1)])


@dataclass(frozen=True)
class _Layout:
    """Key lengths of a car derived from its parameters (car frame, metres)."""

    half: float  # half the body width
    rear_axle: float
    front_axle: float
    nose: float
    tail: float
    arch: float  # wheel-arch radius
    cabin_base: float  # half-width of the cabin at the window line
    roof_half: float  # half-width of the roof


def _layout(car: Car) -> _Layout:
    nose = car.wheelbase / 2 + car.front_overhang
    half = car.width / 2
    return _Layout(
        half=half,
        rear_axle=-car.wheelbase / 2,
        front_axle=car.wheelbase / 2,
        nose=nose,
        tail=nose - car.length,
        arch=car.wheel_radius + 0.04,  # the gap above the tyre shows the dark wheel well
        cabin_base=half - car.bevel - 0.08,  # inside the top of the body wherever the sides lean in most
        roof_half=half - car.roof_inset,
    )


def _build_mesh(car: Car) -> _Mesh:
    """All faces of the car in its own frame, with their looks (cached per car)."""
    # The camera distance (moved by _fit_in_frame) and the shadow do not change the car itself.
    return _cached_mesh(dataclasses.replace(car, distance=0.0, shadow=0.0))


@functools.lru_cache(maxsize=8)
def _cached_mesh(car: Car) -> _Mesh:
    mb = _MeshBuilder()
    lay = _layout(car)
    rear_cap, front_cap = _lower_body(mb, car, lay)
    _lamps_and_plates(mb, front_cap, front=True)
    _lamps_and_plates(mb, rear_cap, front=False)
    _cabin(mb, car, lay)
    _mirrors(mb, car, lay)
    wheel_centres = _wheels(mb, car, lay)
    if car.antenna > 0:
        _antenna(mb, car)
    if car.roof_rails:
        for s in (1, -1):  # bars on short posts, with a thin gap under them
            y, x0, x1, roof = s * (lay.roof_half - 0.07), car.cabin[1] + 0.08, car.cabin[2] - 0.08, car.roof
            mb.box((x0, x1), (y - 0.02, y + 0.02), (roof + 0.06, roof + 0.09), BLACK)
            for xa in (x0, x1 - 0.06):
                mb.box((xa, xa + 0.06), (y - 0.02, y + 0.02), (roof - 0.01, roof + 0.06), BLACK)

    looks = {  # albedo (linear RGB), reflectance at normal incidence, gloss, metallic flop
        PAINT: (car.colour, 0.05, 1.0, 0.5 if car.metallic else 0.0),
        TRIM: ((0.022, 0.022, 0.024), 0.03, 0.3, 0.0),
        GLASS: ((0.010, 0.012, 0.014), 0.07, 1.0, 0.0),
        TYRE: ((0.028, 0.028, 0.03), 0.02, 0.1, 0.0),
        WHEEL: ((0.028, 0.028, 0.03), 0.02, 0.1, 0.0),  # the tyre's sidewall; _shade paints the rim
        WELL: ((0.008, 0.008, 0.009), 0.0, 0.0, 0.0),
        HEADLIGHT: ((0.42, 0.44, 0.47), 0.25, 1.0, 0.0),
        TAILLIGHT: ((0.32, 0.015, 0.015), 0.1, 1.0, 0.0),
        GRILLE: ((0.018, 0.018, 0.02), 0.06, 0.5, 0.0),
        PLATE: ((0.72, 0.72, 0.70), 0.02, 0.2, 0.0),
        BLACK: ((0.018, 0.018, 0.02), 0.05, 0.5, 0.0),
    }
    return mb.build(looks, np.array(wheel_centres))


def _lower_body(mb: _MeshBuilder, car: Car, lay: _Layout) -> list[np.ndarray]:
    """The body below the windows, lofted from tail to nose; returns its (rear, front) end faces."""
    r, arch = car.wheel_radius, lay.arch
    # Plan-view rounding (length, depth) of the nose and tail; the nose is round enough to show the tyres.
    round_front = (min(0.5, car.front_overhang - arch - 0.05), 0.2)
    round_rear = (0.12, 0.08) if car.tail >= car.belt else (0.30, 0.16)

    def bumper_bottom(x: float) -> float:  # the underside rises towards both bumpers
        xp = [lay.tail, lay.rear_axle - arch, lay.front_axle + arch, lay.nose]
        c = car.clearance
        return float(np.interp(x, xp, [c + 0.15, c, c, c + 0.12]))

    # Stations (x, height of the underside); over each wheel the underside jumps up into a half circle.
    stations = [(x, bumper_bottom(x)) for x in np.linspace(lay.tail, lay.tail + round_rear[0], 5)]
    for axle in (lay.rear_axle, lay.front_axle):
        if axle == lay.front_axle:
            stations.append((0.0, car.clearance))
        stations.append((axle - arch, bumper_bottom(axle - arch)))
        stations += [(axle + arch * math.cos(a), r + arch * math.sin(a)) for a in np.linspace(math.pi, 0, 11)]
        stations.append((axle + arch, bumper_bottom(axle + arch)))
    stations += [(x, bumper_bottom(x)) for x in np.linspace(lay.nose - round_front[0], lay.nose, 6)]

    x_bl, x_ws = car.cabin[0], car.cabin[3]
    top_x = [lay.tail, lay.tail + 0.4 * (x_bl - lay.tail), x_bl, x_ws, lay.nose - 0.25, lay.nose]
    top_z = [car.tail - 0.03, car.tail, car.belt, car.belt, car.nose + 0.04, car.nose]
    # The sides bulge out at a character line and lean in above and below it, so the upper half mirrors
    # the bright backdrop and the lower half the grey floor, with a horizon line between them.
    z_char = car.clearance + 0.45 * (car.belt - car.bevel - car.clearance)
    lean_up, lean_down = 0.16, 0.12  # constant slopes keep every quad of the loft planar
    trim_height = 0.12 if car.trim else 0.0
    xs, sections = [], []
    for x, bottom in stations:
        (rx, ry), into = (
            (round_front, x - lay.nose + round_front[0])
            if x > 0
            else (round_rear, lay.tail + round_rear[0] - x)
        )
        t = min(max(into / rx, 0.0), 1.0)
        w = lay.half - ry * (1 - math.sqrt(1 - t * t))
        z_top = float(np.interp(x, top_x, top_z))
        z_shoulder = max(z_top - car.bevel, bottom + 0.03)  # only big wheels under a low bonnet hit the max
        z_mid = min(max(z_char, bottom), z_shoulder - 0.02)
        z_trim = bottom + (min(trim_height, (z_mid - bottom) / 2) if car.trim else (z_mid - bottom) / 2)
        w_shoulder = w - lean_up * (z_shoulder - z_mid)
        right = [
            (w - lean_down * (z_mid - bottom), bottom),
            (w - lean_down * (z_mid - z_trim), z_trim),
            (w, z_mid),
            (w_shoulder, z_shoulder),
            (w_shoulder - car.bevel, z_top),
        ]
        sections.append(right + [(-y, z) for y, z in reversed(right)])
        xs.append(x)
    side = TRIM if car.trim else PAINT
    return mb.loft(xs, sections, [side, PAINT, PAINT, PAINT, PAINT, PAINT, PAINT, PAINT, side, TRIM])


def _lamps_and_plates(mb: _MeshBuilder, cap: np.ndarray, front: bool) -> None:
    """Lights, grille and number plate on an end face of the body."""
    x, w, z0, z1 = cap[0, 0], cap[3, 1], cap[0, 2], cap[3, 2]  # cap[3]: shoulder corner, cap[0]: bottom
    normal = np.array([1.0 if front else -1.0, 0.0, 0.0])

    def rect(y0: float, y1: float, za: float, zb: float) -> list[tuple[float, float, float]]:
        return [(x, y0, za), (x, y1, za), (x, y1, zb), (x, y0, zb)]

    for s in (1, -1):
        mb.decal(
            rect(s * w * 0.42, s * w * 0.9, z1 - 0.15, z1 - 0.03), normal, HEADLIGHT if front else TAILLIGHT
        )
    if front:
        mb.decal(rect(-w * 0.36, w * 0.36, z1 - 0.17, z1 - 0.04), normal, GRILLE)
        mb.decal(rect(-w * 0.55, w * 0.55, z0 + 0.03, z0 + 0.1), normal, GRILLE)
    plate_z = (z0 + 0.12) if front else (z0 + z1) / 2 - 0.04
    mb.decal(rect(-0.16, 0.16, plate_z, plate_z + 0.13), normal, PLATE, lift=0.008)


def _cabin(mb: _MeshBuilder, car: Car, lay: _Layout) -> None:
    """The greenhouse: a loft whose sides lean in (tumblehome) and stay planar, with glass decals."""
    x_bl, x_rr, x_rf, x_ws = car.cabin
    wb, wt, belt, roof = lay.cabin_base, lay.roof_half, car.belt, car.roof

    def half_width(z: np.ndarray | float) -> np.ndarray | float:  # the side plane
        return wb + (wt - wb) * (z - belt) / (roof - belt)

    cab_x = [x_bl, x_rr, (x_rr + x_rf) / 2, x_rf, x_ws]
    cab_z = [belt, roof, roof + 0.02, roof, belt]
    mb.loft(
        cab_x,
        [[(wb, belt), (half_width(z), z), (-half_width(z), z), (-wb, belt)] for z in cab_z],
        [PAINT] * 4,
    )

    for x_top, x_base in ((x_rf, x_ws), (x_rr, x_bl)):  # windscreen, rear window
        quad = np.array([(x_base, wb, belt), (x_base, -wb, belt), (x_top, -wt, roof), (x_top, wt, roof)])
        normal = _plane_normal(quad, (x_base - x_top, 0.0, roof - belt))
        mb.decal(_bilinear(quad, 0.045, 0.955, 0.04, 0.93), normal, GLASS)

    # Side windows: the side profile shrunk by the frame, cut by a B pillar (and a C pillar on long cabins).
    window = _inset(
        np.array([(x_bl, belt), (x_ws, belt), (x_rf, roof), (x_rr, roof)]), [0.05, 0.06, 0.05, 0.06]
    )
    x_b = x_rr + (x_rf - x_rr) * 0.45
    rear = _clip(window, x_b - 0.05, keep_above=False)
    panes = [_clip(window, x_b + 0.05, keep_above=True), rear]
    if car.body in ("suv", "wagon", "hatchback"):
        x_c = x_rr + (x_rf - x_rr) * 0.08
        panes[1:] = [_clip(rear, x_c + 0.04, keep_above=True), _clip(rear, x_c - 0.04, keep_above=False)]
    for s in (1, -1):
        normal = _plane_normal(np.array([(0, s * wb, belt), (1, s * wb, belt), (0, s * wt, roof)]), (0, s, 0))
        for pane in panes:
            if len(pane) >= 3:
                mb.decal(np.column_stack([pane[:, 0], s * half_width(pane[:, 1]), pane[:, 1]]), normal, GLASS)


def _mirrors(mb: _MeshBuilder, car: Car, lay: _Layout) -> None:
    """Tapered boxes at the front corners of the cabin, sticking out well past the body."""
    xm, zm = car.cabin[3] - 0.12, car.belt + 0.03
    for s in (1, -1):
        root = ((xm - 0.09, xm + 0.09), s * (lay.cabin_base - 0.03), (zm, zm + 0.15))
        tip = ((xm - 0.07, xm + 0.05), s * (lay.half + 0.16), (zm + 0.02, zm + 0.13))
        corners = np.array([[[(x, y, z) for z in zs] for x in xs] for xs, y, zs in (root, tip)])
        mb.hexahedron(corners, BLACK if car.mirror_black else PAINT)


def _wheels(mb: _MeshBuilder, car: Car, lay: _Layout) -> list[tuple[float, float, float]]:
    """Tyre cylinders whose outer faces carry the procedural rim, and dark wheel-well liners behind them."""
    r, segments = car.wheel_radius, 24
    angles = np.linspace(0, 2 * math.pi, segments, endpoint=False)
    y_out = lay.half - 0.03
    centres = []
    for axle in (lay.front_axle, lay.rear_axle):
        for s in (1, -1):
            centres.append((axle, s * y_out, r))
            outer = np.column_stack(
                [axle + r * np.cos(angles), np.full(segments, s * y_out), r + r * np.sin(angles)]
            )
            inner = outer - (0, s * car.tyre_width, 0)
            mb.add(outer, WHEEL, (0, s, 0), wheel=len(centres) - 1)
            mb.add(inner, TYRE, (0, -s, 0))
            for k in range(segments):
                mid = angles[k] + math.pi / segments
                quad = [outer[k], outer[(k + 1) % segments], inner[(k + 1) % segments], inner[k]]
                mb.add(quad, TYRE, (math.cos(mid), 0, math.sin(mid)))
            liner_y = s * (y_out - car.tyre_width - 0.03)
            liner = [
                (axle + lay.arch * math.cos(a), liner_y, r + lay.arch * math.sin(a))
                for a in np.linspace(0, math.pi, 12)
            ]
            liner += [(axle - lay.arch, liner_y, r * 0.4), (axle + lay.arch, liner_y, r * 0.4)]
            for facing in (1, -1):  # seen from either side
                mb.add(liner, WELL, (0, facing, 0))
    return centres


def _antenna(mb: _MeshBuilder, car: Car) -> None:
    """A thin rod on the roof, tilted back, tapering to 70 % of its width; a few pixels wide at full size."""
    tilt = math.radians(car.antenna_tilt)
    axis = np.array([-math.sin(tilt), 0.0, math.cos(tilt)])
    across, sideways = np.cross(axis, (0.0, 1.0, 0.0)), np.array([0.0, 1.0, 0.0])
    base = np.array([car.cabin[1] + 0.12, 0.0, car.roof + 0.01])
    ends = ((base - 0.02 * axis, car.antenna_width), (base + car.antenna * axis, car.antenna_width * 0.7))
    corners = np.array(
        [
            [[c + w * (dy * sideways + dx * across) for dx in (-0.5, 0.5)] for dy in (-0.5, 0.5)]
            for c, w in ends
        ]
    )
    mb.hexahedron(corners, BLACK)


def _area_vector(poly: np.ndarray) -> np.ndarray:
    """Twice the area times the unit normal of a planar polygon (Newell's method; right-hand winding)."""
    (x, y, z), (x2, y2, z2) = poly.T, np.concatenate((poly[1:], poly[:1])).T
    return np.array([y @ z2 - z @ y2, z @ x2 - x @ z2, x @ y2 - y @ x2])


def _plane_normal(poly: np.ndarray, outward) -> np.ndarray:
    normal = _area_vector(poly)
    normal /= np.linalg.norm(normal)
    return normal if normal @ np.asarray(outward, float) >= 0 else -normal


# ----------------------------------------------------------------------------------------------------
# Camera


@dataclass(frozen=True)
class _Camera:
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


def _camera(car: Car, size: tuple[int, int], view: int, scale: int = 1) -> _Camera:
    height, width = size
    s = min(width / _REF_W, height / _REF_H) * scale
    pos = np.array([0.0, -car.distance, car.cam_height])
    forward = np.array([0.0, 0.0, car.aim]) - pos
    forward /= np.linalg.norm(forward)
    right = np.array([1.0, 0.0, 0.0])
    down = np.cross(forward, right)
    yaw = math.radians(-(view - 1) * 360.0 / VIEWS + car.yaw_jitter[view - 1])
    return _Camera(
        rot=np.stack([right, down, forward]),
        pos=pos,
        f=car.focal * s,
        cx=(width * scale - 1) / 2 + car.shift[0] * s,
        cy=(height * scale - 1) / 2 + car.shift[1] * s,
        yaw=yaw,
        offset=car.offset,
    )


# ----------------------------------------------------------------------------------------------------
# Rasterising


def _rasterise(mesh: _Mesh, cam: _Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
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


# ----------------------------------------------------------------------------------------------------
# Shading


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


def _shade(car: Car, mesh: _Mesh, cam: _Camera, ids: np.ndarray, zbuf: np.ndarray, step: int = 1):
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


def _to_display(linear: np.ndarray) -> np.ndarray:
    return _TO_DISPLAY[(np.clip(linear, 0, 1) * 4095).astype(np.intp)]


# ----------------------------------------------------------------------------------------------------
# Studio


@functools.lru_cache(maxsize=4)
def _backdrop(car: Car, height: int, width: int, scale: int) -> np.ndarray:
    """The empty studio for this car's camera (same for all its views): wall, lettering, floor, turntable."""
    studio = car.studio
    cam = _camera(car, (height, width), 1, scale)
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


def _shadow(car: Car, mesh: _Mesh, cam: _Camera, height: int, width: int) -> np.ndarray:
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


def _paint_upsampled(img, ids, ys, xs, colours, step: int, flat: np.ndarray) -> None:
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


# ----------------------------------------------------------------------------------------------------
# Views


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
    mesh = _build_mesh(car)
    cam = _camera(car, size, view, scale)
    h, w = height * scale, width * scale
    ids, zbuf = _rasterise(mesh, cam, h, w)

    img = _backdrop(car, height, width, scale).copy()
    if car.shadow > 0:
        # The shadow is smooth: compute it at a quarter of the size and stretch it.
        qh, qw = -(-h // 4), -(-w // 4)
        quarter = dataclasses.replace(
            cam, f=cam.f / 4, cx=(cam.cx + 0.5) / 4 - 0.5, cy=(cam.cy + 0.5) / 4 - 0.5
        )
        dark = cv2.resize(_shadow(car, mesh, quarter, qh, qw), (4 * qw, 4 * qh))[:h, :w]
        rows, cols = np.nonzero(dark.max(axis=1) > 0.004)[0], np.nonzero(dark.max(axis=0) > 0.004)[0]
        if len(rows):
            zone = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            img[zone] = (img[zone] * (1 - dark[zone])[..., None]).astype(np.uint8)
    # Shading is smooth, so large images are shaded on every other pixel and interpolated.
    step = 2 if w >= 960 else 1
    ys, xs, colour, see_through = _shade(car, mesh, cam, ids[::step, ::step], zbuf[::step, ::step], step)
    behind = img[ys * step, xs * step].astype(np.float32)
    paint = _to_display(colour) * (1 - see_through[:, None]) + behind * see_through[:, None]
    if step == 1:
        img[ys, xs] = paint.astype(np.uint8)
    elif len(ys):
        _paint_upsampled(img, ids, ys, xs, paint, step, _to_display(mesh.base * 0.7))

    if scale > 1:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        mask = (_rasterise(mesh, _camera(car, size, view), height, width)[0] > 0).astype(np.uint8)
    else:
        img = cv2.GaussianBlur(img, (0, 0), 0.6)  # a real lens never gives pixel-sharp edges
        mask = (ids > 0).astype(np.uint8)
    grain = np.random.default_rng((car.noise_seed, view)).integers(-2, 3, (height, width), dtype=np.int8)
    img = cv2.add(img, cv2.merge([grain] * 3), dtype=cv2.CV_8U)
    return img, mask
