"""The demo world's vocabulary: scenes of coloured shapes, their pictures, captions and questions.

A scene is 1–3 objects (colour × shape × size), each in its own quadrant of the picture, so
every caption is true and every question has exactly one answer. The vocabulary is small on
purpose: a tiny CLIP and a tiny VLM trained in minutes on two CPU cores can learn it, which
makes curation and training results on the demo meaningful rather than noise.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
BACKGROUNDS = ((245, 245, 240), (200, 200, 205), (60, 60, 70))


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    size: str
    position: str

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape} at the {self.position}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: int = 0

    def caption(self) -> str:
        parts = [o.phrase() for o in self.objects]
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]


def random_scene(rng: np.random.Generator, max_objects: int = 3) -> Scene:
    n = int(rng.integers(1, max_objects + 1))
    positions = sorted(rng.choice(len(POSITIONS), size=n, replace=False))
    objs = tuple(
        Obj(
            color=list(COLORS)[int(rng.integers(len(COLORS)))],
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            size=SIZES[int(rng.integers(len(SIZES)))],
            position=POSITIONS[p],
        )
        for p in positions
    )
    return Scene(objs, background=int(rng.integers(len(BACKGROUNDS))))


def render(scene: Scene, size: int = 64) -> bytes:
    """PNG bytes of the scene. PNG is lossless and byte-stable for a given Pillow version."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    half = size / 2
    for o in scene.objects:
        col = POSITIONS.index(o.position) % 2
        row = POSITIONS.index(o.position) // 2
        cx, cy = half * col + half / 2, half * row + half / 2
        r = half * (0.40 if o.size == "large" else 0.22)
        _draw_shape(draw, o.shape, cx, cy, r, COLORS[o.color])
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape}")


# Sentences in MMC4 documents that describe an image (a few phrasings, so text is not uniform).
DESCRIBE_TEMPLATES = (
    "The photo shows {caption}.",
    "Here you can see {caption}.",
    "In this picture there is {caption}.",
    "Look closely and you will find {caption}.",
)


def describe_sentence(scene: Scene, rng: np.random.Generator) -> str:
    template = DESCRIBE_TEMPLATES[int(rng.integers(len(DESCRIBE_TEMPLATES)))]
    return template.format(caption=scene.caption())


def questions(scene: Scene) -> list[tuple[str, str, str]]:
    """All (question type, question, answer) triples with a unique answer for this scene."""
    return [q[:3] for q in object_questions(scene)]


def object_questions(scene: Scene) -> list[tuple[str, str, str, int]]:
    """`questions` with the index of the object each one is about (-1: the whole scene)."""
    out = [("count", "How many shapes are in the image?", str(len(scene.objects)), -1)]
    shape_counts = {s: sum(o.shape == s for o in scene.objects) for s in SHAPES}
    for i, o in enumerate(scene.objects):
        if shape_counts[o.shape] == 1:
            out.append(("color", f"What color is the {o.shape}?", o.color, i))
        out.append(("shape", f"What shape is at the {o.position}?", o.shape, i))
        same = [p for p in scene.objects if (p.color, p.shape) == (o.color, o.shape)]
        if len(same) == 1:
            out.append(("position", f"Where is the {o.color} {o.shape}?", o.position, i))
    return out
