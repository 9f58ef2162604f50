"""The fleet the synthetic data draws from: body styles, paints and studios, and `make_car` to sample one."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from carvana_seg.synthetic.body import build_mesh
from carvana_seg.synthetic.camera import camera
from carvana_seg.synthetic.car import FULL_SIZE, VIEWS, Car, Studio

_REF_H, _REF_W = FULL_SIZE


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
    verts = build_mesh(car).verts
    for _ in range(30):
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        for view in range(1, VIEWS + 1):
            cam = camera(car, FULL_SIZE, view)
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
