"""Seeded generator of a small synthetic person re-ID dataset in the Market-1501 layout.

Each identity is a drawn, person-like figure whose *combination* of clothing attributes
identifies it: shirt colours and pattern (solid, horizontal or vertical stripes of a given
width, checks, chest logo of a given shape, two-tone split, open jacket, contrasting
sleeves), sleeve length, pants colour and type (long, shorts, skirt), shoes, skin tone, hair
colour and length, hat, bag (none, backpack, handbag, shoulder bag; colour and side) and
body build. All colours come from small shared palettes, and identities are generated in
families that share every colour and differ only in pattern and layout, so colour alone
does not identify a person. Each image shows one walk past one camera: view (front, back,
facing left or right), walking phase of arms and legs, lean, scale, translation, crop
misalignment, occasional occluders and partial passers-by. Each of the 6 cameras has its
own white balance, exposure, gamma, saturation, haze, light gradient, blur, resolution,
sensor noise, JPEG quality, background scene and preferred walking directions.

Splits follow Market-1501: train and test identities are disjoint; each test identity has
one query image in each of up to 3 cameras and its other images in the gallery
(``bounding_box_test``), which also holds distractors (identity ``0000``, never a match)
and junk images (identity ``-1``, dropped by the loader). File names are
``PPPP_cXsY_FFFFFF_NN.jpg`` and images are 128 x 64 (height x width) RGB JPEGs.

Difficulty (default size, seed 0: 1,941 train images of 150 identities; 421 queries and
1,298 gallery images of 150 other identities plus 100 distractors): random ranking scores
1.1% mAP (1.2% rank-1), the colour-histogram baseline of ``metrics.baselines`` 11.5% mAP
(22.8% rank-1), and a small 7-layer CNN trained from scratch for 5 minutes on CPU with
softmax cross-entropy 53% mAP (67% rank-1).

``ensure_synthetic_dataset(root)`` generates ``<root>/Synthetic-ReID`` on first use (about
6 s of CPU for the default 3,710 images), writing into a temporary folder that is renamed
at the end, so an interrupted run never leaves a folder that looks complete. A metadata
file records the generator version, seed and sizes; a dataset made with other settings is
regenerated.
"""
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

import cv2
import numpy as np

FOLDER_NAME = "Synthetic-ReID"
GENERATOR_VERSION = 1
METADATA_FILE_NAME = "synthetic_metadata.json"
SUBFOLDER_NAMES = ("bounding_box_train", "bounding_box_test", "query")
IMAGE_HEIGHT, IMAGE_WIDTH = 128, 64
_TEMP_PREFIX = "." + FOLDER_NAME + ".tmp-"

DEFAULT_SIZE_KWARGS = dict(
    num_train_identities=150,
    num_test_identities=150,
    num_cameras=6,
    train_images_per_identity=(10, 16),
    gallery_images_per_camera=(1, 3),
    max_query_cameras=3,
    num_distractors=100,
    num_junk=50,
    family_size=3,
)

# Drawing happens at twice the output resolution and is area-downsampled (anti-aliasing).
_SS = 2
_H, _W = IMAGE_HEIGHT * _SS, IMAGE_WIDTH * _SS

# Shared palettes (RGB). Several entries are near each other on purpose (black / charcoal /
# navy, beige / khaki / white) so that camera colour casts make them collide.
COLOURS = {
    "black": (25, 25, 28), "charcoal": (60, 62, 66), "grey": (128, 128, 130),
    "white": (230, 230, 226), "navy": (30, 40, 85), "blue": (45, 90, 185),
    "light_blue": (130, 175, 225), "red": (185, 35, 40), "maroon": (110, 30, 45),
    "green": (50, 140, 70), "olive": (100, 105, 50), "yellow": (225, 200, 60),
    "orange": (225, 120, 40), "pink": (225, 140, 170), "purple": (110, 60, 140),
    "brown": (105, 70, 45), "beige": (200, 180, 145), "khaki": (165, 150, 100),
}
SHIRT_COLOURS = ("black", "charcoal", "grey", "white", "navy", "blue", "light_blue", "red",
                 "maroon", "green", "olive", "yellow", "orange", "pink", "purple", "brown",
                 "beige")
PANTS_COLOURS = ("black", "charcoal", "grey", "navy", "blue", "light_blue", "khaki", "beige",
                 "brown", "olive", "white", "maroon")
SHOE_COLOURS = ("black", "white", "grey", "brown", "red", "navy")
BAG_COLOURS = ("black", "brown", "red", "navy", "grey", "pink", "green", "beige")
HAT_COLOURS = ("black", "white", "red", "navy", "beige", "yellow")
HAIR_COLOURS = {"black": (20, 18, 18), "dark_brown": (55, 35, 25), "brown": (110, 75, 45),
                "blond": (200, 170, 100), "grey": (150, 150, 150), "auburn": (130, 55, 30)}
SKIN_TONES = ((240, 200, 170), (220, 175, 140), (190, 140, 100), (145, 100, 70), (95, 65, 45))

PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo", "split", "jacket", "sleeves")
LOGO_SHAPES = ("circle", "square", "triangle", "diamond", "bar")
PANTS_TYPES = ("long", "shorts", "skirt")
BAG_TYPES = ("none", "backpack", "handbag", "shoulder")
VIEWS = ("front", "back", "right", "left")
_STRUCTURE_KEYS = ("pattern", "stripe_count", "logo_shape", "sleeve", "pants_type",
                   "hair_length", "hat", "bag", "bag_side")


def _colour(name):
    return np.array(COLOURS[name], np.float32)


# ----------------------------------------------------------------------------------------
# Identities
# ----------------------------------------------------------------------------------------
def _sample_colour_scheme(rng):
    shirt = rng.choice(SHIRT_COLOURS)
    secondary = rng.choice([c for c in SHIRT_COLOURS if c != shirt])
    return dict(
        shirt=shirt, shirt2=secondary, pants=rng.choice(PANTS_COLOURS),
        shoes=rng.choice(SHOE_COLOURS), bag_colour=rng.choice(BAG_COLOURS),
        hat_colour=rng.choice(HAT_COLOURS),
        hair_colour=rng.choice(list(HAIR_COLOURS)), skin=int(rng.integers(len(SKIN_TONES))))


def _sample_structure(rng):
    pattern = rng.choice(PATTERNS)
    return dict(
        pattern=pattern,
        stripe_count=int(rng.choice((4, 6, 9))) if pattern in ("hstripes", "vstripes",
                                                               "checks") else 0,
        logo_shape=rng.choice(LOGO_SHAPES) if pattern == "logo" else "",
        sleeve=rng.choice(("long", "short")),
        pants_type=rng.choice(PANTS_TYPES, p=(0.55, 0.25, 0.2)),
        hair_length=rng.choice(("short", "long")),
        hat=bool(rng.random() < 0.2),
        bag=rng.choice(BAG_TYPES, p=(0.4, 0.2, 0.2, 0.2)),
        bag_side=rng.choice(("left", "right")),
        build=float(rng.uniform(0.88, 1.15)),
        height=float(rng.uniform(0.93, 1.04)),
    )


def _structure_key(identity):
    key = tuple(identity[k] for k in _STRUCTURE_KEYS)
    if identity["bag"] == "none":  # the side of a missing bag is no difference
        key = key[:-1]
    return key


def _structure_distance(a, b):
    keys = ("pattern", "sleeve", "pants_type", "hair_length", "hat", "bag")
    return sum(a[k] != b[k] for k in keys) + (a["stripe_count"] != b["stripe_count"]) * 0.5


def sample_identities(number, rng, family_size=3):
    """Identities in families sharing all colours and differing in pattern and layout."""
    identities, seen = [], set()
    while len(identities) < number:
        scheme = _sample_colour_scheme(rng)
        family = []
        size = int(rng.integers(max(1, family_size - 1), family_size + 2))
        attempts = 0
        while len(family) < size and attempts < 50:
            attempts += 1
            candidate = dict(scheme, **_sample_structure(rng))
            key = (tuple(sorted(scheme.items())), _structure_key(candidate))
            if key in seen or any(_structure_distance(candidate, other) < 2 for other in family):
                continue
            seen.add(key)
            family.append(candidate)
        identities.extend(family)
    return identities[:number]


# ----------------------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------------------
_BACKGROUND_TYPES = ("tiles", "bricks", "foliage", "indoor", "street", "storefront")
_BACKGROUND_COLOURS = ("grey", "beige", "khaki", "brown", "charcoal", "white", "olive",
                       "light_blue", "maroon", "green", "navy", "red", "yellow")


@dataclass
class Camera:
    index: int
    gains: np.ndarray
    exposure: float
    gamma: float
    saturation: float
    haze: float
    haze_colour: np.ndarray
    gradient: np.ndarray
    blur_sigma: float
    low_resolution: float
    noise: float
    jpeg_quality: int
    scale: float
    view_probabilities: np.ndarray
    backgrounds: list = field(repr=False)


def _make_cameras(num_cameras, rng):
    temperatures = rng.permutation(np.linspace(-1.0, 1.0, num_cameras))
    exposures = rng.permutation(np.linspace(0.88, 1.12, num_cameras))
    cameras = []
    for index in range(num_cameras):
        t = temperatures[index] + rng.uniform(-0.1, 0.1)
        tint = rng.uniform(-0.03, 0.03)
        gains = np.array([1.0 + 0.06 * t, 1.0 + tint, 1.0 - 0.06 * t], np.float32)
        gains /= gains.mean()
        views = rng.dirichlet(np.full(4, 2.0)) * 0.8 + 0.05
        angle = rng.uniform(0, 2 * np.pi)
        cameras.append(Camera(
            index=index + 1, gains=gains, exposure=float(exposures[index]),
            gamma=float(rng.uniform(0.9, 1.12)), saturation=float(rng.uniform(0.82, 1.05)),
            haze=float(rng.uniform(0.0, 0.1)),
            haze_colour=np.array(rng.uniform(0.55, 0.9, 3), np.float32),
            gradient=np.array([np.cos(angle), np.sin(angle)], np.float32)
            * rng.uniform(0.0, 0.15),
            blur_sigma=float(rng.uniform(0.3, 2.2)),
            low_resolution=float(rng.choice((1.0, 1.0, 0.7, 0.55))),
            noise=float(rng.uniform(1.5, 8.0)), jpeg_quality=int(rng.integers(55, 96)),
            scale=float(rng.uniform(0.86, 1.0)), view_probabilities=views / views.sum(),
            backgrounds=[_make_background(kind, rng) for kind in rng.choice(
                _BACKGROUND_TYPES, size=3, replace=False)]))
    return cameras


def _muted(name):
    return np.array(COLOURS[name], np.float32) * 0.45 + 0.55 * 120.0


def _make_background(kind, rng):
    """A scene of the camera, twice the canvas size, as (label map, shading, base palette).

    Labels 0..3 index the scene's palette, 4 and 5 are light and dark markings. Every image
    crops a random window and recolours the palette a little (lighting, changing objects).
    """
    height, width = 2 * _H, 3 * _W
    labels = np.zeros((height, width), np.uint8)
    shading = np.ones((height, width), np.float32)
    if kind == "tiles":
        step = int(rng.integers(24, 48))
        for y in range(0, height, step):
            cv2.line(labels, (0, y), (width, y), 1, 2)
        for x in range(0, width, step):
            cv2.line(labels, (x, 0), (x, height), 1, 2)
    elif kind == "bricks":
        brick_h, brick_w = int(rng.integers(12, 20)), int(rng.integers(30, 50))
        labels[:] = 1  # mortar
        for row, y in enumerate(range(0, height, brick_h)):
            offset = (row % 2) * brick_w // 2
            for x in range(-offset, width, brick_w):
                corners = (x + 1, y + 1), (x + brick_w - 2, y + brick_h - 2)
                cv2.rectangle(labels, *corners, 0, -1)
                cv2.rectangle(shading, *corners, float(rng.uniform(0.85, 1.12)), -1)
    elif kind == "foliage":
        for _ in range(400):
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.circle(labels, centre, int(rng.integers(4, 18)), int(rng.integers(1, 4)), -1)
    elif kind == "indoor":
        horizon = int(rng.integers(height // 3, 2 * height // 3))
        labels[horizon:] = 1
        for _ in range(6):
            x, w = int(rng.integers(width)), int(rng.integers(20, 60))
            y, h = int(rng.integers(0, horizon - 10)), int(rng.integers(20, 80))
            cv2.rectangle(labels, (x, y), (x + w, min(horizon, y + h)), 2, -1)
    elif kind == "street":
        kerb = int(rng.integers(height // 4, height // 2))
        labels[:kerb] = 1
        cv2.line(labels, (0, kerb), (width, kerb), 2, 6)
        for x in range(0, width, 60):
            cv2.line(labels, (x, height * 3 // 4), (x + 30, height * 3 // 4), 4, 5)
    else:  # storefront
        x = 0
        while x < width:
            w = int(rng.integers(20, 70))
            cv2.rectangle(labels, (x, 0), (x + w, height), int(rng.integers(4)), -1)
            cv2.line(labels, (x, 0), (x, height), 5, 3)
            x += w
    noise = rng.normal(0.0, 0.05, (height // 4, width // 4)).astype(np.float32)
    shading *= 1.0 + cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)
    palette = np.stack([_muted(n) for n in rng.choice(_BACKGROUND_COLOURS, 4, replace=False)])
    shading = np.clip(shading * 128.0, 0, 255).astype(np.uint8)  # x128 fixed point for cv2
    return (np.repeat(labels[..., None], 3, axis=2), np.repeat(shading[..., None], 3, axis=2),
            palette)


# ----------------------------------------------------------------------------------------
# Drawing a person (canonical pose: 2x canvas, centred, feet near the bottom)
# ----------------------------------------------------------------------------------------
def _shade(colour, factor):
    return tuple(float(min(255.0, c * factor)) for c in colour)


def _ipt(point):
    return int(point[0] + 0.5), int(point[1] + 0.5)


class _Layer:
    """RGBA drawing layer: the alpha channel marks the figure's pixels."""

    def __init__(self):
        self.image = np.zeros((_H, _W, 4), np.uint8)

    @staticmethod
    def _rgba(colour):
        return float(colour[0]), float(colour[1]), float(colour[2]), 255.0

    def poly(self, points, colour):
        pts = (np.asarray(points) + 0.5).astype(np.int32)
        cv2.fillPoly(self.image, [pts], self._rgba(colour))

    def line(self, a, b, colour, thickness):
        cv2.line(self.image, _ipt(a), _ipt(b), self._rgba(colour), max(1, int(thickness + 0.5)))

    def ellipse(self, centre, axes, colour, angle=0.0, start=0, end=360):
        axes = (max(1, int(axes[0] + 0.5)), max(1, int(axes[1] + 0.5)))
        cv2.ellipse(self.image, _ipt(centre), axes, angle, start, end, self._rgba(colour), -1)

    def rect(self, x0, y0, x1, y1, colour):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)


def _end_point(start, angle, length):
    """End of a segment hanging from `start` at `angle` (radians from straight down)."""
    return start[0] + length * np.sin(angle), start[1] + length * np.cos(angle)


def _limb(layer, start, angle, length, colour, thickness):
    """Draw a segment hanging from `start`; returns its end."""
    end = _end_point(start, angle, length)
    layer.line(start, end, colour, thickness)
    return end


def _torso_pattern(identity, view, width, height):
    """Colour map (height, width, 3) of the torso's bounding box for the identity and view."""
    c1, c2 = _colour(identity["shirt"]), _colour(identity["shirt2"])
    pattern = identity["pattern"]
    v = (np.arange(height, dtype=np.float32) + 0.5)[:, None] / height
    u = (np.arange(width, dtype=np.float32) + 0.5)[None, :] / width
    second = np.zeros((height, width), bool)
    n = identity["stripe_count"]
    if pattern == "hstripes":
        second = np.broadcast_to(np.floor(v * n) % 2 == 1, (height, width))
    elif pattern == "vstripes":
        columns = max(2, int(round(n * (0.6 if view in ("right", "left") else 1.0))))
        second = np.broadcast_to(np.floor(u * columns) % 2 == 1, (height, width))
    elif pattern == "checks":
        columns = max(2, int(round(n * (0.6 if view in ("right", "left") else 1.0))))
        second = (np.floor(v * n) + np.floor(u * columns)) % 2 == 1
    elif pattern == "split":
        second = np.broadcast_to(v > 0.5, (height, width))
    elif pattern == "jacket" and view != "back":
        centre, half = (0.5, 0.17) if view == "front" else (0.8, 0.1)
        second = np.broadcast_to(np.abs(u - centre) < half, (height, width))
    elif pattern == "logo" and view != "back":
        cx, cy = (0.5, 0.35) if view == "front" else (0.72, 0.35)
        size = 0.22 if view == "front" else 0.16
        # logo size in torso-width units; aspect corrected with the torso aspect ratio
        du, dv = (u - cx) / size, (v - cy) * (height / width) / size
        shape = identity["logo_shape"]
        if shape == "circle":
            second = du ** 2 + dv ** 2 < 1.0
        elif shape == "square":
            second = (np.abs(du) < 0.85) & (np.abs(dv) < 0.85)
        elif shape == "triangle":
            second = (dv < 0.8) & (dv > -1.0) & (np.abs(du) < (dv + 1.0) * 0.55)
        elif shape == "diamond":
            second = np.abs(du) + np.abs(dv) < 1.1
        else:  # horizontal bar across the chest
            second = (np.abs(dv) < 0.45) & (np.abs(u - 0.5) < 0.45)
    out = np.empty((height, width, 3), np.float32)
    out[:] = c1
    out[second] = c2
    return out


def _draw_person(identity, view, phase):
    """RGBA uint8 image of the person in the canonical 2x canvas."""
    layer = _Layer()
    P = 0.9 * _H * identity["height"]
    build = identity["build"] * 1.3  # Market boxes are tight around the person
    cx = _W / 2.0
    top = _H * 0.975 - P
    side = view in ("right", "left")
    skin = np.array(SKIN_TONES[identity["skin"]], np.float32)
    shirt = _colour(identity["shirt"])
    shirt2 = _colour(identity["shirt2"])
    pants = _colour(identity["pants"])
    shoes = _colour(identity["shoes"])
    hair = np.array(HAIR_COLOURS[identity["hair_colour"]], np.float32)
    bag_colour = _colour(identity["bag_colour"])
    sleeve_colour = shirt2 if identity["pattern"] == "sleeves" else shirt

    y_head = top + 0.068 * P
    y_shoulder = top + 0.15 * P
    y_hip = top + 0.48 * P
    y_knee = top + 0.71 * P
    head_rx, head_ry = 0.05 * P, 0.064 * P
    shoulder_half = (0.068 if side else 0.118) * P * build
    waist_half = (0.062 if side else 0.098) * P * build
    leg_w = 0.078 * P * build
    thigh, shin = y_knee - y_hip, 0.235 * P
    arm_w = 0.052 * P * build
    upper_arm, forearm = 0.17 * P, 0.15 * P
    swing = np.sin(phase)
    far = 0.78  # far limbs are in shadow

    # Which image side holds the person's left/right hand (front view mirrors it).
    bag = identity["bag"]
    if side:
        # canonical side view faces right: the person's right side is towards the camera
        near_side = "right" if view == "right" else "left"
        bag_near = identity["bag_side"] == near_side
    else:
        bag_x_sign = (1 if identity["bag_side"] == "left" else -1) * (1 if view == "front" else -1)

    long_hair = identity["hair_length"] == "long"

    # --- behind the body
    if long_hair and view != "back":
        hx = cx - 0.02 * P if side else cx
        width = head_rx * (0.9 if side else 1.15)
        layer.rect(hx - width, y_head, hx + width * (0.6 if side else 1.0),
                   y_shoulder + 0.09 * P, hair)
    if bag == "backpack" and view != "back":
        if side:
            layer.rect(cx - waist_half - 0.09 * P, y_shoulder + 0.02 * P,
                       cx - waist_half + 0.01 * P, y_shoulder + 0.24 * P, bag_colour)
        else:
            layer.rect(cx - shoulder_half - 0.012 * P, y_shoulder + 0.03 * P,
                       cx + shoulder_half + 0.012 * P, y_shoulder + 0.22 * P,
                       _shade(bag_colour, far))

    # --- legs
    def draw_leg(hip_x, thigh_angle, shin_angle, shade, lift=0.0):
        knee = _end_point((hip_x, y_hip), thigh_angle, thigh - lift * 0.5)
        ankle = (knee[0] + shin * np.sin(shin_angle), knee[1] + (shin - lift * 0.5)
                 * np.cos(shin_angle))
        kind = identity["pants_type"]
        upper_colour = _shade(pants, shade) if kind != "skirt" else _shade(skin, shade)
        lower_colour = _shade(pants, shade) if kind == "long" else _shade(skin, shade)
        layer.line((hip_x, y_hip), knee, upper_colour, leg_w)
        layer.line(knee, ankle, lower_colour, leg_w * 0.85)
        foot_dx = 0.035 * P if side else 0.0
        layer.ellipse((ankle[0] + foot_dx, ankle[1] + 0.012 * P),
                      (0.05 * P if side else 0.034 * P, 0.02 * P), _shade(shoes, shade))

    if side:
        a = 0.42 * swing
        for sign, shade in ((-1, far), (1, 1.0)):
            thigh_angle = sign * a
            bend = 0.35 * max(0.0, -sign * swing)  # trailing leg bends at the knee
            draw_leg(cx, -thigh_angle, -thigh_angle + bend, shade)
    else:
        for sign in (-1, 1):
            lift = 0.05 * P * max(0.0, sign * swing)
            draw_leg(cx + sign * 0.048 * P * build, sign * 0.05, sign * 0.02, 1.0, lift)

    if identity["pants_type"] == "skirt":
        skirt_half = waist_half * 1.05 if side else waist_half * 1.25
        layer.poly([(cx - waist_half, y_hip - 0.02 * P), (cx + waist_half, y_hip - 0.02 * P),
                    (cx + skirt_half + 0.03 * P, y_knee - 0.02 * P),
                    (cx - skirt_half - 0.03 * P, y_knee - 0.02 * P)], pants)

    # --- arms (far arm and its bag before the torso)
    def draw_arm(shoulder, angle, shade, with_bag=False):
        short = identity["sleeve"] == "short"
        elbow_angle = angle + (0.35 * (1 if side else 0)) * max(0.0, np.sin(angle * 3))
        elbow = _end_point(shoulder, angle, upper_arm)
        if short:
            mid = (shoulder[0] * 0.45 + elbow[0] * 0.55, shoulder[1] * 0.45 + elbow[1] * 0.55)
            layer.line(shoulder, elbow, _shade(skin, shade), arm_w * 0.85)
            layer.line(shoulder, mid, _shade(sleeve_colour, shade), arm_w * 1.05)
        else:
            layer.line(shoulder, elbow, _shade(sleeve_colour, shade), arm_w)
        hand = _limb(layer, elbow, elbow_angle + (0.25 if side else 0.0), forearm,
                     _shade(skin if short else sleeve_colour, shade), arm_w * 0.9)
        layer.ellipse(hand, (arm_w * 0.45, arm_w * 0.55), _shade(skin, shade))
        if with_bag:
            w, h = 0.075 * P, 0.1 * P
            layer.line((hand[0] - w * 0.5, hand[1]), (hand[0] + w * 0.5, hand[1]),
                       _shade(bag_colour, shade * 0.8), 2 * _SS)
            layer.rect(hand[0] - w, hand[1] + 0.015 * P, hand[0] + w, hand[1] + 0.015 * P + h,
                       _shade(bag_colour, shade))
        return hand

    shoulder_y = y_shoulder + 0.02 * P
    if side:
        a = -0.5 * swing
        draw_arm((cx, shoulder_y), a, far, with_bag=(bag == "handbag" and not bag_near))
        if bag == "shoulder" and not bag_near:
            layer.rect(cx - 0.05 * P, y_hip - 0.07 * P, cx + 0.06 * P, y_hip + 0.04 * P,
                       _shade(bag_colour, far))
    else:
        for sign in (-1, 1):
            x = cx + sign * (shoulder_half + arm_w * 0.25)
            angle = sign * 0.1 + 0.12 * swing * sign
            draw_arm((x, shoulder_y), -angle if sign < 0 else angle, 1.0,
                     with_bag=(bag == "handbag" and sign == bag_x_sign))

    # --- torso with its pattern
    torso = np.array([(cx - shoulder_half, y_shoulder), (cx + shoulder_half, y_shoulder),
                      (cx + waist_half, y_hip), (cx - waist_half, y_hip)])
    if side:
        torso[:, 0] += np.array([0.0, 0.0, 0.01, 0.01]) * P  # slight chest forward
    x0 = int(np.floor(torso[:, 0].min()))
    x1 = int(np.ceil(torso[:, 0].max())) + 1
    y0, y1 = int(np.floor(y_shoulder)), int(np.ceil(y_hip)) + 1
    x0, x1, y0, y1 = max(0, x0), min(_W, x1), max(0, y0), min(_H, y1)
    torso_mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(torso_mask, [np.round(torso - (x0, y0)).astype(np.int32)], 1)
    colours = _torso_pattern(identity, view, x1 - x0, y1 - y0)
    inside = torso_mask.astype(bool)
    region = layer.image[y0:y1, x0:x1]
    region[inside, :3] = colours[inside].astype(np.uint8)
    region[inside, 3] = 255
    # neck
    layer.rect(cx - 0.022 * P, y_head + head_ry * 0.6, cx + 0.022 * P, y_shoulder + 2, skin)

    # --- bags on or over the torso
    if bag == "backpack":
        if view == "back":
            layer.rect(cx - shoulder_half * 0.8, y_shoulder + 0.03 * P,
                       cx + shoulder_half * 0.8, y_shoulder + 0.23 * P, bag_colour)
            layer.rect(cx - shoulder_half * 0.6, y_shoulder + 0.14 * P,
                       cx + shoulder_half * 0.6, y_shoulder + 0.22 * P, _shade(bag_colour, 0.8))
        elif view == "front":
            for sign in (-1, 1):
                x = cx + sign * shoulder_half * 0.55
                layer.line((x, y_shoulder), (x, y_shoulder + 0.2 * P), _shade(bag_colour, 0.85),
                           0.02 * P)
        else:
            layer.line((cx - 0.005 * P, y_shoulder), (cx - 0.015 * P, y_shoulder + 0.2 * P),
                       _shade(bag_colour, 0.85), 0.02 * P)
    elif bag == "shoulder":
        if side:
            layer.line((cx, y_shoulder), (cx + 0.03 * P, y_hip - 0.05 * P),
                       _shade(bag_colour, 0.85), 0.018 * P)
            if bag_near:
                layer.rect(cx - 0.05 * P, y_hip - 0.07 * P, cx + 0.07 * P, y_hip + 0.05 * P,
                           bag_colour)
        else:
            bag_x = cx + bag_x_sign * (waist_half + 0.02 * P)
            layer.line((cx - bag_x_sign * shoulder_half * 0.7, y_shoulder),
                       (bag_x, y_hip - 0.04 * P), _shade(bag_colour, 0.85), 0.018 * P)
            layer.rect(bag_x - 0.055 * P, y_hip - 0.07 * P, bag_x + 0.055 * P, y_hip + 0.05 * P,
                       bag_colour)

    # --- near arm in side view
    if side:
        draw_arm((cx, shoulder_y), 0.5 * swing, 1.0, with_bag=(bag == "handbag" and bag_near))

    # --- head, hair, hat
    hx = cx + (0.01 * P if side else 0.0)
    layer.ellipse((hx, y_head), (head_rx * (0.92 if side else 1.0), head_ry), skin)
    if view == "back":
        layer.ellipse((hx, y_head), (head_rx * 1.02, head_ry * 1.02), hair)
        if long_hair:
            layer.rect(hx - head_rx * 1.1, y_head, hx + head_rx * 1.1, y_shoulder + 0.09 * P, hair)
    elif side:
        layer.ellipse((hx, y_head), (head_rx * 1.0, head_ry * 1.02), hair, 0, 100, 300)
        layer.ellipse((hx, y_head - head_ry * 0.2), (head_rx * 0.95, head_ry * 0.85), hair,
                      0, 180, 360)
    else:
        layer.ellipse((hx, y_head - head_ry * 0.15), (head_rx * 1.05, head_ry * 0.9), hair,
                      0, 180, 360)
    if identity["hat"]:
        hat = _colour(identity["hat_colour"])
        layer.ellipse((hx, y_head - head_ry * 0.35), (head_rx * 1.05, head_ry * 0.75), hat,
                      0, 180, 360)
        brim_dx = 0.035 * P if side else 0.0
        layer.rect(hx - head_rx * 1.1 + brim_dx, y_head - head_ry * 0.4,
                   hx + head_rx * 1.1 + brim_dx * 1.5, y_head - head_ry * 0.25, _shade(hat, 0.85))
    return layer.image


# ----------------------------------------------------------------------------------------
# Image formation
# ----------------------------------------------------------------------------------------
def _warp(person, scale, lean, dx, dy, mirror):
    """Place the canonical figure (scale about the feet, lean, translate, mirror): RGBA."""
    feet = np.array([_W / 2.0, _H * 0.975])
    cos, sin = np.cos(lean) * scale, np.sin(lean) * scale
    matrix = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
    matrix[:, 2] = feet + (dx, dy) - matrix[:, :2] @ feet
    if mirror:
        matrix[0] = -matrix[0]
        matrix[0, 2] += _W - 1
    # nearest neighbour keeps the figure's colours pure at its border; the 2x area
    # downsampling afterwards anti-aliases the outline
    return cv2.warpAffine(person, matrix, (_W, _H), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT)


def _composite(base, rgba):
    """Paste the figure (alpha > 127) onto the uint8 RGB canvas; returns the canvas."""
    mask = np.ascontiguousarray(rgba[..., 3] > 127).view(np.uint8)
    return cv2.copyTo(cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB), mask, base)


def _background(camera, rng):
    """uint8 2x canvas: a window of one of the camera's scenes, recoloured for this image."""
    labels, shading, palette = camera.backgrounds[int(rng.integers(len(camera.backgrounds)))]
    y = int(rng.integers(labels.shape[0] - _H + 1))
    x = int(rng.integers(labels.shape[1] - _W + 1))
    # the scene changes from image to image (lighting, things moved, parked or passing)
    palette = palette + rng.normal(0.0, 18.0, palette.shape)
    for index in np.flatnonzero(rng.random(len(palette)) < 0.3):
        palette[index] = _muted(rng.choice(_BACKGROUND_COLOURS))
    lut = np.zeros((1, 256, 3), np.uint8)
    lut[0, :len(palette)] = np.clip(palette, 0, 255)
    lut[0, len(palette):len(palette) + 2] = ((215, 215, 210), (40, 40, 42))  # markings
    image = cv2.multiply(cv2.LUT(labels[y:y + _H, x:x + _W], lut), shading[y:y + _H, x:x + _W],
                         scale=1.0 / 128.0)
    for _ in range(int(rng.integers(0, 3))):  # clutter in shared palette colours
        colour = tuple(0.5 * c + 60.0 for c in COLOURS[rng.choice(SHIRT_COLOURS)])
        x0, y0 = int(rng.integers(-10, _W)), int(rng.integers(0, _H))
        cv2.rectangle(image, (x0, y0), (x0 + int(rng.integers(8, 30)),
                                       y0 + int(rng.integers(8, 50))), colour, -1)
    return image


_YS = np.linspace(-0.5, 0.5, IMAGE_HEIGHT, dtype=np.float32)[:, None, None]
_XS = np.linspace(-0.5, 0.5, IMAGE_WIDTH, dtype=np.float32)[None, :, None]
_NOISE_BANK = []


def _sensor_noise(rng):
    """Unit Gaussian noise (128, 64, 3): a random window of a fixed bank (fast, seeded)."""
    if not _NOISE_BANK:
        _NOISE_BANK.append(np.random.default_rng(7).standard_normal(
            (3 * IMAGE_HEIGHT, 3 * IMAGE_WIDTH, 3), dtype=np.float32))
    bank = _NOISE_BANK[0]
    y = int(rng.integers(bank.shape[0] - IMAGE_HEIGHT + 1))
    x = int(rng.integers(bank.shape[1] - IMAGE_WIDTH + 1))
    return bank[y:y + IMAGE_HEIGHT, x:x + IMAGE_WIDTH]


def _camera_response(image, camera, rng):
    """Optics, camera response and sensor on the 128x64 uint8 image; returns uint8.

    Blur, white balance, exposure, saturation, light gradient, gamma, haze, low
    resolution, noise.
    """
    image = image.astype(np.float32) * np.float32(1.0 / 255.0)
    image = cv2.GaussianBlur(image, (0, 0), camera.blur_sigma / _SS * rng.uniform(0.8, 1.2))
    gains = camera.gains * rng.uniform(0.97, 1.03, 3)
    image *= (gains * camera.exposure * rng.uniform(0.92, 1.08)).astype(np.float32)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    image = grey + (image - grey) * np.float32(camera.saturation * rng.uniform(0.9, 1.1))
    image *= 1.0 + camera.gradient[0] * _XS + camera.gradient[1] * _YS
    image = cv2.pow(np.clip(image, 0.0, 1.0), camera.gamma)
    haze = camera.haze * 255.0 * camera.haze_colour
    image = image * np.float32(255.0 * (1.0 - camera.haze)) + haze
    if camera.low_resolution < 1.0:
        small = (max(8, int(IMAGE_WIDTH * camera.low_resolution)),
                 max(16, int(IMAGE_HEIGHT * camera.low_resolution)))
        image = cv2.resize(cv2.resize(image, small, interpolation=cv2.INTER_AREA),
                           (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_LINEAR)
    image += _sensor_noise(rng) * np.float32(camera.noise)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def render_image(identity, camera, view, phase, rng, extra_people=(), kind="person"):
    """Render one RGB uint8 image (128x64) of `identity` seen by `camera`.

    kind="junk" renders a badly cropped detection (mostly background / a body fragment).
    """
    image = _background(camera, rng)
    for other, other_view in extra_people:  # partial passers-by at the image border
        person = _draw_person(other, other_view, rng.uniform(0, 2 * np.pi))
        side = rng.choice((-1, 1))
        image = _composite(image, _warp(person, camera.scale * rng.uniform(0.9, 1.05), 0.0,
                                side * rng.uniform(0.55, 0.75) * _W, rng.uniform(-5, 5), False))
    person = _draw_person(identity, view, phase)
    if kind == "junk":
        scale = rng.uniform(1.3, 2.2)
        dx, dy = rng.uniform(-0.6, 0.6) * _W, rng.uniform(0.0, 0.8) * _H
    else:
        scale = camera.scale * rng.uniform(0.92, 1.08)
        dx, dy = rng.normal(0.0, 0.05) * _W, rng.normal(0.0, 0.03) * _H
        if rng.random() < 0.1:  # misaligned detection: head or feet cut off
            dy += rng.choice((-1, 1)) * rng.uniform(0.08, 0.15) * _H
    image = _composite(image, _warp(person, scale, rng.normal(0.0, 0.04), dx, dy, view == "left"))
    if kind != "junk" and rng.random() < 0.12:  # occluder: pole, sign or car in front
        colour = tuple(float(c) for c in COLOURS[rng.choice(SHIRT_COLOURS)])
        if rng.random() < 0.5:
            x = int(rng.integers(0, _W))
            cv2.rectangle(image, (x, 0), (x + int(rng.integers(6, 16)), _H), colour, -1)
        else:
            y = int(rng.integers(int(_H * 0.7), int(_H * 0.85)))
            cv2.rectangle(image, (-5, y), (_W + 5, _H), colour, -1)
    image = cv2.resize(image, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_AREA)
    return _camera_response(image, camera, rng)


# ----------------------------------------------------------------------------------------
# Dataset plan and writing
# ----------------------------------------------------------------------------------------
def _validate_size_kwargs(size_kwargs):
    """Complete the size arguments with their defaults and check them (ValueError)."""
    unknown = set(size_kwargs) - set(DEFAULT_SIZE_KWARGS)
    if unknown:
        raise ValueError(f"Unknown synthetic dataset size argument(s) {sorted(unknown)}; "
                         f"valid ones are {sorted(DEFAULT_SIZE_KWARGS)}.")
    config = dict(DEFAULT_SIZE_KWARGS, **size_kwargs)
    for name, value in config.items():
        try:
            config[name] = [int(v) for v in value] if name.endswith("_per_identity") or \
                name.endswith("_per_camera") else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an integer (or a (min, max) pair of integers for "
                             f"*_per_identity / *_per_camera), got {value!r}.") from None
    for name in ("train_images_per_identity", "gallery_images_per_camera"):
        if len(config[name]) != 2 or not 1 <= config[name][0] <= config[name][1]:
            raise ValueError(f"{name} must be a (min, max) pair with 1 <= min <= max, got "
                             f"{size_kwargs.get(name)!r}.")
    if config["train_images_per_identity"][0] < 2:
        raise ValueError("train_images_per_identity needs a minimum of at least 2 (every train "
                         "identity is seen by 2 or more cameras).")
    if not 2 <= config["num_cameras"] <= 9:
        raise ValueError("num_cameras must be in 2..9 (Market names hold one camera digit), "
                         f"got {config['num_cameras']}.")
    minimum = dict(num_train_identities=1, num_test_identities=1, max_query_cameras=1,
                   family_size=1, num_distractors=0, num_junk=0)
    for name, low in minimum.items():
        if config[name] < low:
            raise ValueError(f"{name} must be >= {low}, got {config[name]}.")
    if config["num_train_identities"] + config["num_test_identities"] > 9999:
        raise ValueError("At most 9999 identities fit the 4-digit Market identity field.")
    return config


def _visit_cameras(rng, num_cameras, low):
    count = int(rng.integers(low, num_cameras + 1))
    return sorted(rng.choice(num_cameras, size=count, replace=False).tolist())


def plan_dataset(seed=0, **size_kwargs):
    """List of image jobs (split, identity id, camera, view, phase, image seed) and extras."""
    config = _validate_size_kwargs(size_kwargs)
    rng = np.random.default_rng([seed, 20240501])
    num_cameras = config["num_cameras"]
    cameras = _make_cameras(num_cameras, rng)
    num_train, num_test = config["num_train_identities"], config["num_test_identities"]
    identities = sample_identities(num_train + num_test, rng, config["family_size"])
    # Families are interleaved between train and test so both see every kind of confusion.
    pids = rng.permutation(np.arange(1, num_train + num_test + 1))
    order = rng.permutation(num_train + num_test)
    train_idx, test_idx = order[:num_train], order[num_train:]
    frame = np.zeros(num_cameras, np.int64)
    jobs = []

    def visit(identity_index, camera, count):
        """A track past one camera: constant view, consecutive frames, advancing phase."""
        camera_rng = cameras[camera]
        view = VIEWS[rng.choice(4, p=camera_rng.view_probabilities)]
        phase = rng.uniform(0, 2 * np.pi)
        frame[camera] += int(rng.integers(20, 400))
        out = []
        for _ in range(count):
            frame[camera] += int(rng.integers(3, 25))
            phase += rng.uniform(0.6, 2.0)
            if rng.random() < 0.15:  # the person turns within the track
                view = VIEWS[rng.choice(4, p=camera_rng.view_probabilities)]
            out.append(dict(identity=identity_index, camera=camera, view=view,
                            phase=float(phase), frame=int(frame[camera])))
        return out

    for index in train_idx:
        total = int(rng.integers(config["train_images_per_identity"][0],
                                 config["train_images_per_identity"][1] + 1))
        cams = _visit_cameras(rng, num_cameras, min(num_cameras, 2 if total < 6 else 3))
        cams = cams[:total]
        counts = np.ones(len(cams), np.int64) + rng.multinomial(total - len(cams),
                                                              np.full(len(cams), 1 / len(cams)))
        for camera, count in zip(cams, counts):
            for job in visit(index, camera, int(count)):
                jobs.append(dict(job, split="bounding_box_train", pid=int(pids[index])))
    for index in test_idx:
        cams = _visit_cameras(rng, num_cameras, 2)
        query_cams = set(rng.choice(cams, size=min(config["max_query_cameras"], len(cams)),
                                    replace=False).tolist())
        low, high = config["gallery_images_per_camera"]
        for camera in cams:
            count = int(rng.integers(low, high + 1)) + (camera in query_cams)
            track = visit(index, camera, count)
            query_position = int(rng.integers(count)) if camera in query_cams else -1
            for position, job in enumerate(track):
                split = "query" if position == query_position else "bounding_box_test"
                jobs.append(dict(job, split=split, pid=int(pids[index])))
    extras = sample_identities(config["num_distractors"] + config["num_junk"], rng,
                               config["family_size"])
    for k in range(config["num_distractors"] + config["num_junk"]):
        camera = int(rng.integers(num_cameras))
        job = visit(num_train + num_test + k, camera, 1)[0]
        junk = k >= config["num_distractors"]
        jobs.append(dict(job, split="bounding_box_test", pid=-1 if junk else 0,
                         kind="junk" if junk else "person"))
    for job in jobs:
        job["seed"] = int(rng.integers(2 ** 63))
    return config, cameras, identities + extras, jobs


def _file_name(job, sequence_of_frame):
    pid = "-1" if job["pid"] == -1 else f"{job['pid']:04d}"
    return (f"{pid}_c{job['camera'] + 1}s{sequence_of_frame(job['frame'])}_"
            f"{job['frame'] % 1000000:06d}_{job.get('box', 0):02d}.jpg")


def _render_job(job, cameras, identities):
    rng = np.random.default_rng(job["seed"])
    camera = cameras[job["camera"]]
    extra = []
    if rng.random() < 0.15:
        other = identities[int(rng.integers(len(identities)))]
        extra.append((other, VIEWS[int(rng.integers(4))]))
    return render_image(identities[job["identity"]], camera, job["view"], job["phase"], rng,
                        extra, job.get("kind", "person"))


def _write_images(tasks, cameras, identities):
    """Render and write (job, path) pairs as JPEGs with the camera's quality."""
    for job, path in tasks:
        image = _render_job(job, cameras, identities)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, cameras[job["camera"]].jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {path}.")
        with open(path, "wb") as file:
            file.write(data.tobytes())


def generate_dataset(folder_path, seed=0, **size_kwargs):
    """Write the dataset into `folder_path` (created; must not exist). Returns metadata.

    One process suffices: an image costs about 1.5 ms of CPU, so the default ~3,700
    images take a few seconds.
    """
    start = time.perf_counter()
    config, cameras, identities, jobs = plan_dataset(seed, **size_kwargs)
    os.makedirs(folder_path)
    for name in SUBFOLDER_NAMES:
        os.makedirs(os.path.join(folder_path, name))
    max_frame = max(job["frame"] for job in jobs) + 1

    def sequence_of_frame(frame):  # Market's sY: video segment, 1..6
        return 1 + min(5, frame * 6 // max_frame)

    used, paths = set(), []
    for job in jobs:
        name = _file_name(job, sequence_of_frame)
        while (job["split"], name) in used:  # two boxes in one frame: bump the box index
            job["box"] = job.get("box", 0) + 1
            name = _file_name(job, sequence_of_frame)
        used.add((job["split"], name))
        paths.append(os.path.join(folder_path, job["split"], name))

    _write_images(zip(jobs, paths), cameras, identities)

    counts = {name: sum(job["split"] == name for job in jobs) for name in SUBFOLDER_NAMES}
    metadata = dict(generator="datasets.synthetic", version=GENERATOR_VERSION, seed=int(seed),
                    size_kwargs=config, image_counts=counts,
                    num_identities=dict(
                        train=len({j["pid"] for j in jobs if j["split"] == "bounding_box_train"}),
                        test=len({j["pid"] for j in jobs if j["split"] == "query"})),
                    seconds=round(time.perf_counter() - start, 2))
    with open(os.path.join(folder_path, METADATA_FILE_NAME), "w") as file:
        json.dump(metadata, file, indent=2)
    return metadata


def _read_metadata(folder_path):
    try:
        with open(os.path.join(folder_path, METADATA_FILE_NAME)) as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def _is_complete(folder_path, seed, config):
    metadata = _read_metadata(folder_path)
    return (metadata is not None and metadata.get("generator") == "datasets.synthetic"
            and metadata.get("version") == GENERATOR_VERSION and metadata.get("seed") == seed
            and metadata.get("size_kwargs") == config
            and all(os.path.isdir(os.path.join(folder_path, n)) for n in SUBFOLDER_NAMES))


def _looks_generated(folder_path):
    """True if the folder holds nothing but what this generator writes (safe to replace)."""
    for entry in os.listdir(folder_path):
        path = os.path.join(folder_path, entry)
        if entry == METADATA_FILE_NAME:
            continue
        if entry not in SUBFOLDER_NAMES or not os.path.isdir(path):
            return False
        if any(not name.endswith(".jpg") for name in os.listdir(path)):
            return False
    return True


def _remove_stale_temporaries(root_folder_path):
    """Delete temporary folders of generations whose process no longer runs."""
    for entry in os.listdir(root_folder_path):
        if not entry.startswith(_TEMP_PREFIX):
            continue
        try:
            pid = int(entry[len(_TEMP_PREFIX):].split("-")[0])
            os.kill(pid, 0)
            alive = True
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(os.path.join(root_folder_path, entry), ignore_errors=True)


def ensure_synthetic_dataset(root_folder_path, seed=0, **size_kwargs):
    """Return `<root>/Synthetic-ReID`, generating it first if absent, incomplete or different.

    A dataset is complete only once its metadata file (generator version, seed, sizes) is in
    place; generation writes into a temporary sibling folder renamed at the end.
    """
    config = _validate_size_kwargs(size_kwargs)
    root_folder_path = os.path.abspath(os.path.expanduser(root_folder_path))
    os.makedirs(root_folder_path, exist_ok=True)
    folder_path = os.path.join(root_folder_path, FOLDER_NAME)
    if _is_complete(folder_path, seed, config):
        return folder_path
    if os.path.exists(folder_path) and not _looks_generated(folder_path):
        raise ValueError(f"{folder_path} exists but was not written by the synthetic generator "
                         "(it holds other files); move it away or choose another root folder.")
    _remove_stale_temporaries(root_folder_path)
    temporary = os.path.join(root_folder_path,
                             f"{_TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        metadata = generate_dataset(temporary, seed=seed, **size_kwargs)
        if os.path.exists(folder_path):  # an outdated or incomplete dataset: replace it
            if _is_complete(folder_path, seed, config):  # another process just finished
                return folder_path
            trash = temporary + "-old"
            os.rename(folder_path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(temporary, folder_path)
        except OSError:
            if not _is_complete(folder_path, seed, config):
                raise
        else:
            print(f"Generated the synthetic dataset at {folder_path} "
                  f"({sum(metadata['image_counts'].values())} images, "
                  f"{metadata['seconds']:.1f} s).")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder_path
