"""The "Chernoff dog": a picture of a 512-d fingerprint vector, drawn without any pretrained generator.

HuRef turns its encoder's 512-d output into a dog with a StyleGAN2 trained on AFHQ dogs; this project has no
such weights, so it draws a cartoon dog whose features are continuous functions of the vector:

1. the vector is checked (1-D, 512 entries, finite, not zero) and rescaled to norm sqrt(512), so the dog
   depends only on its direction, as cosine similarity does;
2. a fixed orthonormal projection ``Q`` (512 x K, K = 58: the Q of the QR factorisation of a standard Gaussian
   512 x K matrix drawn by ``numpy.random.default_rng(PROJECTION_SEED)``, column signs made so that
   ``diag(R) > 0``, rounded to 12 decimals) gives K coordinates, each N(0, 1) when the vector is N(0, I);
3. each coordinate goes through the Gaussian CDF Phi into one attribute in [0, 1] (uniform, so the whole range
   is used; ``ATTRIBUTES`` names them): head width and length (cephalic index), squareness, jowls, muzzle
   length and width; each ear's length, width, droop (pricked to pendant, through the place where the ear
   folds) and colour, and the ear set; each eye's size and slant, the eye spacing, each iris's colour and each
   brow mark; nose size and colour, each side of the mouth's curve, tongue; coat colour (OKLab lightness,
   chroma and hue shift, converted to sRGB here by hand), chest shade, collar colour and width; markings (their
   tone; blaze, two eye patches, muzzle, bib, cap and twelve spots at fixed places, each growing from nothing);
   shagginess, head tilt, and the background's top and bottom tints;
4. every attribute moves geometry or colour continuously: no discrete switches (the tongue grows from
   nothing, an ear's flap grows as its fold moves down), no truncation toward an average dog.

The picture shows a 58-d projection of the vector: vectors that differ only orthogonally to those directions
get the same dog. For vectors distributed like N(0, I) that is enough: a related vector
``rho x + sqrt(1 - rho^2) n`` moves every coordinate by about sqrt(2 (1 - rho)), an unrelated one by about
sqrt(2). Why so many attributes, and why the ranges are as they are: a picture's distance follows the cosine
only as well as the many small differences add up, so no attribute may dominate the pixels (features sit at
fixed places rather than scaling with the head, markings have their own colours, the two sides of the face
vary separately); ``benchmarks/readability.py`` measures how well the pictures follow the vectors.

The geometry is built once as a list of polygons and strokes in unit coordinates; the PNG (drawn at 4x with
Pillow and downsampled with LANCZOS) and the SVG (the same polygons as text, two decimals) are both rendered
from that list, byte-identical for the same vector (no timestamps, no metadata; the same numpy, Pillow and
zlib assumed). ``image_distance`` is the pixel distance the benchmark uses: mean CIELAB delta-E / 40 plus
1 - SSIM on lightness, both at 64 px, no pretrained network. Nothing here does I/O.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

DIM = 512
PROJECTION_SEED = 20240917
RENDERER_VERSION = 1
SUPERSAMPLE = 4

# "left" and "right" are the picture's; the two sides' ears, irises and brows are separate attributes, as are
# the eight spots, so that more directions of the vector are seen as separate details of the picture
ATTRIBUTES: tuple[str, ...] = (
    "head_width",
    "head_length",
    "head_squareness",
    "jowls",
    "muzzle_length",
    "muzzle_width",
    "left_ear_length",
    "right_ear_length",
    "left_ear_width",
    "right_ear_width",
    "left_ear_droop",
    "right_ear_droop",
    "ear_set",
    "left_eye_size",
    "right_eye_size",
    "eye_spacing",
    "left_eye_slant",
    "right_eye_slant",
    "left_iris_colour",
    "right_iris_colour",
    "left_brow_mark",
    "right_brow_mark",
    "nose_size",
    "nose_colour",
    "left_mouth_curve",
    "right_mouth_curve",
    "tongue",
    "coat_lightness",
    "coat_chroma",
    "coat_hue",
    "chest_shade",
    "collar_colour",
    "collar_width",
    "marking_tone",
    "marking_blaze",
    "left_eye_patch",
    "right_eye_patch",
    "marking_muzzle",
    "left_ear_colour",
    "right_ear_colour",
    "marking_bib",
    "marking_cap",
    *(f"spot_{i}" for i in range(1, 13)),
    "shagginess",
    "head_tilt",
    "background_top",
    "background_bottom",
)
K = len(ATTRIBUTES)
RENDERER_ID = f"chernoff-dog/{RENDERER_VERSION}(seed={PROJECTION_SEED},k={K})"

# image_distance = mean delta-E / DELTA_E_SCALE + (1 - SSIM): the scale gives both terms about the same size
# for unrelated dogs
DISTANCE_SIZE = 64
DELTA_E_SCALE = 40.0

# spots at fixed places (head frame: units of head half-width and half-height; body: picture units) and sizes
_HEAD_SPOTS = (
    (-0.8, 0.02, 0.1),
    (0.8, 0.2, 0.1),
    (-0.68, 0.52, 0.095),
    (0.74, -0.34, 0.09),
    (-0.78, -0.4, 0.085),
    (0.42, 0.72, 0.08),
)
_BODY_SPOTS = (
    (0.22, 0.92, 0.115),
    (0.36, 0.8, 0.1),
    (0.65, 0.81, 0.105),
    (0.79, 0.94, 0.115),
    (0.33, 0.99, 0.09),
    (0.68, 1.0, 0.09),
)

Point = tuple[float, float]
RGB = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------------- vector


@cache
def _projection() -> np.ndarray:
    g = np.random.default_rng(PROJECTION_SEED).standard_normal((DIM, K))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))
    # rounding keeps tiny platform differences of LAPACK out of the picture
    return np.round(q, 12)


def _checked(vector: object) -> np.ndarray:
    try:
        v = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the dog needs a numeric vector: {e}") from e
    if v.ndim != 1 or v.shape[0] != DIM:
        raise ValueError(f"the dog needs a 1-D vector of length {DIM}, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("the dog needs a finite vector (NaN or infinity found)")
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise ValueError("the dog needs a non-zero vector (its direction is drawn)")
    return v * (math.sqrt(DIM) / norm)


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def dog_attributes(vector: object) -> dict[str, float]:
    """The dog's K attributes, each in [0, 1]: Phi of the vector's fixed orthonormal projection (see module)."""
    z = _projection().T @ _checked(vector)
    return {name: round(_phi(float(zi)), 9) for name, zi in zip(ATTRIBUTES, z, strict=True)}


# ---------------------------------------------------------------------------------------------------- colour


def _srgb_gamma(c: float) -> float:
    c = min(1.0, max(0.0, c))
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


def oklab_to_rgb(lab: tuple[float, float, float]) -> RGB:
    """OKLab (Ottosson 2020) to 8-bit sRGB, clipped to the gamut in linear light."""
    L, a, b = lab
    l_ = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3
    m_ = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3
    s_ = (L - 0.0894841775 * a - 1.2914855480 * b) ** 3
    r = 4.0767416621 * l_ - 3.3077115913 * m_ + 0.2309699292 * s_
    g = -1.2684380046 * l_ + 2.6097574011 * m_ - 0.3413193965 * s_
    bl = -0.0041960863 * l_ - 0.7034186147 * m_ + 1.7076147010 * s_
    return (round(255 * _srgb_gamma(r)), round(255 * _srgb_gamma(g)), round(255 * _srgb_gamma(bl)))


Lab = tuple[float, float, float]


def _mix(p: Lab, q: Lab, t: float) -> Lab:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t, p[2] + (q[2] - p[2]) * t)


def _path(stops: Sequence[Lab], t: float) -> Lab:
    """A point on the piecewise-linear path through ``stops`` at ``t`` in [0, 1]."""
    x = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    return _mix(stops[i], stops[i + 1], x - i)


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


# ---------------------------------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class _Fill:
    """Polygons filled with one colour; their union is painted with ``opacity``, inside ``clip`` if given."""

    polys: tuple[np.ndarray, ...]
    colour: RGB
    opacity: float = 1.0
    clip: np.ndarray | None = None


@dataclass(frozen=True)
class _Stroke:
    points: np.ndarray
    colour: RGB
    width: float
    opacity: float = 1.0
    closed: bool = False


_Item = _Fill | _Stroke


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 72) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    ca, sa = math.cos(angle), math.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def _rotate(points: np.ndarray, centre: Point, angle: float) -> np.ndarray:
    ca, sa = math.cos(angle), math.sin(angle)
    d = points - np.asarray(centre)
    return np.stack([centre[0] + ca * d[:, 0] - sa * d[:, 1], centre[1] + sa * d[:, 0] + ca * d[:, 1]], axis=1)


def _spot(x: float, y: float, radius: float) -> np.ndarray:
    return _ellipse(x, y, radius, 0.85 * radius, 0.3, n=40)


def _tufts(t: np.ndarray, count: int) -> np.ndarray:
    """Fur tufts along a contour parameter ``t`` (radians): sharp peaks, flat valleys."""
    return np.asarray((0.5 + 0.5 * np.cos(count * t)) ** 2)


def _head_outline(cx: float, cy: float, hw: float, hh: float, a: dict[str, float]) -> np.ndarray:
    n_exp = _lerp(2.0, 3.6, a["head_squareness"])
    jowl = _lerp(0.62, 1.12, a["jowls"])
    t = np.linspace(0.0, 2 * math.pi, 312, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = hw * np.sign(c) * np.abs(c) ** (2 / n_exp)
    y = hh * np.sign(s) * np.abs(s) ** (2 / n_exp)
    low = np.clip(y / hh, 0.0, 1.0)
    high = np.clip(-y / hh, 0.0, 1.0)
    x = x * (1 + (jowl - 1) * low**1.3) * (1 - 0.12 * high**2)
    shag = _lerp(0.001, 0.03, a["shagginess"])
    # outward offset along the radius (the outline is star-shaped around its centre)
    r = np.hypot(x, y)
    f = 1 + shag * _tufts(t, 30) / np.maximum(r, 1e-9)
    return np.stack([cx + x * f, cy + y * f], axis=1)


def _ear(
    base: Point, angle: float, flap_angle: float, length: float, width: float, droop: float, shag: float, side: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ear from ``base``: its upright part along ``angle`` (from straight up, outward positive), its inner
    part, and its flap. ``droop`` is where the ear folds: at 0 the whole ear stands (pricked), at 1 the whole ear
    hangs along ``flap_angle`` (pendant), in between the part beyond the fold hangs (button, rose, semi-prick).
    Moving the fold changes the areas in proportion, so a small change of droop is a small change of picture."""
    fold = 1.0 - droop

    def strip(start: Point, direction: float, s: np.ndarray, scale: float, fringe: float) -> np.ndarray:
        # half-width along the ear: a triangle when pricked, a rounded lobe when pendant
        triangle = (1 - s) ** 0.85 * (1 + 0.5 * s * (1 - s))
        lobe = np.sin(math.pi * (0.22 + 0.78 * s)) ** 0.6 * (1 + 0.35 * s)
        w = scale * width * ((1 - droop) * triangle + droop * lobe) * (1 + fringe * _tufts(s * 7 * math.pi, 1) * s)
        along = (s - s[0]) * length
        ux, uy = side * math.sin(direction), -math.cos(direction)
        px, py = -uy, ux
        left = np.stack([start[0] + ux * along + px * w, start[1] + uy * along + py * w], axis=1)
        right = np.stack([start[0] + ux * along - px * w, start[1] + uy * along - py * w], axis=1)
        return np.concatenate([left, right[::-1]], axis=0)

    upright = strip(base, angle, np.linspace(0.0, fold, 40), 1.0, 4 * shag)
    inner = strip(base, angle, np.linspace(0.0, 0.85 * fold, 32), 0.5, 0.0)
    hinge = (base[0] + side * math.sin(angle) * fold * length, base[1] - math.cos(angle) * fold * length)
    flap = strip(hinge, flap_angle, np.linspace(fold, 1.0, 40), 1.0, 6 * shag)
    return upright, inner, flap


def _scene(a: dict[str, float]) -> list[_Item]:
    # coat: lightness, chroma along the axis of dog coats in OKLab (grey and black through cream, gold, red and
    # brown) and a smaller shift across it (redder or yellower); a box, so each attribute moves colour linearly
    along, across = _lerp(0.0, 0.14, a["coat_chroma"]), _lerp(-0.035, 0.035, a["coat_hue"])
    coat: Lab = (
        _lerp(0.3, 0.9, a["coat_lightness"]),
        0.469 * along - 0.883 * across,
        0.883 * along + 0.469 * across,
    )
    # markings: light ones (blaze, muzzle, bib, brows) from white to tan, dark ones (eye patches, cap, spots,
    # ears) from black to liver, both set by marking_tone and independent of the coat
    tone = a["marking_tone"]
    light = _mix((0.93, 0.01, 0.045), (0.82, 0.045, 0.1), tone)
    dark = _mix((0.24, 0.01, 0.01), (0.33, 0.055, 0.055), tone)
    # background: a vertical gradient in 24 bands between two tints, each on a straight line in OKLab from warm
    # to cool (a curved path, such as a hue circle, would bring its ends together)
    warm, cool = (0.94, 0.009, 0.015), (0.93, -0.009, -0.015)
    top, bottom = _mix(warm, cool, a["background_top"]), _mix(warm, cool, a["background_bottom"])
    outline = oklab_to_rgb((coat[0] * 0.42, coat[1] * 0.5, coat[2] * 0.5))
    coat_rgb, light_rgb, dark_rgb = oklab_to_rgb(coat), oklab_to_rgb(light), oklab_to_rgb(dark)
    ink = (28, 22, 20)
    lw = 0.007

    # head frame: everything above the neck turns with the head tilt
    cx, cy = 0.5, 0.5
    hw = _lerp(0.253, 0.273, a["head_width"])
    hh = _lerp(0.215, 0.245, a["head_length"])
    tilt = math.radians(_lerp(-1.8, 1.8, a["head_tilt"]))
    pivot = (0.5, 0.55)

    def turn(p: np.ndarray) -> np.ndarray:
        return _rotate(p, pivot, tilt)

    bands = 24
    items: list[_Item] = [
        _Fill(
            (np.array([[0.0, i / bands], [1.0, i / bands], [1.0, (i + 1) / bands], [0.0, (i + 1) / bands]]),),
            oklab_to_rgb(_mix(top, bottom, (i + 0.5) / bands)),
        )
        for i in range(bands)
    ]

    # chest and its bib
    body = _ellipse(0.5, 1.07, 0.35, 0.34)
    chest = (min(coat[0] + _lerp(-0.25, 0.15, a["chest_shade"]), 0.97), coat[1], coat[2])
    items += [_Fill((body,), oklab_to_rgb(chest)), _Stroke(body, outline, lw, closed=True)]
    bib = _ellipse(0.5, 0.97, 0.19 * a["marking_bib"] ** 0.8, 0.15 * a["marking_bib"] ** 0.8)
    # a spot appears when its attribute passes 0.35 and grows from there, so not every dog is spotted
    spots = [max(0.0, a[f"spot_{i}"] - 0.35) / 0.65 for i in range(1, 13)]
    body_spots = tuple(_spot(x, y, f * u) for (x, y, f), u in zip(_BODY_SPOTS, spots[6:], strict=True))
    items.append(_Fill((bib,), light_rgb, clip=body))
    items.append(_Fill(body_spots, dark_rgb, clip=body))
    collar_lab = _path(
        [
            (0.58, 0.18, 0.1),
            (0.75, 0.08, 0.15),
            (0.86, -0.02, 0.16),
            (0.68, -0.14, 0.1),
            (0.58, -0.06, -0.15),
            (0.5, 0.1, -0.16),
        ],
        a["collar_colour"],
    )
    xs = np.linspace(0.1, 0.9, 41)
    upper = 0.772 + 0.3 * (xs - 0.5) ** 2
    width = _lerp(0.01, 0.065, a["collar_width"])
    collar = np.concatenate([np.stack([xs, upper], axis=1), np.stack([xs, upper + width], axis=1)[::-1]])
    items.append(_Fill((collar,), oklab_to_rgb(collar_lab), clip=body))

    # ears: the upright parts behind the head, the flaps (the part beyond the fold) in front of it
    set_angle = math.radians(_lerp(27.0, 41.0, a["ear_set"]))
    ear_angle = set_angle * 0.45 + math.radians(8.0)
    flaps = []
    for side, name in ((-1.0, "left"), (1.0, "right")):
        ear_lab = _mix(coat, dark, a[f"{name}_ear_colour"])
        ear_rgb = oklab_to_rgb(ear_lab)
        flap_rgb = oklab_to_rgb((ear_lab[0] * 0.88, ear_lab[1], ear_lab[2]))
        inner_rgb = oklab_to_rgb(_mix(ear_lab, (0.74, 0.09, 0.03), 0.55))
        ear_len = _lerp(0.08, 0.26, a[f"{name}_ear_length"])
        ear_w = _lerp(0.03, 0.095, a[f"{name}_ear_width"])
        base = (cx + side * hw * 0.9 * math.sin(set_angle), cy - hh * 0.9 * math.cos(set_angle))
        droop = a[f"{name}_ear_droop"]
        shape = _ear(base, ear_angle, math.radians(160.0), ear_len, ear_w, droop, 0.02 * a["shagginess"], side)
        upright, inner, flap = (turn(p) for p in shape)
        items += [_Fill((upright,), ear_rgb), _Fill((inner,), inner_rgb, 0.85)]
        items.append(_Stroke(upright, outline, lw, closed=True))
        flaps.append((flap, flap_rgb))

    head = turn(_head_outline(cx, cy, hw, hh, a))
    items += [_Fill((head,), coat_rgb)]

    # eyes and muzzle positions (head frame)
    # (fixed in the picture, not scaled with the head, so that head size only moves the outline)
    ye = cy - 0.055
    sides = ((-1.0, "left"), (1.0, "right"))
    radius = {name: _lerp(0.036, 0.06, a[f"{name}_eye_size"]) for _, name in sides}
    ex = _lerp(0.088, 0.137, a["eye_spacing"])

    # markings on the head, clipped to it: cap, spots and eye patches, then the blaze
    mtop = ye + 0.035
    mbot = cy + _lerp(0.13, 0.27, a["muzzle_length"])
    mw = _lerp(0.09, 0.2, a["muzzle_width"])
    bw = 0.19 * a["marking_blaze"]
    blaze_poly = np.array(
        [
            [cx - 0.35 * bw, cy - hh * 1.2],
            [cx + 0.35 * bw, cy - hh * 1.2],
            [cx + 0.6 * bw, ye],
            [cx + 1.3 * bw, mtop + 0.02],
            [cx - 1.3 * bw, mtop + 0.02],
            [cx - 0.6 * bw, ye],
        ]
    )
    cap = _ellipse(cx, cy - 1.3 * hh, 1.4 * hw, hh * _lerp(0.25, 1.4, a["marking_cap"] ** 1.5))
    patches = [cap] + [_spot(cx + x * hw, cy + y * hh, f * u) for (x, y, f), u in zip(_HEAD_SPOTS, spots, strict=False)]
    for side, name in sides:
        r = radius[name]
        pr = r * 3.4 * (max(0.0, a[f"{name}_eye_patch"] - 0.25) / 0.75) ** 0.9
        patches.append(_ellipse(cx + side * (ex + 0.3 * r), ye - 0.3 * r, pr, 0.85 * pr, side * 0.3))
    items.append(_Fill(tuple(turn(p) for p in patches), dark_rgb, clip=head))
    items.append(_Fill((turn(blaze_poly),), light_rgb, clip=head))
    # brow marks
    for side, name in sides:
        r = radius[name]
        brow = turn(_ellipse(cx + side * (ex - 0.15 * r), ye - 2.0 * r, 1.3 * r, 0.75 * r, side * -0.2))
        items.append(_Fill((brow,), light_rgb, a[f"{name}_brow_mark"], clip=head))

    items.append(_Stroke(head, outline, lw, closed=True))

    for flap, flap_rgb in flaps:
        items += [_Fill((flap,), flap_rgb), _Stroke(flap, outline, lw, closed=True)]

    # muzzle
    muzzle = turn(_ellipse(cx, (mtop + mbot) / 2, mw, (mbot - mtop) / 2))
    muzzle_lab = _mix((min(coat[0] + 0.06, 0.97), coat[1] * 0.85, coat[2] * 0.85), light, a["marking_muzzle"])
    items.append(_Fill((muzzle,), oklab_to_rgb(muzzle_lab)))
    chin = muzzle[8:29]  # the lower arc, where the muzzle may pass the head's outline
    items.append(_Stroke(chin, outline, lw * 0.8))

    # eyes
    # iris: dark brown, amber, hazel, blue
    iris_stops = [(0.26, 0.03, 0.04), (0.45, 0.06, 0.1), (0.7, 0.05, 0.14), (0.62, -0.07, 0.1), (0.7, -0.04, -0.12)]
    for side, name in sides:
        iris = _path(iris_stops, a[f"{name}_iris_colour"])
        r = radius[name]
        ecx = cx + side * ex
        ang = -side * math.radians(_lerp(-30.0, 35.0, a[f"{name}_eye_slant"]))
        items.append(_Fill((turn(_ellipse(ecx, ye, 1.2 * r, 0.84 * r, ang)),), ink))
        items.append(_Fill((turn(_ellipse(ecx, ye, 1.04 * r, 0.68 * r, ang)),), oklab_to_rgb(iris)))
        items.append(_Fill((turn(_ellipse(ecx, ye, 0.34 * r, 0.34 * r)),), ink))
        items.append(_Fill((turn(_ellipse(ecx - 0.3 * r, ye - 0.28 * r, 0.15 * r, 0.15 * r, n=24)),), (250, 250, 250)))

    # nose
    nose_lab = _path([(0.16, 0.0, 0.0), (0.38, 0.06, 0.05), (0.56, 0.1, 0.06), (0.78, 0.1, 0.03)], a["nose_colour"])
    nw = _lerp(0.03, 0.08, a["nose_size"])
    ny = cy + 0.075 - 0.62 * nw  # the nose grows up from a fixed bottom edge
    t = np.linspace(0.0, 2 * math.pi, 64, endpoint=False)
    nx_, ny_ = nw * np.cos(t), 0.62 * nw * np.sin(t)
    nx_ = nx_ * (1 - 0.42 * np.clip(ny_ / (0.62 * nw), 0.0, 1.0))
    nose = turn(np.stack([cx + nx_, ny + ny_], axis=1))
    items.append(_Fill((nose,), oklab_to_rgb(nose_lab)))
    items.append(_Fill((turn(_ellipse(cx - 0.3 * nw, ny - 0.25 * nw, 0.22 * nw, 0.12 * nw)),), (235, 235, 235), 0.6))

    # tongue, then the mouth line over it
    y0 = ny + 0.62 * nw
    ym = y0 + 0.035
    tongue = a["tongue"]
    tl, tw = 0.17 * tongue**2, _lerp(0.026, 0.052, tongue)
    u = np.linspace(math.pi, 0.0, 32)
    ry = 0.75 * tw * min(1.0, 2 * tongue)
    arc = np.stack([cx + tw * np.cos(u), ym + tl + ry * np.sin(u)], axis=1)
    tongue_poly = np.concatenate([[[cx - tw, ym - 0.004]], arc, [[cx + tw, ym - 0.004]]])
    tongue_opacity = min(1.0, 4 * tongue)
    items.append(_Fill((turn(tongue_poly),), oklab_to_rgb((0.66, 0.15, 0.05)), tongue_opacity))
    items.append(_Stroke(turn(np.array([[cx, ym], [cx, ym + 0.75 * tl]])), (150, 40, 50), lw * 0.7, tongue_opacity))
    s = np.linspace(0.0, 1.0, 24)
    for side, name in sides:
        curve = _lerp(-0.45, 1.0, a[f"{name}_mouth_curve"])
        xs = cx + side * 0.8 * mw * s
        ys = ym + 0.018 * np.sin(math.pi * s) - 0.065 * curve * s**2
        items.append(_Stroke(turn(np.stack([xs, ys], axis=1)), ink, lw * 1.4))
    items.append(_Stroke(turn(np.array([[cx, y0], [cx, ym]])), ink, lw))
    return items


def _scene_of(vector: object) -> list[_Item]:
    return _scene(dog_attributes(vector))


# ---------------------------------------------------------------------------------------------------- drawing


def _flat(points: np.ndarray, scale: float) -> list[float]:
    return [float(v) for v in (points * scale).ravel()]


def _mask_paint(img: Image.Image, colour: RGB, opacity: float, mask: Image.Image, clip: Image.Image | None) -> None:
    if clip is not None:
        mask = ImageChops.multiply(mask, clip)
    if opacity < 1.0:
        level = round(255 * opacity)
        mask = mask.point([(v * level + 127) // 255 for v in range(256)])
    img.paste(colour, (0, 0), mask)


def _rasterise(items: Sequence[_Item], size: int) -> Image.Image:
    n = size * SUPERSAMPLE
    img = Image.new("RGB", (n, n))
    draw = ImageDraw.Draw(img)
    for it in items:
        if it.opacity <= 0.0:
            continue
        if isinstance(it, _Fill):
            if it.opacity >= 1.0 and it.clip is None and len(it.polys) == 1:
                draw.polygon(_flat(it.polys[0], n), fill=it.colour)
                continue
            mask = Image.new("L", (n, n), 0)
            md = ImageDraw.Draw(mask)
            for p in it.polys:
                md.polygon(_flat(p, n), fill=255)
            clip = None
            if it.clip is not None:
                clip = Image.new("L", (n, n), 0)
                ImageDraw.Draw(clip).polygon(_flat(it.clip, n), fill=255)
            _mask_paint(img, it.colour, it.opacity, mask, clip)
        else:
            pts = np.concatenate([it.points, it.points[:1]]) if it.closed else it.points
            width = max(1, round(it.width * n))
            if it.opacity >= 1.0:
                draw.line(_flat(pts, n), fill=it.colour, width=width, joint="curve")
                continue
            mask = Image.new("L", (n, n), 0)
            md = ImageDraw.Draw(mask)
            md.line(_flat(pts, n), fill=255, width=width, joint="curve")
            _mask_paint(img, it.colour, it.opacity, mask, None)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def render_png(vector: object, size: int = 256) -> bytes:
    """The dog as a ``size`` x ``size`` RGB PNG (no metadata): the same bytes for the same vector."""
    if not isinstance(size, int) or not 16 <= size <= 2048:
        raise ValueError(f"size must be an int in [16, 2048], got {size!r}")
    return _png_bytes(_rasterise(_scene_of(vector), size))


def _hex(c: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c)


def _svg_points(points: np.ndarray) -> str:
    return " ".join(f"{x:.2f},{y:.2f}" for x, y in points * 256.0)


def render_svg(vector: object) -> str:
    """The dog as SVG text (256 x 256 user units): the same geometry as ``render_png``, two-decimal coordinates."""
    items = _scene_of(vector)
    body: list[str] = []
    defs: list[str] = []
    for it in items:
        if it.opacity <= 0.0:
            continue
        op = f' opacity="{it.opacity:.4f}"' if it.opacity < 1.0 else ""
        if isinstance(it, _Fill):
            polys = "".join(f'<polygon points="{_svg_points(p)}"/>' for p in it.polys)
            clip = ""
            if it.clip is not None:
                cid = f"c{len(defs)}"
                defs.append(f'<clipPath id="{cid}"><polygon points="{_svg_points(it.clip)}"/></clipPath>')
                clip = f' clip-path="url(#{cid})"'
            body.append(f'<g fill="{_hex(it.colour)}" fill-rule="evenodd"{op}{clip}>{polys}</g>')
        else:
            tag = "polygon" if it.closed else "polyline"
            body.append(
                f'<{tag} points="{_svg_points(it.points)}" fill="none" stroke="{_hex(it.colour)}" '
                f'stroke-width="{it.width * 256:.2f}" stroke-linejoin="round"{op}/>'
            )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">\n'
        f"<title>{RENDERER_ID}</title>\n"
        f"<defs>{''.join(defs)}</defs>\n" + "\n".join(body) + "\n</svg>\n"
    )


# ---------------------------------------------------------------------------------------------------- sheet

SHEET_PAD = 12
SHEET_LINE = 18


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except (ImportError, OSError):  # Pillow built without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def sheet_text(text: str) -> str:
    """``text`` as the sheet writes it: printable ASCII as itself, a backslash doubled, and every other character
    as its code point (``\\u00e9``, ``\\U0001f600``). The sheet's font draws ASCII only (other characters would
    all be the same box), and the escape is one-to-one, so two different labels never print the same."""
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return "".join(out)


CONTINUED = "\\"  # ends a line broken inside a word, as in a shell: never the end of a ``sheet_text`` token


def wrap_label(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    """``text``, spelled by ``sheet_text``, in lines no wider than ``width`` (as ``measure`` says): broken at the
    last space that fits (if past the middle of the line; the space is dropped), else inside a word, where the
    line ends with ``CONTINUED``. Nothing is cut off and no escape is split, so two different texts never give
    the same lines: a line ending in an odd number of backslashes continues the word, any other line a space.
    A character wider than ``width`` still gets a line.
    """
    tokens = [sheet_text(c) for c in text]

    def longest(start: int, mark: str) -> int:
        """The most tokens from ``start`` that fit with ``mark`` after them (at least one)."""
        lo, hi = 1, len(tokens) - start
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if measure("".join(tokens[start : start + mid]) + mark) <= width:
                lo = mid
            else:
                hi = mid - 1
        return lo

    lines: list[str] = []
    start, at_space = 0, False
    while len(tokens) - start > 1 and measure("".join(tokens[start:])) > width:
        fits = longest(start, "")
        space = next((k for k in range(start + fits, start, -1) if k < len(tokens) and tokens[k] == " "), start)
        at_space = space - start > fits // 2
        if at_space:
            lines.append("".join(tokens[start:space]))
            start = space + 1
        else:
            n = longest(start, CONTINUED)
            lines.append("".join(tokens[start : start + n]) + CONTINUED)
            start += n
    if start < len(tokens) or at_space or not lines:  # after a space, even an empty rest is a line
        lines.append("".join(tokens[start:]))
    return lines


def sheet_size(n_dogs: int, n_lines: int, size: int = 256, columns: int = 4) -> tuple[int, int]:
    """Width and height of the sheet ``render_sheet`` draws for ``n_dogs`` dogs with ``n_lines`` label lines
    under the tallest (lines as drawn: a label too long for the tile takes several)."""
    cols = min(n_dogs, columns)
    rows = -(-n_dogs // columns)
    tile_h = size + n_lines * SHEET_LINE + SHEET_PAD
    return cols * (size + SHEET_PAD) + SHEET_PAD, rows * tile_h + SHEET_PAD


def sheet_labels(items: Sequence[tuple[object, Sequence[str]]], size: int = 256) -> list[list[str]]:
    """The lines ``render_sheet`` writes under each dog: each label as ``sheet_text`` spells it, wrapped to the
    tile's width (``wrap_label``). Nothing is cut off: a long name takes as many lines as it needs."""
    font = _font(SHEET_LINE - 4)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def measure(text: str) -> float:
        return float(draw.textlength(text, font=font))

    return [[line for label in lines for line in wrap_label(str(label), size, measure)] for _, lines in items]


def render_sheet(items: Sequence[tuple[object, Sequence[str]]], size: int = 256, columns: int = 4) -> bytes:
    """Dogs side by side, ``columns`` a row, each with its label lines (scores, names) printed under it, in
    Pillow's default font, as an RGB PNG. Labels are never cut: one too long for the tile is wrapped onto more
    lines, and characters the font cannot draw are written as their code points (``sheet_labels``), so two
    labels that differ anywhere print differently."""
    if not items:
        raise ValueError("the sheet needs at least one dog")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    labels = sheet_labels(items, size)
    n_lines = max(len(lines) for lines in labels)
    width, height = sheet_size(len(items), n_lines, size, columns)
    dogs = [_rasterise(_scene_of(vector), size) for vector, _ in items]  # every vector checked before drawing
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font(SHEET_LINE - 4)
    tile_h = size + n_lines * SHEET_LINE + SHEET_PAD
    for i, (dog, lines) in enumerate(zip(dogs, labels, strict=True)):
        x = SHEET_PAD + (i % columns) * (size + SHEET_PAD)
        y = SHEET_PAD + (i // columns) * tile_h
        sheet.paste(dog, (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + size + 3 + j * SHEET_LINE), line, fill=(20, 20, 20), font=font)
    return _png_bytes(sheet)


# ---------------------------------------------------------------------------------------------------- distance


_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)


def _lab(png: bytes) -> np.ndarray:
    """CIELAB (D65) of the picture resized to DISTANCE_SIZE px, float64 (h, w, 3)."""
    with Image.open(io.BytesIO(png)) as im:
        small = im.convert("RGB").resize((DISTANCE_SIZE, DISTANCE_SIZE), Image.Resampling.BOX)
    c = np.asarray(small, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _SRGB_TO_XYZ.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


@cache
def _blur_matrix(n: int, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """The n x n matrix of a Gaussian blur along one axis, edges reflected (``x -> G @ x``)."""
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    g = np.zeros((n, n))
    for i in range(n):
        for off, w in zip(range(-radius, radius + 1), k, strict=True):
            j = i + off
            j = -j if j < 0 else (2 * (n - 1) - j if j >= n else j)
            g[i, j] += w
    return g


def _gauss_blur(x: np.ndarray) -> np.ndarray:
    g = _blur_matrix(x.shape[0])
    return np.asarray(g @ x @ g.T)


def ssim(a: np.ndarray, b: np.ndarray, dynamic_range: float = 100.0) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03) of two 2-D arrays."""
    c1, c2 = (0.01 * dynamic_range) ** 2, (0.03 * dynamic_range) ** 2
    mu_a, mu_b = _gauss_blur(a), _gauss_blur(b)
    saa = _gauss_blur(a * a) - mu_a**2
    sbb = _gauss_blur(b * b) - mu_b**2
    sab = _gauss_blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(s.mean())


def image_distance(png_a: bytes, png_b: bytes) -> float:
    """Pixel distance of two pictures, no pretrained network: mean CIE76 delta-E / DELTA_E_SCALE + (1 - SSIM)
    on CIELAB lightness, both on the pictures resized to 64 px. 0 for identical pictures."""
    la, lb = _lab(png_a), _lab(png_b)
    delta_e = float(np.sqrt(((la - lb) ** 2).sum(axis=-1)).mean())
    return delta_e / DELTA_E_SCALE + (1.0 - ssim(la[..., 0], lb[..., 0]))
