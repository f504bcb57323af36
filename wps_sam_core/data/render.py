"""Drawing helpers shared by the procedural worlds: shapes, an integer painter's canvas, textures.

Everything is drawn in two passes. First each surface (a part, a clutter shape, a primitive) is
painted with a painter's algorithm into an integer canvas of surface ids; that canvas *is* the
ground truth. Only then is colour produced from it (textures, lighting, outlines, blur, noise), so
annotations equal the rendered labels exactly, whatever the image looks like. Polygons are filled
at 1/16-pixel fixed point (cv2 `shift`), which is integer arithmetic and hence reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

FIXED_POINT_SHIFT = 4  # polygon vertices at 1/16 pixel
FIXED_POINT_SCALE = 1 << FIXED_POINT_SHIFT
TEXTURE_KINDS = ("flat", "gradient", "stripes", "hard_stripes", "noise", "checker", "radial", "band")


# ----------------------------------------------------------------------------- geometry
@dataclass
class Shape:
    """Filled polygons minus holes, in any coordinate frame (local, then image pixels)."""
    outer: list[np.ndarray]
    holes: list[np.ndarray] = field(default_factory=list)

    def transformed(self, affine: np.ndarray) -> "Shape":
        return Shape([apply_affine(p, affine) for p in self.outer], [apply_affine(p, affine) for p in self.holes])


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


def similarity(scale: float, angle: float, tx: float, ty: float, flip: bool = False) -> np.ndarray:
    """2x3 matrix: optional horizontal mirror, then scale, rotate by `angle` (radians), translate."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    mirror = -1.0 if flip else 1.0
    return np.array([[c * mirror, -s, tx], [s * mirror, c, ty]])


def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0,
            start: float = 0.0, stop: float = 2 * math.pi, n: int = 48) -> np.ndarray:
    t = np.linspace(start, stop, n, endpoint=abs(stop - start) < 2 * math.pi - 1e-9)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def rectangle(cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> np.ndarray:
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    c, s = math.cos(angle), math.sin(angle)
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


def rounded_rectangle(x0: float, y0: float, x1: float, y1: float, radius: float, n: int = 6) -> np.ndarray:
    r = max(0.0, min(radius, (x1 - x0) / 2, (y1 - y0) / 2))
    arcs = []
    for (cx, cy), a0 in (((x1 - r, y0 + r), -math.pi / 2), ((x1 - r, y1 - r), 0.0),
                         ((x0 + r, y1 - r), math.pi / 2), ((x0 + r, y0 + r), math.pi)):
        t = np.linspace(a0, a0 + math.pi / 2, n)
        arcs.append(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1))
    return np.concatenate(arcs)


def star(cx: float, cy: float, r_out: float, r_in: float, points: int, angle: float = 0.0) -> np.ndarray:
    t = angle + np.arange(2 * points) * math.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, r_out, r_in)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def blob(rng: np.random.Generator, cx: float, cy: float, r: float, vertices: int, jitter: float) -> np.ndarray:
    """A star-shaped random polygon (angles sorted, radii jittered)."""
    t = np.sort(rng.uniform(0, 2 * math.pi, vertices))
    radii = r * (1 - jitter * rng.uniform(0, 1, vertices))
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def stroke(points: np.ndarray, widths: np.ndarray | float) -> np.ndarray:
    """Polygon outlining a polyline of given (per-vertex) widths: tails, legs, handles, arcs."""
    points = np.asarray(points, dtype=np.float64)
    widths = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(points),))
    tangent = np.gradient(points, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1) * (widths[:, None] / 2)
    return np.concatenate([points + normal, (points - normal)[::-1]])


def bezier(p0, p1, p2, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t ** 2 * np.asarray(p2)


def ring(cx: float, cy: float, rx: float, ry: float, thickness: float, angle: float = 0.0) -> Shape:
    return Shape([ellipse(cx, cy, rx, ry, angle)], [ellipse(cx, cy, rx - thickness, ry - thickness, angle)])


def random_primitive(rng: np.random.Generator, cx: float, cy: float, r: float) -> Shape:
    """One generic primitive of radius ~r: ellipse, rectangle, triangle, polygon, star, ring, arc or bar."""
    kind = rng.integers(8)
    angle = rng.uniform(0, 2 * math.pi)
    if kind == 0:
        return Shape([ellipse(cx, cy, r, r * rng.uniform(0.4, 1.0), angle)])
    if kind == 1:
        return Shape([rectangle(cx, cy, 2 * r, 2 * r * rng.uniform(0.3, 1.0), angle)])
    if kind == 2:
        return Shape([blob(rng, cx, cy, r, 3, 0.3)])
    if kind == 3:
        return Shape([blob(rng, cx, cy, r, int(rng.integers(5, 9)), 0.45)])
    if kind == 4:
        return Shape([star(cx, cy, r, r * rng.uniform(0.35, 0.6), int(rng.integers(4, 8)), angle)])
    if kind == 5:
        return ring(cx, cy, r, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.2, 0.45), angle)
    if kind == 6:
        sweep = rng.uniform(1.5, 4.5)
        centre_line = ellipse(cx, cy, r * 0.8, r * 0.8, 0.0, angle, angle + sweep, n=24)
        return Shape([stroke(centre_line, r * rng.uniform(0.2, 0.4))])
    bend = rng.uniform(-0.5, 0.5) * r
    c, s = math.cos(angle), math.sin(angle)
    line = bezier((cx - c * r, cy - s * r), (cx - s * bend, cy + c * bend), (cx + c * r, cy + s * r))
    return Shape([stroke(line, r * rng.uniform(0.15, 0.35))])


# ----------------------------------------------------------------------------- rasterising
def rasterize(shape: Shape, height: int, width: int) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """Pixels of `shape` as a bool crop and the crop's slices in the canvas; None if off-canvas."""
    points = np.concatenate(shape.outer)
    x0 = max(0, int(math.floor(points[:, 0].min())))
    y0 = max(0, int(math.floor(points[:, 1].min())))
    x1 = min(width, int(math.ceil(points[:, 0].max())) + 1)
    y1 = min(height, int(math.ceil(points[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    crop = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    offset = np.array([x0, y0], dtype=np.float64)

    def fixed(polys: list[np.ndarray]) -> list[np.ndarray]:
        return [np.round((p - offset) * FIXED_POINT_SCALE).astype(np.int32) for p in polys]

    cv2.fillPoly(crop, fixed(shape.outer), 1, lineType=cv2.LINE_8, shift=FIXED_POINT_SHIFT)
    if shape.holes:
        cv2.fillPoly(crop, fixed(shape.holes), 0, lineType=cv2.LINE_8, shift=FIXED_POINT_SHIFT)
    if not crop.any():
        return None
    return crop.view(bool), (slice(y0, y1), slice(x0, x1))


@dataclass
class Texture:
    """How one surface is coloured; sampled at paint time so random draws do not depend on visibility."""
    kind: str
    colour_a: np.ndarray
    colour_b: np.ndarray
    angle: float
    period: float
    seed: int
    light: tuple[float, float, float, float, float] | None = None  # cx, cy, dx, dy, strength (per px)


class SurfaceCanvas:
    """Integer painter's canvas: every paint call gets a new surface id and overwrites what is below."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ids = np.zeros((size, size), dtype=np.int32)
        self.textures: list[Texture | None] = [None]  # surface 0 = background
        self.boxes: list[tuple[slice, slice] | None] = [None]

    def paint(self, shape: Shape, texture: Texture) -> int:
        """Paint `shape` on top; returns its surface id (also when nothing of it lands on the canvas)."""
        surface = len(self.textures)
        self.textures.append(texture)
        hit = rasterize(shape, self.size, self.size)
        if hit is None:
            self.boxes.append(None)
            return surface
        mask, box = hit
        self.ids[box][mask] = surface
        self.boxes.append(box)
        return surface


# ----------------------------------------------------------------------------- colour
def random_colour(rng: np.random.Generator) -> np.ndarray:
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.15, 1.0), rng.uniform(0.25, 1.0)
    return hsv_to_rgb(hue, sat, val)


def hsv_to_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return (val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1)) * 255.0


def shade(colour: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """The same colour, brighter or darker by up to `amount` (a relative factor), slightly tinted."""
    factor = 1 + rng.uniform(-amount, amount)
    tint = rng.uniform(-amount, amount, 3) * 40
    return np.clip(colour * factor + tint, 0, 255)


def sample_texture(rng: np.random.Generator, base: np.ndarray | None = None, kind: str | None = None,
                   scale: float = 64.0) -> Texture:
    """A random texture; `base` fixes the main colour, `scale` (px) sets the pattern period range."""
    if kind is None:
        kind = str(rng.choice(TEXTURE_KINDS[:6], p=[0.3, 0.2, 0.12, 0.1, 0.18, 0.1]))
    colour_a = random_colour(rng) if base is None else np.asarray(base, dtype=np.float64)
    colour_b = random_colour(rng) if rng.uniform() < 0.4 else shade(colour_a, rng, 0.45)
    period = float(rng.uniform(0.08, 0.4) * max(scale, 8.0))
    return Texture(kind, colour_a, colour_b, float(rng.uniform(0, math.pi)), period, int(rng.integers(2**31)))


def texture_patch(texture: Texture, box: tuple[slice, slice]) -> np.ndarray:
    """float32 (h, w, 3) colours of `texture` over the canvas region `box` (canvas coordinates)."""
    ys, xs = box
    h, w = ys.stop - ys.start, xs.stop - xs.start
    y = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None]  # broadcasting, no full grids
    x = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :]
    c, s = math.cos(texture.angle), math.sin(texture.angle)
    along = x * c + y * s
    kind = texture.kind
    if kind == "flat":
        t = None
    elif kind == "gradient":
        t = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
    elif kind in ("stripes", "hard_stripes"):
        t = 0.5 + 0.5 * np.sin(along * (2 * math.pi / texture.period))
        if kind == "hard_stripes":
            t = (t > 0.5).astype(np.float32)
    elif kind == "noise":
        rng = np.random.default_rng(texture.seed)
        cells = max(2, int(max(h, w) / texture.period) + 2)
        t = cv2.resize(rng.uniform(0, 1, (cells, cells)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == "checker":
        across = -x * s + y * c
        t = ((np.floor(along / texture.period) + np.floor(across / texture.period)) % 2).astype(np.float32)
    elif kind == "radial":  # tyres with hubs, targets: rings around the box centre
        r = np.hypot(x - (xs.start + xs.stop - 1) / 2, y - (ys.start + ys.stop - 1) / 2)
        t = (r < texture.period).astype(np.float32)
    elif kind == "band":  # a label across a bottle, a grip on a handle
        centre = float(along.mean())
        t = (np.abs(along - centre) < texture.period / 2).astype(np.float32)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    a = texture.colour_a.astype(np.float32)
    if t is None:
        out = np.broadcast_to(a, (h, w, 3)).copy()
    else:
        t = np.broadcast_to(np.clip(t, 0, 1), (h, w))[..., None]
        out = a * (1 - t) + texture.colour_b.astype(np.float32) * t
    if texture.light is not None:
        cx, cy, dx, dy, strength = texture.light
        out *= np.broadcast_to(np.clip(1 + strength * ((x - cx) * dx + (y - cy) * dy), 0.4, 1.6), (h, w))[..., None]
    return out


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 (size, size, 3) backdrop: a large-scale texture (gradient, noise, stripes, ...)."""
    texture = sample_texture(rng, kind=str(rng.choice(["flat", "gradient", "noise", "stripes", "checker"],
                                                      p=[0.1, 0.3, 0.35, 0.15, 0.1])), scale=size)
    if rng.uniform() < 0.6:  # mostly low-contrast backdrops, so objects stand out as in photos
        texture.colour_b = 0.6 * texture.colour_a + 0.4 * texture.colour_b
    return texture_patch(texture, (slice(0, size), slice(0, size)))


def colourise(canvas: SurfaceCanvas, backdrop: np.ndarray, rng: np.random.Generator,
              outline_surfaces: np.ndarray | None = None) -> np.ndarray:
    """The RGB uint8 image of a painted canvas: textures per surface, optional dark outlines, blur, noise.

    `outline_surfaces` (bool per surface id) marks surfaces whose borders may get a dark outline.
    """
    image = backdrop.copy()
    for surface in range(1, len(canvas.textures)):
        box = canvas.boxes[surface]
        if box is None:
            continue
        inside = canvas.ids[box] == surface
        if inside.any():
            np.copyto(image[box], texture_patch(canvas.textures[surface], box), where=inside[..., None])
    if outline_surfaces is not None and rng.uniform() < 0.5:
        ids = canvas.ids
        edge = np.zeros(ids.shape, dtype=bool)
        edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        edge[1:, :] |= ids[1:, :] != ids[:-1, :]
        edge &= outline_surfaces[ids]
        image[edge] *= rng.uniform(0.35, 0.7)
    if rng.uniform() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    noise_sigma = rng.uniform(0, 6)
    if noise_sigma > 0.5:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sigma)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
