"""Pictures of where a prediction goes wrong: false positives and false negatives in two colours, and
a zoomed crop around the largest wrong region (an antenna, a shadow, a wheel arch)."""

from __future__ import annotations

import cv2
import numpy as np

FALSE_POSITIVE = (255, 0, 200)  # magenta: called car, is background (e.g. a shadow)
FALSE_NEGATIVE = (0, 170, 255)  # azure: car that was missed (e.g. an antenna, a dark sill)


def error_overlay(photo: np.ndarray, pred: np.ndarray, target: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """The photo with false positives and false negatives painted over it."""
    out = photo.astype(np.float32)
    for region, colour in ((pred & ~target, FALSE_POSITIVE), (~pred & target, FALSE_NEGATIVE)):
        out[region] = (1 - alpha) * out[region] + alpha * np.array(colour, np.float32)
    return out.round().astype(np.uint8)


def largest_error_box(pred: np.ndarray, target: np.ndarray, margin: int = 40, min_side: int = 160):
    """(top, bottom, left, right) around the largest connected wrong region, or None if all is right."""
    errors = (pred != target).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(errors, connectivity=8)
    if count < 2:
        return None
    label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    left, top, width, height = (int(v) for v in stats[label, :4])
    cy, cx = top + height / 2, left + width / 2
    half_h = max(height / 2 + margin, min_side / 2)
    half_w = max(width / 2 + margin, min_side / 2)
    rows, cols = errors.shape
    return (
        max(0, int(cy - half_h)),
        min(rows, int(cy + half_h)),
        max(0, int(cx - half_w)),
        min(cols, int(cx + half_w)),
    )


def _header(width: int, title: str) -> np.ndarray:
    strip = np.full((34, width, 3), 255, np.uint8)
    cv2.putText(strip, title, (8, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1, cv2.LINE_AA)
    x = max(8, width - 360)
    for colour, label in ((FALSE_POSITIVE, "false positive"), (FALSE_NEGATIVE, "false negative")):
        cv2.rectangle(strip, (x, 10), (x + 16, 26), colour, thickness=-1)
        cv2.putText(strip, label, (x + 22, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
        x += 180
    return strip


def error_panel(
    photo: np.ndarray, pred: np.ndarray, target: np.ndarray, title: str, height: int = 420
) -> np.ndarray:
    """One picture per image: the whole overlay, then the crop around the largest error, side by side."""
    pred, target = pred.astype(bool), target.astype(bool)
    overlay = error_overlay(photo, pred, target)
    scale = height / overlay.shape[0]
    whole = cv2.resize(overlay, (round(overlay.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
    parts = [whole]
    box = largest_error_box(pred, target)
    if box is not None:
        top, bottom, left, right = box
        crop = overlay[top:bottom, left:right]
        zoom = height / crop.shape[0]
        # Nearest-neighbour keeps single wrong pixels visible as crisp blocks when zooming in.
        crop = cv2.resize(
            crop, (max(1, round(crop.shape[1] * zoom)), height), interpolation=cv2.INTER_NEAREST
        )
        parts += [np.full((height, 6, 3), 255, np.uint8), crop]
        # Outline the cropped region on the whole view, so the reader sees where the zoom comes from.
        cv2.rectangle(
            whole,
            (round(left * scale), round(top * scale)),
            (round(right * scale) - 1, round(bottom * scale) - 1),
            (255, 220, 0),
            2,
        )
    body = np.concatenate(parts, axis=1)
    return np.concatenate([_header(body.shape[1], title), body], axis=0)
