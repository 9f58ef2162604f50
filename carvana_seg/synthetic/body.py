"""The car's parts as a mesh in the car frame: lower body with wheel arches, lamps and plates, cabin
with glass, mirrors, wheels, antenna and roof rails; `build_mesh` assembles them (cached per car).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from carvana_seg.synthetic.car import Car
from carvana_seg.synthetic.mesh import (
    BLACK,
    GLASS,
    GRILLE,
    HEADLIGHT,
    PAINT,
    PLATE,
    TAILLIGHT,
    TRIM,
    TYRE,
    WELL,
    WHEEL,
    Mesh,
    MeshBuilder,
    bilinear,
    clip,
    inset,
    plane_normal,
)


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


def build_mesh(car: Car) -> Mesh:
    """All faces of the car in its own frame, with their looks (cached per car)."""
    # The camera distance (moved by fleet._fit_in_frame) and the shadow do not change the car itself.
    return _cached_mesh(dataclasses.replace(car, distance=0.0, shadow=0.0))


@functools.lru_cache(maxsize=8)
def _cached_mesh(car: Car) -> Mesh:
    mb = MeshBuilder()
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
        WHEEL: ((0.028, 0.028, 0.03), 0.02, 0.1, 0.0),  # the tyre's sidewall; shading.shade paints the rim
        WELL: ((0.008, 0.008, 0.009), 0.0, 0.0, 0.0),
        HEADLIGHT: ((0.42, 0.44, 0.47), 0.25, 1.0, 0.0),
        TAILLIGHT: ((0.32, 0.015, 0.015), 0.1, 1.0, 0.0),
        GRILLE: ((0.018, 0.018, 0.02), 0.06, 0.5, 0.0),
        PLATE: ((0.72, 0.72, 0.70), 0.02, 0.2, 0.0),
        BLACK: ((0.018, 0.018, 0.02), 0.05, 0.5, 0.0),
    }
    return mb.build(looks, np.array(wheel_centres))


def _lower_body(mb: MeshBuilder, car: Car, lay: _Layout) -> list[np.ndarray]:
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


def _lamps_and_plates(mb: MeshBuilder, cap: np.ndarray, front: bool) -> None:
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


def _cabin(mb: MeshBuilder, car: Car, lay: _Layout) -> None:
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
        normal = plane_normal(quad, (x_base - x_top, 0.0, roof - belt))
        mb.decal(bilinear(quad, 0.045, 0.955, 0.04, 0.93), normal, GLASS)

    # Side windows: the side profile shrunk by the frame, cut by a B pillar (and a C pillar on long cabins).
    window = inset(
        np.array([(x_bl, belt), (x_ws, belt), (x_rf, roof), (x_rr, roof)]), [0.05, 0.06, 0.05, 0.06]
    )
    x_b = x_rr + (x_rf - x_rr) * 0.45
    rear = clip(window, x_b - 0.05, keep_above=False)
    panes = [clip(window, x_b + 0.05, keep_above=True), rear]
    if car.body in ("suv", "wagon", "hatchback"):
        x_c = x_rr + (x_rf - x_rr) * 0.08
        panes[1:] = [clip(rear, x_c + 0.04, keep_above=True), clip(rear, x_c - 0.04, keep_above=False)]
    for s in (1, -1):
        normal = plane_normal(np.array([(0, s * wb, belt), (1, s * wb, belt), (0, s * wt, roof)]), (0, s, 0))
        for pane in panes:
            if len(pane) >= 3:
                mb.decal(np.column_stack([pane[:, 0], s * half_width(pane[:, 1]), pane[:, 1]]), normal, GLASS)


def _mirrors(mb: MeshBuilder, car: Car, lay: _Layout) -> None:
    """Tapered boxes at the front corners of the cabin, sticking out well past the body."""
    xm, zm = car.cabin[3] - 0.12, car.belt + 0.03
    for s in (1, -1):
        root = ((xm - 0.09, xm + 0.09), s * (lay.cabin_base - 0.03), (zm, zm + 0.15))
        tip = ((xm - 0.07, xm + 0.05), s * (lay.half + 0.16), (zm + 0.02, zm + 0.13))
        corners = np.array([[[(x, y, z) for z in zs] for x in xs] for xs, y, zs in (root, tip)])
        mb.hexahedron(corners, BLACK if car.mirror_black else PAINT)


def _wheels(mb: MeshBuilder, car: Car, lay: _Layout) -> list[tuple[float, float, float]]:
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


def _antenna(mb: MeshBuilder, car: Car) -> None:
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
