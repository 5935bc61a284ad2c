"""CPU renderer of the built-in ``pixelmesh-sketch`` model (NumPy + Pillow).

Draws a procedural landscape: a sky gradient with sun or moon, glow, clouds and stars over
layered mountain, hill, forest or dune silhouettes made from smooth 1-D fractal noise with
valley mist, or over a glittering sea with islands, a headland, a lighthouse or a sailboat.
Prompt words ("dusk", "night", "sea", "forest", "lighthouse", "red", ...) steer mood, scene
and palette; otherwise they come from a hash of the prompt.  Deterministic: all randomness
comes from ``numpy.random.default_rng`` seeded with SHA-256 of (prompt, seed, index) (the
draws do not depend on resolution or quality, so a bigger size is the same picture), no state
is shared (thread-safe), and the encoders get explicit options and no metadata, so equal
arguments give byte-identical output.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SUPPORTED_FORMATS = ("png", "webp", "jpeg")
MIN_SIZE, MAX_SIZE = 64, 4096
_MIME = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
# quality -> (noise octaves, default jpeg/webp encoder quality)
_QUALITY = {"low": (3, 60), "medium": (4, 80), "standard": (4, 85), "auto": (4, 85), "high": (5, 92), "hd": (6, 95)}
_BACKGROUNDS = ("auto", "opaque", "transparent")
_MOODS = {
    "night": "night midnight moon moonlit moonlight star stars starry dark",
    "dusk": "dusk sunset evening twilight dusky",
    "dawn": "dawn sunrise morning daybreak",
    "day": "day noon sunny bright summer daylight",
}
_SCENES = {
    "sea": "sea ocean wave waves beach coast harbor harbour lighthouse lake shore boat sail sailboat ship bay",
    "forest": "forest tree trees wood woods pine pines jungle taiga",
    "mountains": "mountain mountains peak peaks alps alpine summit cliff",
    "desert": "desert dune dunes sand sahara",
    "hills": "hill hills valley meadow field countryside garden",
}
_HUES = {
    "red": "d92924",
    "orange": "f28026",
    "gold": "f2bf40",
    "yellow": "f2e04c",
    "green": "40b24c",
    "teal": "1a8c8c",
    "blue": "2659e6",
    "purple": "8033b2",
    "violet": "8c4cd9",
    "pink": "f280b2",
}
# mood -> hex RGB of sky top, horizon, sun/moon, far land, near land, water
_PALETTES = {
    "day": "2961bf b8d9f2 fff7db 7394b8 1a382b 1f5c8c",
    "dusk": "211f54 fc945c ffdb8f 80547a 170f24 402e59",
    "night": "030512 1a2952 f2f2e0 1a2442 050812 080f24",
    "dawn": "546bb2 ffccad ffedbf 998cad 333352 596b99",
}
_LIGHT = {"day": 1.0, "dawn": 0.85, "dusk": 0.65, "night": 0.3}
_GLOW = {"day": 0.45, "night": 0.22, "dusk": 0.8, "dawn": 0.7}


@dataclass(frozen=True)
class RenderedImage:
    data: bytes  # encoded image
    width: int
    height: int
    output_format: str  # png | webp | jpeg
    mime_type: str  # image/png, image/webp, image/jpeg


def _smooth(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _fbm1d(rng, n, octaves, freq, sharp=False):
    """Fractal value noise over n columns in 0..1 (always draws 6 octaves of knots)."""
    x, out, amp, total = np.linspace(0.0, 1.0, n), np.zeros(n), 1.0, 0.0
    for o in range(6):
        knots = rng.random(int(freq) + 2)
        if o < octaves:
            t = x * freq
            i = t.astype(np.int64)
            f = t - i if sharp else (t - i) ** 2 * (3 - 2 * (t - i))
            out, total = out + amp * (knots[i] * (1 - f) + knots[i + 1] * f), total + amp
        amp, freq = amp * 0.5, freq * 2.03
    return (out / total).astype(np.float32)


def _noise2d(rng, w, h, gw, gh, octaves):
    """Fractal value noise (h, w) in ~0..1, summed at <=256 px and upsampled once."""
    lw, lh = min(w, 256), min(h, 256)
    out, amp, total = np.zeros((lh, lw), np.float32), 1.0, 0.0
    for o in range(6):
        g = rng.random((gh * 2**o + 1, gw * 2**o + 1), dtype=np.float32)
        if o < octaves:
            out += amp * np.asarray(Image.fromarray(g).resize((lw, lh), Image.Resampling.BICUBIC))
            total += amp
        amp *= 0.5
    out /= total
    return out if (lw, lh) == (w, h) else _upsample(out, w, h)


def _upsample(a, w, h):
    """Bicubic resize of a 2-D float field to (h, w)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, np.float32)).resize((w, h), Image.Resampling.BICUBIC))


def _layer(img, alpha, top, col, haze=None, mist=0.0, y0=0.0, y1=1.0, bottom=None, snow=None):
    """Composite (premultiplied) a silhouette covering the rows below ``top`` (one value per column)."""
    r0 = max(0, int(top.min()))
    ys = np.arange(r0, img.shape[0], dtype=np.float32)[:, None] + 0.5
    cov = np.clip((ys - top) / np.sqrt(1.0 + np.gradient(top) ** 2) + 0.5, 0.0, 1.0)  # antialiased edge
    if bottom is not None:
        cov *= np.clip(bottom - ys + 0.5, 0.0, 1.0)
    c = col + (haze - col) * (_smooth(y0, max(y1, y0 + 1), ys) * mist)[..., None] if mist else col
    if snow is not None:
        c = c + (snow[1] - c) * (np.clip(snow[0] - ys, 0.0, 1.0) * 0.85)[..., None]
    img[r0:] += cov[..., None] * (c - img[r0:])
    alpha[r0:] += cov * (1.0 - alpha[r0:])


def _polys(img, alpha, polys, color, ss=4):
    """Antialiased filled polygons (pixel coordinates), 4x supersampled inside their bounding box."""
    h, w = img.shape[:2]
    pts = np.array([p for poly in polys for p in poly])
    x0, y0 = max(0, int(pts[:, 0].min())), max(0, int(pts[:, 1].min()))
    x1, y1 = min(w, int(pts[:, 0].max()) + 2), min(h, int(pts[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    m = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    for poly in polys:
        ImageDraw.Draw(m).polygon([((x - x0) * ss, (y - y0) * ss) for x, y in poly], fill=255)
    cov = np.asarray(m.resize((x1 - x0, y1 - y0), Image.Resampling.BOX), np.float32) / 255.0
    img[y0:y1, x0:x1] += cov[..., None] * (np.asarray(color, np.float32) - img[y0:y1, x0:x1])
    alpha[y0:y1, x0:x1] += cov * (1.0 - alpha[y0:y1, x0:x1])
    return x0, y0, cov


def _trap(cx, wa, ya, wb, yb):
    """Symmetric trapezoid around column cx: half-width wa at row ya, wb at row yb."""
    return [(cx - wa, ya), (cx + wa, ya), (cx + wb, yb), (cx - wb, yb)]


def _rgb(hexcode):
    return np.frombuffer(bytes.fromhex(hexcode), np.uint8).astype(np.float32) / 255.0


def _palette(mood, scene, words, rng):
    pal = [_rgb(c) for c in _PALETTES[mood].split()]
    light = _LIGHT[mood]
    if scene == "desert":
        pal[3] += (_rgb("dba870") * light - pal[3]) * 0.6
        pal[4] += (_rgb("995c33") * light - pal[4]) * 0.55
    elif scene in ("forest", "hills"):
        pal[4] += (_rgb("0f3314") * light - pal[4]) * 0.5
    tints = [_rgb(_HUES[wd]) for wd in sorted(words) if wd in _HUES]
    warm = np.float32(1.0) + rng.normal(0.0, 0.04, 3).astype(np.float32)  # per-seed colour cast
    for k, amount in enumerate((0.35, 0.75, 0.35, 0.5, 0.3, 0.55)):
        if tints:  # move toward the named colour at the same brightness
            target = tints[0] * (pal[k].max() / tints[0].max())
            pal[k] += (target - pal[k]) * amount
        pal[k] = np.clip(pal[k] * warm, 0.0, 1.0)
    return pal


def _sky(img, rng, mood, pal, hy, sx, sy, sr, u, octaves):
    """Gradient, glow and clouds (smooth: computed at <= 512 px and upsampled), then stars and sun/moon."""
    top, hor, sun, far = pal[:4]
    h, w = img.shape[:2]
    f = max(1.0, max(w, h) / 512)
    lw, lh = max(2, round(w / f)), max(2, round(h / f))
    ys = (np.arange(lh, dtype=np.float32)[:, None] + 0.5) * (h / lh)
    xs = (np.arange(lw, dtype=np.float32) + 0.5) * (w / lw)
    sky = top + (hor - top) * (np.clip(ys / hy, 0, 1) ** 1.7)[..., None]
    glow = np.hypot(xs - sx, ys - sy) / u
    glow = _GLOW[mood] * (0.6 * np.exp(-glow / 0.12) + 0.4 * np.exp(-((glow / 0.55) ** 2)))
    sky = sky + glow[..., None] * (sun - sky)
    # clouds: horizontally stretched fractal noise above 1.25 x horizon, lit from the sun side
    rows = min(lh, int(hy * 1.25 * lh / h) + 1)
    n2 = _noise2d(rng, lw, rows, max(2, round(3 * w / h)), 5 if mood == "day" else 7, octaves + 1)
    cover = rng.uniform(0.5, 0.62) + (0.04 if mood == "night" else 0.0)
    dens = np.zeros((lh, lw), np.float32)
    dens[:rows] = _smooth(cover, cover + 0.14, n2) * np.clip(1.25 - ys[:rows] / hy, 0, 1) * rng.uniform(0.6, 0.92)
    lit = hor + (sun - hor) * 0.35 if mood != "night" else top + (hor - top) * 0.9
    col = lit + (top + (far - top) * 0.45 - lit) * _smooth(cover, cover + 0.4, n2)[..., None] * 0.75
    col += (sun - col) * np.minimum(glow[:rows] * 0.8, 0.6)[..., None]
    sky[:rows] += dens[:rows, :, None] * (col - sky[:rows])
    if f > 1.0:
        for c in range(3):
            img[..., c] = _upsample(sky[..., c], w, h)
        dens = _upsample(dens, w, h)
    else:
        img[:] = sky
    if mood == "night":  # stars behind the clouds: fixed number of draws, dot size grows with the image
        px, py = rng.random(320) * (w - 2), rng.random(320) ** 1.4 * hy * 0.95
        b = 0.3 + 0.7 * rng.random(320) ** 3
        s = max(1, round(u / 700))
        for dy in range(s * s):
            iy, ix = np.minimum(py.astype(int) + dy // s, h - 1), np.minimum(px.astype(int) + dy % s, w - 1)
            lum = (b * (1.0 - dens[iy, ix]))[:, None] * np.array((1.0, 1.0, 0.9), np.float32)
            img[iy, ix] = np.maximum(img[iy, ix], lum)
    y0, y1 = max(0, int(sy - sr) - 2), min(h, int(sy + sr) + 3)  # sun / moon disc, only in its box
    x0, x1 = max(0, int(sx - sr) - 2), min(w, int(sx + sr) + 3)
    by, bx = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5, np.arange(x0, x1, dtype=np.float32) + 0.5
    disc = np.clip((sr - np.hypot(bx - sx, by - sy)) * 0.7, 0.0, 1.0) * (1.0 - dens[y0:y1, x0:x1])
    if mood == "night":  # crescent moon
        off = sr * rng.uniform(0.35, 0.6)
        disc *= 1.0 - 0.9 * np.clip((sr * 0.95 - np.hypot(bx - sx - off, by - sy + off * 0.4)) * 0.7, 0, 1)
    img[y0:y1, x0:x1] += disc[..., None] * (np.minimum(sun * 1.08, 1.0) - img[y0:y1, x0:x1])


def _sea(img, alpha, rng, pal, hy, sx, mood, u, octaves):
    top, hor, sun, far, near, water = pal
    h, w = img.shape[:2]
    r0 = int(hy)
    ys, xs = np.arange(r0, h, dtype=np.float32)[:, None] + 0.5, np.arange(w, dtype=np.float32) + 0.5
    t = np.clip((ys - hy) / (h - hy), 0, 1)
    far_c, near_c = hor + (water - hor) * 0.45, (water + (top - water) * 0.25) * 0.7
    lines = _noise2d(rng, w, 256, max(2, round(4 * w / h)), 24, octaves)  # ripples, rows in perspective
    s = lines[(np.sqrt(t[:, 0]) * 255).astype(np.int64)]
    col = (far_c + (near_c - far_c) * (t**0.6)[..., None]) * (0.86 + 0.28 * s)[..., None]
    g = np.exp(-(((xs - sx) / (u * (0.02 + 0.16 * t))) ** 2)) * _smooth(0.48, 0.66, s) * (1 - 0.6 * t)
    col += (g * (_GLOW[mood] * 0.5 + 0.45))[..., None] * (sun - col)  # glitter under the sun / moon
    cov = np.clip(ys - hy + 0.5, 0, 1)
    img[r0:] += cov[..., None] * (col - img[r0:])
    alpha[r0:] += cov * (1 - alpha[r0:])


def _lighthouse(img, alpha, pal, mood, cx, by, ht, sun_right, beam):
    """Striped tower with a lantern; ``beam`` = (direction, elevation) adds the lamp's glow and beam."""
    hor, near, light = pal[1], pal[4], _LIGHT[mood]
    bw, tw = ht * 0.1, ht * 0.068
    white = (np.array((0.96, 0.95, 0.9)) + (hor - 0.9) * 0.25) * light
    res = _polys(img, alpha, [_trap(cx, bw, by, tw, by - ht)], white)
    if res is not None:  # cylindrical shading, lit from the sun side
        x0, y0, cov = res
        xx = (np.arange(cov.shape[1]) + x0 + 0.5 - cx) / bw * (-1 if sun_right else 1)
        shade = np.clip(1.0 - 0.45 * _smooth(-0.6, 0.9, xx), 0.4, 1.0)
        img[y0 : y0 + cov.shape[0], x0 : x0 + cov.shape[1]] *= (1 - cov * (1 - shade))[..., None]
    red = np.array((0.7, 0.13, 0.11)) * light
    for i in (0.2, 0.6):  # two red bands
        wa, wb = bw + (tw - bw) * i, bw + (tw - bw) * (i + 0.2)
        _polys(img, alpha, [_trap(cx, wa, by - ht * i, wb, by - ht * (i + 0.2))], red)
    gy, ly = by - ht, by - ht * 1.095
    _polys(img, alpha, [_trap(cx, tw * 1.5, gy, tw * 1.5, gy - ht * 0.035)], near * 0.8 + 0.02)
    lamp = np.array((1.0, 0.93, 0.62)) if mood != "day" else white * 0.8
    _polys(img, alpha, [_trap(cx, tw * 0.8, ly - ht * 0.055, tw * 0.8, ly + ht * 0.06)], lamp)
    _polys(img, alpha, [_trap(cx, tw * 1.1, ly - ht * 0.05, 0.0, ly - ht * 0.16)], red * 0.8)
    k = {"night": 1.0, "dusk": 0.7, "dawn": 0.45, "day": 0.0}[mood]
    if beam is None or k == 0.0:
        return
    (h, w), u = img.shape[:2], float(min(img.shape[:2]))  # additive light in a band of rows around the lamp
    r0, r1 = max(0, int(ly - 0.4 * u)), min(h, int(ly + 0.4 * u) + 1)
    f = max(1.0, u / 256)  # smooth: computed on a coarser grid and upsampled
    lh, lw = max(2, round((r1 - r0) / f)), max(2, round(w / f))
    dy = (np.arange(lh, dtype=np.float32)[:, None] + 0.5) * ((r1 - r0) / lh) + r0 - ly
    dx = (np.arange(lw, dtype=np.float32) + 0.5) * (w / lw) - cx
    ux, uy = beam[0] * np.cos(beam[1]), -np.sin(beam[1])
    along, perp, r = (dx * ux + dy * uy) / u, np.abs(dy * ux - dx * uy) / u, np.hypot(dx, dy) / u
    beam = (along > 0) * np.exp(-((perp / (np.abs(along) * 0.09 + 0.004)) ** 2) - along / 0.9)
    light = k * (0.9 * np.exp(-r / 0.012) + 0.25 * np.exp(-r / 0.08) + 0.35 * beam)
    img[r0:r1] += _upsample(light.astype(np.float32), w, r1 - r0)[..., None] * np.array((1.0, 0.9, 0.6), np.float32)


def _coast(img, alpha, rng, mood, words, pal, w, h, u, hy, sx, octaves, transparent):
    top, hor, sun, far, near, water = pal
    xs = np.arange(w, dtype=np.float32) + 0.5
    for k in range(2):  # distant islands sitting on the horizon
        prof, thr = _fbm1d(rng, w, octaves, 3.0 + 2 * k), rng.uniform(0.5, 0.62)
        _layer(
            img,
            alpha,
            hy - h * (0.06 - 0.025 * k) * np.clip((prof - thr) / (1 - thr), 0, 1) ** 0.7,
            far + (hor - far) * (0.45 - 0.2 * k),
        )
    _sea(img, alpha, rng, pal, hy, sx, mood, u, octaves)
    left = sx > w * 0.5  # the headland stands on the side away from the sun
    xe = max(w * 0.2, min(w * rng.uniform(0.3, 0.42), (w - sx if left else sx) - w * 0.14))
    hh, hl, boat, elev = h * rng.uniform(0.07, 0.12), rng.random(), rng.random(), rng.uniform(0.0, 0.12)
    dist = xs if left else w - xs  # distance from the headland's image edge
    shape = _smooth(xe, xe * 0.55, dist)
    top_h = hy - hh * shape * (0.8 + 0.4 * _fbm1d(rng, w, octaves + 1, 6.0, sharp=True)) + (1 - shape) * h * 0.02
    if words & {"boat", "sail", "sailboat", "ship"} or boat < 0.35:  # small sailboat on the open side
        t, bx = rng.uniform(0.1, 0.45), w * (rng.uniform(0.55, 0.85) if left else rng.uniform(0.15, 0.45))
        by, bs = hy + t * (h - hy), u * (0.015 + 0.07 * t)
        _polys(
            img,
            alpha,
            [
                [
                    (bx - bs, by - 0.2 * bs),
                    (bx + bs, by - 0.2 * bs),
                    (bx + 0.65 * bs, by + 0.12 * bs),
                    (bx - 0.7 * bs, by + 0.12 * bs),
                ]
            ],
            near * 0.9,
        )
        _polys(
            img,
            alpha,
            [
                [(bx, by - 0.28 * bs), (bx, by - 1.7 * bs), (bx + 0.8 * bs, by - 0.28 * bs)],
                [(bx - 0.12 * bs, by - 0.28 * bs), (bx - 0.12 * bs, by - 1.45 * bs), (bx - 0.75 * bs, by - 0.28 * bs)],
            ],
            (hor + (1.0 - hor) * 0.5) * _LIGHT[mood],
        )
    _layer(
        img,
        alpha,
        top_h,
        near * 1.1 + far * 0.15,
        hor + (far - hor) * 0.5,
        0.25,
        hy - hh,
        h,
        bottom=hy + (h - hy) * _smooth(xe * 1.05, xe * 0.45, dist) ** 0.6,
    )
    if "lighthouse" in words or hl < 0.3:
        cx = xe * rng.uniform(0.3, 0.5)
        cx = cx if left else w - cx
        ci = min(w - 1, int(cx))
        _lighthouse(
            img,
            alpha,
            pal,
            mood,
            cx,
            top_h[max(0, ci - 3) : ci + 4].max() + 2,
            h * rng.uniform(0.17, 0.23),
            sx > cx,
            None if transparent else (1 if left else -1, elev),
        )


def _land(img, alpha, rng, mood, scene, pal, w, h, hy, octaves):
    top, hor, sun, far, near, water = pal
    xs, n = np.arange(w, dtype=np.float32) + 0.5, int(rng.integers(3, 6))
    bases = [hy + (h * 0.84 - hy) * (k / (n - 1)) ** 1.2 for k in range(n)] + [float(h)]
    for k in range(n):
        dep = k / (n - 1)
        amp, freq = {"mountains": (0.24 - 0.17 * dep, 2 + 3 * dep), "desert": (0.07 - 0.02 * dep, 1.3 + dep)}.get(
            scene, (0.09 - 0.04 * dep, 1.5 + 2 * dep)
        )
        amp, sharp = amp * h, scene == "mountains"
        prof = _fbm1d(rng, w, octaves if sharp else max(2, octaves - 1), freq, sharp)
        if scene == "desert":  # sharp dune crests
            prof = 1.0 - np.abs(2.0 * prof - 1.0)
        top_k = bases[k] - amp * (prof - 0.35) * 2.0
        if scene in ("forest", "hills"):  # dense pines, or a few round trees on hills
            nt = min(300, int(round((w / h) * ((55 - 35 * dep) if scene == "forest" else 6 * dep))))
            tx, ht = rng.random(nt) * w, h * (0.03 + 0.1 * dep**1.4) * (0.6 + 0.7 * rng.random(nt))[:, None]
            d = np.abs(xs - tx[:, None])
            if nt and scene == "forest":
                top_k = top_k - (ht * np.clip(1 - d / (ht * 0.28), 0, 1) ** 1.15).max(axis=0)
            elif nt:
                top_k = top_k - (ht * 0.6 * np.sqrt(np.clip(1 - (d / (ht * 0.45)) ** 2, 0, 1))).max(axis=0)
        snow = None
        if scene == "mountains" and k < 2 and mood != "night":
            line = bases[k] - amp * (0.5 + 0.25 * _fbm1d(rng, w, 3, 8.0))
            snow = (line, np.minimum(hor + (1.0 - hor) * 0.6, 1.0) * (0.55 + 0.45 * _LIGHT[mood]))
        _layer(
            img,
            alpha,
            top_k.astype(np.float32),
            far + (near - far) * dep**0.8,
            hor + (far - hor) * 0.5,
            rng.uniform(0.2, 0.55) * (1 - dep * 0.5),
            bases[k] - amp * 0.3,
            bases[k + 1],
            snow=snow,
        )


def _paint(rng, mood, scene, words, pal, w, h, octaves, transparent):
    sky_rng, rng = rng.spawn(2)  # the sky's own stream: a transparent render keeps the same land
    img, alpha = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32)
    u, low = float(min(w, h)), mood in ("dusk", "dawn")
    hy = h * (rng.uniform(0.55, 0.66) if scene == "sea" else rng.uniform(0.44, 0.56))
    sx = w * rng.uniform(0.18, 0.82)
    sy = hy - h * (rng.uniform(0.03, 0.14) if low else rng.uniform(0.2, 0.36))
    if not transparent:
        _sky(img, sky_rng, mood, pal, hy, sx, sy, u * (0.065 if low else 0.045), u, octaves)
    if scene == "sea":
        _coast(img, alpha, rng, mood, words, pal, w, h, u, hy, sx, octaves, transparent)
    else:
        _land(img, alpha, rng, mood, scene, pal, w, h, hy, octaves)
    if not transparent and mood != "night" and sky_rng.random() < 0.6:  # a few birds
        bx, by, near = w * sky_rng.uniform(0.2, 0.8), hy * sky_rng.uniform(0.25, 0.6), pal[4] * 0.7 + pal[0] * 0.2
        for _ in range(int(sky_rng.integers(2, 6))):
            x, y = bx + sky_rng.normal(0, u * 0.06), by + sky_rng.normal(0, u * 0.03)
            s = u * sky_rng.uniform(0.008, 0.016)
            _polys(
                img,
                alpha,
                [
                    [
                        (x - s, y - 0.4 * s),
                        (x, y),
                        (x + s, y - 0.4 * s),
                        (x + s, y - 0.3 * s),
                        (x, y + 0.18 * s),
                        (x - s, y - 0.3 * s),
                    ]
                ],
                near,
            )
    if not transparent:  # gentle (separable) vignette
        img *= (1.0 - 0.35 * ((np.arange(h, dtype=np.float32) + 0.5) / h - 0.5) ** 2)[:, None, None]
        img *= (1.0 - 0.35 * ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) ** 2)[:, None]
    return img, alpha


def render_image(
    prompt: str,
    seed: int,
    width: int,
    height: int,
    *,
    output_format: str = "png",
    quality: str = "standard",
    output_compression: int | None = None,
    background: str = "auto",
    index: int = 0,
    negative_prompt: str = "",
) -> RenderedImage:
    """Render ``prompt`` with ``seed`` as an encoded ``width`` x ``height`` image.

    ``index`` is the position in a batch (distinct, reproducible images); ``quality`` adds
    noise detail and raises the default jpeg/webp encoder quality; ``output_compression``
    (0-100, quality percent as in the OpenAI API) overrides it for jpeg/webp, ignored for png;
    ``background="transparent"`` leaves the sky transparent (png/webp only); words of
    ``negative_prompt`` steer nothing and rule out the moods, scenes and colours they name.
    Raises ValueError for out-of-range sizes, unknown formats or other invalid arguments.
    """

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not (is_int(width) and is_int(height) and MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE):
        raise ValueError(f"width and height must be integers in [{MIN_SIZE}, {MAX_SIZE}], got {width!r}x{height!r}")
    if output_format not in SUPPORTED_FORMATS:
        raise ValueError(f"unsupported output_format {output_format!r}; expected one of {SUPPORTED_FORMATS}")
    if quality not in _QUALITY or background not in _BACKGROUNDS:
        raise ValueError(f"unsupported quality {quality!r} or background {background!r}")
    if background == "transparent" and output_format == "jpeg":
        raise ValueError("a transparent background needs png or webp output, jpeg has no alpha")
    if output_compression is not None and (not is_int(output_compression) or not 0 <= output_compression <= 100):
        raise ValueError(f"output_compression must be an integer in [0, 100], got {output_compression!r}")
    if not is_int(index) or index < 0 or not is_int(seed) or not isinstance(prompt, str):
        raise ValueError("prompt must be a str, seed an int and index a non-negative int")

    octaves, default_q = _QUALITY[quality]
    text = prompt.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(b"%s\x00%d\x00%d" % (text, seed, index)).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
    tag = hashlib.sha256(text).digest()  # prompt only: mood and scene
    avoid = set(re.findall(r"[a-z]+", negative_prompt.lower()))
    words = set(re.findall(r"[a-z]+", prompt.lower())) - avoid
    moods = [m for m in ("day", "dusk", "night", "dawn") if not avoid & {m, *_MOODS[m].split()}] or ["day"]
    scenes = [s for s in ("mountains", "forest", "sea", "desert", "hills") if not avoid & {s, *_SCENES[s].split()}]
    mood = next((m for m, ws in _MOODS.items() if m in moods and words & set(ws.split())), moods[tag[0] % len(moods)])
    scene = next(
        (s for s, ws in _SCENES.items() if s in scenes and words & set(ws.split())),
        (scenes or ["hills"])[tag[1] % max(1, len(scenes))],
    )
    transparent = background == "transparent"
    img, alpha = _paint(rng, mood, scene, words, _palette(mood, scene, words, rng), width, height, octaves, transparent)
    if transparent:
        img = np.dstack([img / np.maximum(alpha, 1e-4)[..., None], alpha])  # un-premultiply
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    im = Image.fromarray(img.astype(np.uint8))  # RGB or RGBA
    buf, q = io.BytesIO(), max(1, default_q if output_compression is None else output_compression)
    if output_format == "png":
        im.save(buf, "PNG", compress_level=4, optimize=False)
    elif output_format == "jpeg":
        im.save(buf, "JPEG", quality=q, optimize=False, progressive=False, subsampling=0 if q >= 90 else 2)
    else:
        im.save(buf, "WEBP", quality=q, method=4, lossless=False, exact=False, alpha_quality=100)
    return RenderedImage(buf.getvalue(), width, height, output_format, _MIME[output_format])
