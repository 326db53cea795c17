"""Procedural pedestrians for the synthetic visible/infrared dataset.

An identity is its body shape (height, head, torso/leg proportions, width, hair), its clothing (sleeve and
trouser length, skirt, top pattern, bag) and two appearances: visible colours and per-material infrared
levels. A garment's infrared level is mostly a fixed, non-linear and non-monotone function of its visible
colour (a dye response, :func:`_nir_response`: hue-driven, nearly blind to luma) plus a material term drawn
independently, and the infrared camera adds its own gamma, blur and noise. So colour alone cannot match
across modalities (equal colours of different dyes differ, unequal colours share levels, brightness order
is not kept), while the same person gives consistent levels a model can learn to relate, as with real
near-infrared images; shape, pattern layout and accessories match as well.

A person is drawn once as a label map (one integer per body part / material) and then coloured for the
camera's modality. All randomness comes from ``numpy.random.Generator`` objects passed in.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Label-map values (0 = background).
BACKGROUND, SKIN, HAIR, TOP, TOP_ALT, BOTTOM, SHOES, BAG, STRAP = range(9)
NUM_LABELS = 9

PATTERNS = ("plain", "hstripes", "vstripes", "checks", "band")
BOTTOMS = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder")

# Ranges the identity and camera parameters are drawn from (fractions of the person's height unless noted).
BODY_HEIGHT = (0.78, 0.94)  # of the image height
HEAD_RADIUS = (0.052, 0.072)
TORSO_LENGTH = (0.27, 0.36)
SHOULDER_WIDTH = (0.19, 0.29)
HIP_RATIO = (0.75, 1.05)  # hip width / shoulder width
LIMB_WIDTH = (0.055, 0.085)
SLEEVES = (0.3, 1.0)  # covered fraction of the arm: short or long sleeves
IR_SKIN = (0.78, 0.95)
IR_HAIR = (0.3, 0.5)
IR_GARMENT = (0.15, 0.75)
IR_PATTERN_CONTRAST = (0.08, 0.25)
IR_ACCESSORY = (0.05, 0.35)
#: Share of a garment's / accessory's infrared level that follows its dye (visible colour) through
#: :func:`_nir_response`; the rest is the material's own level, drawn independently.
IR_FROM_VISIBLE = 0.7
#: Hue (turns) at which a dye is brightest in the near infrared (reds / oranges, as many real dyes).
NIR_PEAK_HUE = 0.03


@dataclass(frozen=True)
class Identity:
    """Appearance parameters of one synthetic person (see module docstring)."""

    pid: int
    body_height: float
    head_radius: float
    torso_length: float
    shoulder_width: float
    hip_ratio: float
    limb_width: float
    long_hair: bool
    sleeve: float
    bottom: str
    pattern: str
    pattern_period: float
    bag: str
    visible_palette: np.ndarray  # (NUM_LABELS, 3) float32 in [0, 1]
    infrared_levels: np.ndarray  # (NUM_LABELS,) float32 in [0, 1]


@dataclass(frozen=True)
class Pose:
    """Per-image geometry: offsets in pixels, rotation in degrees, walk phase in [-1, 1]."""

    shift_x: float
    shift_y: float
    scale: float
    angle: float
    walk: float
    mirrored: bool


@dataclass(frozen=True)
class CameraStyle:
    """Per-camera rendering style: background, lighting, and (infrared) sensor response."""

    name: str
    modality: str
    background: np.ndarray  # (H', W', 3) float32 canvas larger than the image, cropped per image
    gain: float
    cast: np.ndarray  # (3,) per-channel gain (visible); ones for infrared
    gamma: float
    noise: float
    blur: float


def _hsv(
    rng: np.random.Generator, *, saturation: tuple[float, float], value: tuple[float, float]
) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return np.asarray(rgb, dtype=np.float32)


def _visible_palette(rng: np.random.Generator) -> np.ndarray:
    palette = np.zeros((NUM_LABELS, 3), dtype=np.float32)
    skin_tone = rng.uniform(0.35, 0.95)
    palette[SKIN] = np.array([0.95, 0.75, 0.6], dtype=np.float32) * skin_tone
    palette[HAIR] = _hsv(rng, saturation=(0.2, 0.7), value=(0.05, 0.6))
    for label in (TOP, TOP_ALT, BOTTOM, BAG):
        palette[label] = _hsv(rng, saturation=(0.1, 1.0), value=(0.12, 0.97))
    palette[SHOES] = _hsv(rng, saturation=(0.0, 0.5), value=(0.05, 0.9))
    palette[STRAP] = palette[BAG] * 0.6
    return palette


def _nir_response(rgb: np.ndarray) -> np.ndarray:
    """Near-infrared level of dyed materials from their visible colours (rows of ``rgb``), in [0, 1].

    A fixed, non-linear and non-monotone map: the level follows the hue (``cos`` of the distance to
    ``NIR_PEAK_HUE``) scaled by the saturation, so grey, dark and light fabrics all sit near the middle,
    saturated reds glow and saturated cyans / blues go dark. Luma barely enters, and colours of very
    different luma (or hue) share one level, so visible colour cannot be matched to infrared intensity
    directly; the same material does give the same level in every image, which is what a model can learn.
    """
    hsv = np.array([colorsys.rgb_to_hsv(*map(float, c)) for c in np.asarray(rgb)], dtype=np.float32)
    hue, saturation = hsv[:, 0], hsv[:, 1]
    level = 0.5 + 0.4 * saturation * np.cos(4.0 * math.pi * (hue - NIR_PEAK_HUE))
    clipped: np.ndarray = np.clip(level, 0.0, 1.0).astype(np.float32)
    return clipped


def _infrared_levels(rng: np.random.Generator, visible_palette: np.ndarray) -> np.ndarray:
    """Per-material infrared levels.

    Skin and hair: own ranges (body heat, not dye). Garments and accessories: ``IR_FROM_VISIBLE`` of the
    level comes from the material's visible colour through :func:`_nir_response`, the rest is drawn
    independently (dyes with the same colour but a different NIR response). The pattern's second colour
    keeps at least a small contrast to the top so the pattern stays visible in infrared.
    """
    levels = np.zeros(NUM_LABELS, dtype=np.float32)
    levels[SKIN] = rng.uniform(*IR_SKIN)
    levels[HAIR] = rng.uniform(*IR_HAIR)
    response = _nir_response(visible_palette)
    mix = IR_FROM_VISIBLE
    for label, span in ((TOP, IR_GARMENT), (BOTTOM, IR_GARMENT), (SHOES, IR_ACCESSORY), (BAG, IR_ACCESSORY)):
        levels[label] = mix * response[label] + (1.0 - mix) * rng.uniform(*span)
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    alt = mix * response[TOP_ALT] + (1.0 - mix) * (levels[TOP] + sign * rng.uniform(*IR_PATTERN_CONTRAST))
    if abs(alt - levels[TOP]) < IR_PATTERN_CONTRAST[0]:
        alt = levels[TOP] + sign * IR_PATTERN_CONTRAST[0]
    levels[TOP_ALT] = np.clip(alt, 0.05, 0.95)
    levels[STRAP] = levels[BAG]
    return levels


def sample_identity(pid: int, rng: np.random.Generator) -> Identity:
    """Draw the appearance of identity ``pid``."""
    palette = _visible_palette(rng)
    return Identity(
        pid=pid,
        body_height=rng.uniform(*BODY_HEIGHT),
        head_radius=rng.uniform(*HEAD_RADIUS),
        torso_length=rng.uniform(*TORSO_LENGTH),
        shoulder_width=rng.uniform(*SHOULDER_WIDTH),
        hip_ratio=rng.uniform(*HIP_RATIO),
        limb_width=rng.uniform(*LIMB_WIDTH),
        long_hair=bool(rng.uniform() < 0.35),
        sleeve=float(rng.choice(SLEEVES)),
        bottom=str(rng.choice(BOTTOMS, p=[0.6, 0.2, 0.2])),
        pattern=str(rng.choice(PATTERNS)),
        pattern_period=rng.uniform(0.035, 0.07),
        bag=str(rng.choice(BAGS, p=[0.5, 0.25, 0.25])),
        visible_palette=palette,
        infrared_levels=_infrared_levels(rng, palette),
    )


def sample_pose(rng: np.random.Generator, *, size: tuple[int, int]) -> Pose:
    """Draw a per-image pose: shift up to 8 % (x) / 4 % (y) of the size, scale 0.85-1.05, rotation ±5°."""
    height, width = size
    return Pose(
        shift_x=rng.uniform(-0.08, 0.08) * width,
        shift_y=rng.uniform(-0.04, 0.04) * height,
        scale=rng.uniform(0.85, 1.05),
        angle=rng.uniform(-5.0, 5.0),
        walk=rng.uniform(-1.0, 1.0),
        mirrored=bool(rng.uniform() < 0.5),
    )


def _limb(
    draw: ImageDraw.ImageDraw,
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    width: float,
    covered: float,
    cloth: int,
    bare: int,
) -> None:
    """Draw a limb from ``start`` to ``end``: the first ``covered`` fraction in ``cloth``, then ``bare``."""
    mid = (start[0] + covered * (end[0] - start[0]), start[1] + covered * (end[1] - start[1]))
    w = max(1, round(width))
    if covered < 1.0:
        draw.line([mid, end], fill=bare, width=w, joint="curve")
    draw.line([start, mid], fill=cloth, width=w, joint="curve")


def draw_labels(identity: Identity, pose: Pose, *, size: tuple[int, int]) -> np.ndarray:
    """Label map of ``identity`` in ``pose``: (H, W) uint8 with the module's label values."""
    height, width = size
    canvas = Image.new("L", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    body = identity.body_height * height * pose.scale
    cx = width / 2 + pose.shift_x
    foot = height / 2 + body / 2 + pose.shift_y
    top = foot - body
    r = identity.head_radius * body
    shoulder_y = top + 2.2 * r
    hip_y = shoulder_y + identity.torso_length * body
    half_sh = identity.shoulder_width * body / 2
    half_hip = half_sh * identity.hip_ratio
    limb = identity.limb_width * body
    if identity.bag == "backpack":
        draw.rectangle([cx + half_sh * 0.3, shoulder_y + r * 0.3, cx + half_sh * 1.35, hip_y - r], fill=BAG)
    if identity.long_hair:
        draw.rectangle([cx - r * 1.05, top + r, cx + r * 1.05, shoulder_y + r * 1.2], fill=HAIR)
    _draw_legs(draw, identity, pose, cx=cx, hip_y=hip_y, foot=foot, half_hip=half_hip, limb=limb)
    draw.polygon(
        [
            (cx - half_sh, shoulder_y),
            (cx + half_sh, shoulder_y),
            (cx + half_hip, hip_y),
            (cx - half_hip, hip_y),
        ],
        fill=TOP,
    )
    arm = 0.36 * body
    for side in (-1, 1):
        swing = side * pose.walk * 0.25
        start = (cx + side * (half_sh - limb / 2), shoulder_y + limb / 2)
        end = (start[0] + arm * math.sin(swing) + side * limb * 0.3, start[1] + arm * math.cos(swing))
        _limb(draw, start, end, width=limb * 0.85, covered=identity.sleeve, cloth=TOP, bare=SKIN)
    draw.rectangle([cx - r * 0.4, top + 1.6 * r, cx + r * 0.4, shoulder_y + 1], fill=SKIN)
    draw.ellipse([cx - r * 1.05, top - r * 0.05, cx + r * 1.05, top + 1.6 * r], fill=HAIR)
    draw.ellipse([cx - r * 0.9, top + r * 0.35, cx + r * 0.9, top + 2.05 * r], fill=SKIN)
    if identity.bag == "shoulder":
        draw.line(
            [(cx - half_sh * 0.8, shoulder_y), (cx + half_hip * 1.1, hip_y - r * 0.5)],
            fill=STRAP,
            width=max(1, round(limb * 0.25)),
        )
        draw.rectangle([cx + half_hip * 0.8, hip_y - r * 1.2, cx + half_hip * 1.5, hip_y + r * 0.8], fill=BAG)
    labels = np.asarray(canvas, dtype=np.uint8).copy()
    _apply_pattern(labels, identity, origin=(cx, shoulder_y), body=body)
    image = Image.fromarray(labels).rotate(
        pose.angle, resample=Image.Resampling.NEAREST, center=(cx, foot - body / 2)
    )
    if pose.mirrored:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8)


def _draw_legs(
    draw: ImageDraw.ImageDraw,
    identity: Identity,
    pose: Pose,
    *,
    cx: float,
    hip_y: float,
    foot: float,
    half_hip: float,
    limb: float,
) -> None:
    leg = foot - hip_y
    covered = {"trousers": 1.0, "shorts": 0.4, "skirt": 0.0}[identity.bottom]
    for side in (-1, 1):
        stride = side * pose.walk * 0.12 * leg
        start = (cx + side * half_hip * 0.5, hip_y - limb * 0.3)
        end = (cx + side * half_hip * 0.45 + stride, foot - limb * 0.4)
        _limb(draw, start, end, width=limb, covered=covered, cloth=BOTTOM, bare=SKIN)
        draw.ellipse([end[0] - limb * 0.75, foot - limb * 0.8, end[0] + limb * 0.75, foot], fill=SHOES)
    draw.rectangle([cx - half_hip, hip_y - limb * 0.5, cx + half_hip, hip_y + limb * 0.4], fill=BOTTOM)
    if identity.bottom == "skirt":
        draw.polygon(
            [
                (cx - half_hip, hip_y - limb * 0.5),
                (cx + half_hip, hip_y - limb * 0.5),
                (cx + half_hip * 1.35, hip_y + 0.35 * leg),
                (cx - half_hip * 1.35, hip_y + 0.35 * leg),
            ],
            fill=BOTTOM,
        )


def _apply_pattern(
    labels: np.ndarray, identity: Identity, *, origin: tuple[float, float], body: float
) -> None:
    """Switch part of the ``TOP`` pixels to ``TOP_ALT`` following the identity's pattern (in place)."""
    if identity.pattern == "plain":
        return
    period = max(2.0, identity.pattern_period * body)
    yy, xx = np.mgrid[0 : labels.shape[0], 0 : labels.shape[1]]
    row = np.floor((yy - origin[1]) / period).astype(np.int64) % 2 == 1
    col = np.floor((xx - origin[0]) / period).astype(np.int64) % 2 == 1
    if identity.pattern == "hstripes":
        alt = row
    elif identity.pattern == "vstripes":
        alt = col
    elif identity.pattern == "checks":
        alt = row ^ col
    else:  # "band": one wide chest band
        alt = (yy - origin[1] > 1.5 * period) & (yy - origin[1] < 3.5 * period)
    labels[(labels == TOP) & alt] = TOP_ALT


def sample_camera(
    name: str, modality: str, *, rng: np.random.Generator, size: tuple[int, int]
) -> CameraStyle:
    """Draw a camera style: a textured, graded background canvas and the lighting / sensor response."""
    height, width = size
    canvas_h, canvas_w = int(height * 1.25), int(width * 1.5)
    yy, xx = np.mgrid[0:canvas_h, 0:canvas_w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(angle) * xx / canvas_w + math.sin(angle) * yy / canvas_h + 1.0) / 2.0
    period = rng.uniform(6, 20)
    texture_kind = rng.integers(0, 3)
    if texture_kind == 0:
        texture = (np.floor(xx / period) % 2).astype(np.float32)
    elif texture_kind == 1:
        texture = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    else:
        texture = (
            np.asarray(
                Image.fromarray(
                    (rng.uniform(0, 255, (canvas_h // 8 + 1, canvas_w // 8 + 1))).astype(np.uint8)
                ).resize((canvas_w, canvas_h), Image.Resampling.BICUBIC),
                dtype=np.float32,
            )
            / 255.0
        )
    floor = (yy > canvas_h * rng.uniform(0.7, 0.9)).astype(np.float32)
    if modality == "visible":
        base_a = _hsv(rng, saturation=(0.0, 0.5), value=(0.3, 0.9))
        base_b = _hsv(rng, saturation=(0.0, 0.5), value=(0.2, 0.8))
        floor_colour = _hsv(rng, saturation=(0.0, 0.3), value=(0.2, 0.6))
        mix = (ramp * 0.7 + texture * 0.3)[..., None]
        background = base_a * (1 - mix) + base_b * mix
        background = background * (1 - floor[..., None]) + floor_colour * floor[..., None]
        cast = rng.uniform(0.85, 1.15, 3).astype(np.float32)
        return CameraStyle(
            name,
            modality,
            background.astype(np.float32),
            rng.uniform(0.65, 1.25),
            cast,
            1.0,
            rng.uniform(0.005, 0.02),
            rng.uniform(0.0, 0.6),
        )
    level = rng.uniform(0.08, 0.4)
    grey = level + 0.12 * (ramp - 0.5) + 0.06 * (texture - 0.5) - 0.05 * floor
    background = np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2)
    return CameraStyle(
        name,
        modality,
        background.astype(np.float32),
        rng.uniform(0.85, 1.15),
        np.ones(3, dtype=np.float32),
        rng.uniform(0.6, 1.6),
        rng.uniform(0.02, 0.05),
        rng.uniform(0.6, 1.2),
    )


def render(
    identity: Identity, camera: CameraStyle, *, rng: np.random.Generator, size: tuple[int, int]
) -> Image.Image:
    """Render one image of ``identity`` seen by ``camera``: (H, W) RGB; infrared has 3 identical channels."""
    labels = draw_labels(identity, sample_pose(rng, size=size), size=size)
    return colorize(labels, identity, camera=camera, rng=rng)


def colorize(
    labels: np.ndarray, identity: Identity, *, camera: CameraStyle, rng: np.random.Generator
) -> Image.Image:
    """Colour a label map for ``camera``'s modality over a random crop of its background."""
    height, width = labels.shape
    bh, bw = camera.background.shape[:2]
    y0, x0 = rng.integers(0, bh - height + 1), rng.integers(0, bw - width + 1)
    background = camera.background[y0 : y0 + height, x0 : x0 + width]
    person = labels > 0
    shade = 0.85 + 0.15 * np.cos(np.linspace(-1.2, 1.2, width, dtype=np.float32))[None, :]
    if camera.modality == "visible":
        colour = identity.visible_palette[labels] * shade[..., None]
        image = np.where(person[..., None], colour, background) * camera.gain * camera.cast
    else:
        heat = identity.infrared_levels[labels] * rng.uniform(0.9, 1.1)
        grey = np.where(person, heat, background[..., 0] * camera.gain)
        image = np.repeat(np.clip(grey, 0, 1)[..., None] ** camera.gamma, 3, axis=2)
    result = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    if camera.blur > 0.05:
        result = result.filter(ImageFilter.GaussianBlur(camera.blur))
    noisy = np.asarray(result, dtype=np.float32) / 255.0
    if camera.modality == "infrared":  # sensor noise after the optics blur, shared by the three channels
        noisy = noisy + rng.normal(0.0, camera.noise, size=noisy.shape[:2]).astype(np.float32)[..., None]
    else:
        noisy = noisy + rng.normal(0.0, camera.noise, size=noisy.shape).astype(np.float32)
    return Image.fromarray((np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8))
