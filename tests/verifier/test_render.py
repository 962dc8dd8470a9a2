"""The Chernoff dog (``verifier._render``): the same bytes for the same vector, attributes in [0, 1] that move a
little when the vector moves a little, related vectors drawn closer than unrelated ones, the sheet's layout,
and clear errors for bad input."""

from __future__ import annotations

import io
import math
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from verifier._render import (
    ATTRIBUTES,
    DIM,
    RENDERER_ID,
    K,
    _Fill,
    _png_bytes,
    _rasterise,
    _Stroke,
    dog_attributes,
    image_distance,
    render_png,
    render_sheet,
    render_svg,
    sheet_size,
)


def _vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM)


def _related(seed: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    x, n = rng.standard_normal(DIM), rng.standard_normal(DIM)
    return x, rho * x + math.sqrt(1 - rho * rho) * n


def _png_chunks(png: bytes) -> list[bytes]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        out.append(png[pos + 4 : pos + 8])
        pos += 12 + length
    return out


def test_png_is_deterministic_256_rgb_without_metadata() -> None:
    v = _vec(1)
    png = render_png(v)
    assert render_png(v.copy()) == png
    assert render_png(list(v)) == png  # any sequence of 512 numbers
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (256, 256)
        assert im.mode == "RGB"
    assert _png_chunks(png) == [b"IHDR"] + [b"IDAT"] * (len(_png_chunks(png)) - 2) + [b"IEND"]


def test_svg_is_deterministic_text_with_the_renderer_id() -> None:
    v = _vec(2)
    svg = render_svg(v)
    assert render_svg(v.copy()) == svg
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    assert RENDERER_ID in svg
    assert f"k={K}" in RENDERER_ID


def _items_from_svg(svg: str) -> list[_Fill | _Stroke]:
    """The drawing items back from the subset of SVG that ``render_svg`` writes."""
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(svg)

    def pts(el: ET.Element) -> np.ndarray:
        return np.array([[float(c) for c in p.split(",")] for p in el.attrib["points"].split()]) / 256.0

    def rgb(hex_colour: str) -> tuple[int, int, int]:
        return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))

    clips = {c.attrib["id"]: pts(c[0]) for c in root.iterfind("s:defs/s:clipPath", ns)}
    items: list[_Fill | _Stroke] = []
    for el in root:
        tag = el.tag.split("}")[1]
        opacity = float(el.attrib.get("opacity", "1"))
        if tag == "g":
            clip = el.attrib.get("clip-path")
            polys = tuple(pts(p) for p in el)
            items.append(_Fill(polys, rgb(el.attrib["fill"]), opacity, clips[clip[5:-1]] if clip else None))
        elif tag in ("polygon", "polyline"):
            width = float(el.attrib["stroke-width"]) / 256.0
            items.append(_Stroke(pts(el), rgb(el.attrib["stroke"]), width, opacity, closed=tag == "polygon"))
    return items


def test_svg_has_the_geometry_of_the_png() -> None:
    v = _vec(11)
    redrawn = _png_bytes(_rasterise(_items_from_svg(render_svg(v)), 256))
    png = render_png(v)
    # only the two-decimal rounding of the coordinates differs
    assert image_distance(png, redrawn) < 0.01
    assert image_distance(png, render_png(_vec(12))) > 0.3


def test_different_vectors_give_different_pictures() -> None:
    a, b = _vec(3), _vec(4)
    assert render_png(a) != render_png(b)
    assert render_svg(a) != render_svg(b)


def test_only_the_direction_is_drawn() -> None:
    v = _vec(5)
    assert dog_attributes(3.0 * v) == dog_attributes(v)


def test_attributes_are_named_and_in_the_unit_interval() -> None:
    for seed in range(20):
        attrs = dog_attributes(_vec(seed))
        assert tuple(attrs) == ATTRIBUTES
        assert all(0.0 <= x <= 1.0 for x in attrs.values())
    assert len(ATTRIBUTES) == K == len(set(ATTRIBUTES))


def test_attributes_use_their_whole_range() -> None:
    # Phi of a unit-variance projection is uniform: over many vectors each attribute spans most of [0, 1]
    values = np.array([list(dog_attributes(_vec(seed)).values()) for seed in range(200)])
    assert np.all(values.min(axis=0) < 0.05)
    assert np.all(values.max(axis=0) > 0.95)


def test_attributes_are_continuous() -> None:
    v = _vec(6)
    eps = 1e-3 * np.random.default_rng(7).standard_normal(DIM)
    a, b = dog_attributes(v), dog_attributes(v + eps)
    # |d attribute| <= phi(0) |d z| <= 0.4 |eps| (up to the renormalisation)
    assert max(abs(a[k] - b[k]) for k in ATTRIBUTES) < 0.5 * float(np.linalg.norm(eps))
    assert any(a[k] != b[k] for k in ATTRIBUTES)


def test_image_distance_is_zero_for_the_same_picture_and_symmetric() -> None:
    p, q = render_png(_vec(8)), render_png(_vec(9))
    assert image_distance(p, p) == pytest.approx(0.0, abs=1e-12)
    assert image_distance(p, q) == pytest.approx(image_distance(q, p))
    assert image_distance(p, q) > 0.1


def test_a_small_change_of_the_vector_is_a_small_change_of_the_picture() -> None:
    x, y = _related(0, 0.999)
    z = _vec(10)
    px = render_png(x)
    assert image_distance(px, render_png(y)) < 0.25 * image_distance(px, render_png(z))


def test_related_dogs_are_closer_than_unrelated_ones() -> None:
    # rho = 0.95: a real check that fails when the picture stops following the vector
    pairs = [_related(seed, 0.95) for seed in range(4)]
    pngs = [(render_png(x), render_png(y)) for x, y in pairs]
    related = [image_distance(a, b) for a, b in pngs]
    unrelated = [image_distance(pngs[i][0], pngs[(i + 1) % len(pngs)][1]) for i in range(len(pngs))]
    assert max(related) < min(unrelated)


def test_sheet_holds_every_dog_with_its_labels() -> None:
    vectors = [_vec(20 + i) for i in range(5)]
    size = 96
    png = render_sheet([(v, [f"dog {i}", "score 0.5"]) for i, v in enumerate(vectors)], size=size)
    with Image.open(io.BytesIO(png)) as im:
        sheet = im.convert("RGB")
    assert sheet.size == sheet_size(5, 2, size)
    cols = 4
    width, height = sheet_size(5, 2, size)
    assert width > cols * size and height > 2 * size
    pad = (width - cols * size) // (cols + 1)
    tile_h = (height - pad) // 2
    for i, v in enumerate(vectors):
        x, y = pad + (i % cols) * (size + pad), pad + (i // cols) * tile_h
        with Image.open(io.BytesIO(render_png(v, size=size))) as dog:
            assert sheet.crop((x, y, x + size, y + size)).tobytes() == dog.convert("RGB").tobytes()
    assert render_sheet([(v, ["a"]) for v in vectors[:2]], size=size) == render_sheet(
        [(v, ["a"]) for v in vectors[:2]], size=size
    )


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(DIM),
        np.ones(DIM - 1),
        np.ones((2, DIM // 2)),
        np.ones(()),
        np.full(DIM, np.nan),
        np.where(np.arange(DIM) == 3, np.inf, 1.0),
        ["x"] * DIM,
        None,
    ],
    ids=["zero", "short", "2-d", "scalar", "nan", "inf", "strings", "none"],
)
def test_bad_vectors_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        dog_attributes(bad)
    with pytest.raises(ValueError):
        render_png(bad)
    with pytest.raises(ValueError):
        render_svg(bad)


def test_bad_sizes_and_empty_sheets_are_refused() -> None:
    with pytest.raises(ValueError):
        render_png(_vec(0), size=4)
    with pytest.raises(ValueError):
        render_sheet([])
