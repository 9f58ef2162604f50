"""What a synthetic car is: the parameters of its shape, paint, camera and studio, one value per car.

Car frame: x forward, y to its left, z up, metres, origin on the floor under the middle of the wheelbase.
View v turns the car by (v - 1) * 22.5 degrees: 1 shows the front, 5 the left side with the nose to the
image's left, 9 the rear (Carvana's numbering).
"""

from __future__ import annotations

from dataclasses import dataclass

VIEWS = 16
FULL_SIZE = (1280, 1918)  # (height, width) of Kaggle's train/ images


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
