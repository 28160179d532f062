"""Rows of framed image tiles with text, composed pixel-exactly and written as a PNG.

The tiles are pasted into one uint8 canvas and the canvas is shown 1:1 (one canvas pixel = one
PNG pixel), so borders keep their exact colours; matplotlib only draws the text. It is used
through its object API with the Agg canvas, which leaves pyplot's global backend alone.
"""
import functools
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from utils.files import atomic_path

DPI = 100
MARGIN = 12
TILE_GAP = 6
ROW_GAP = 14
HEADER_FONT_SIZE = 10
TITLE_FONT_SIZE = 9
CAPTION_FONT_SIZE = 8
BACKGROUND = 255


def _line_height(font_size):
    return int(round(font_size * DPI / 72 * 1.3))


@functools.lru_cache(maxsize=1)
def _renderer():
    from matplotlib.backends.backend_agg import RendererAgg
    return RendererAgg(1, 1, DPI)


def text_width(text, font_size, weight="normal"):
    """Width in pixels of ``text`` as drawn in the PNG."""
    from matplotlib.font_manager import FontProperties
    width, _, _ = _renderer().get_text_width_height_descent(
        text, FontProperties(size=font_size, weight=weight), ismath=False)
    return width


@dataclass
class Tile:
    """One image; ``border`` is an RGB colour (or None), ``gap_before`` extra space to its left."""
    image: np.ndarray
    caption: str = ""
    border: tuple = None
    border_width: int = 5
    gap_before: int = 0


@dataclass
class Row:
    title: str
    tiles: list = field(default_factory=list)


def read_rgb(path, height):
    """uint8 RGB image resized to ``height`` rows, its aspect ratio kept."""
    path = os.fspath(path)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        raise ValueError(f"could not decode image file {path!r} (corrupt or not an image)")
    width = max(1, int(round(image.shape[1] * height / image.shape[0])))
    interpolation = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_LINEAR
    image = cv2.resize(image, (width, height), interpolation=interpolation)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_images(paths, height, what="image"):
    """``{path: image}`` for the distinct paths; every missing file is named in one error."""
    images, missing = {}, []
    for path in dict.fromkeys(paths):
        try:
            images[path] = read_rgb(path, height)
        except FileNotFoundError:
            missing.append(path)
    if missing:
        shown = ", ".join(repr(str(path)) for path in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{len(missing)} {what} file(s) not found: {shown}{more}. Relative paths are read "
            f"from the current directory ({os.getcwd()}); if the dataset moved since the "
            f"features were saved, put it back at that path (or link it there).")
    return images


def _wrap(text, width_pixels, font_size, weight="normal"):
    """Greedy word wrap by measured width (a word longer than the line gets a line alone)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and text_width(candidate, font_size, weight) > width_pixels:
                lines.append(line)
                candidate = word
            line = candidate
        lines.append(line)
    return lines


def render(rows, output_path, header=""):
    """Write the rows of tiles under ``header`` as a PNG at ``output_path``; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def tile_size(tile):
        border = tile.border_width if tile.border is not None else 0
        height, width = tile.image.shape[:2]
        return height + 2 * border, width + 2 * border, border

    row_widths = [sum(tile_size(t)[1] + TILE_GAP + t.gap_before for t in row.tiles) - TILE_GAP
                  for row in rows]
    width = max([640] + row_widths) + 2 * MARGIN
    line_width = width - 2 * MARGIN
    title_step, caption_step = _line_height(TITLE_FONT_SIZE), _line_height(CAPTION_FONT_SIZE)
    layout, texts = [], []
    y = MARGIN
    # the header's first paragraph (what the picture shows) in bold, the explanations plain
    for index, paragraph in enumerate(header.split("\n") if header else []):
        weight = "bold" if index == 0 else "normal"
        for line in _wrap(paragraph, line_width, HEADER_FONT_SIZE, weight):
            texts.append((MARGIN, y, line, HEADER_FONT_SIZE, "left", weight))
            y += _line_height(HEADER_FONT_SIZE)
    y += 8 if header else 0
    for row in rows:
        for line in _wrap(row.title, line_width, TITLE_FONT_SIZE, "bold") if row.title else []:
            texts.append((MARGIN, y, line, TITLE_FONT_SIZE, "left", "bold"))
            y += title_step
        y += 2
        x = MARGIN
        band = max(tile_size(t)[0] for t in row.tiles) if row.tiles else 0
        caption_lines = max([len(t.caption.split("\n")) for t in row.tiles if t.caption] or [0])
        for tile in row.tiles:
            x += tile.gap_before
            _, tile_width, border = tile_size(tile)
            layout.append((tile, x, y, border))
            for index, line in enumerate(tile.caption.split("\n") if tile.caption else []):
                texts.append((x + tile_width / 2, y + band + 2 + index * caption_step, line,
                              CAPTION_FONT_SIZE, "center", None))
            x += tile_width + TILE_GAP
        y += band + 2 + caption_lines * caption_step + ROW_GAP
    height = y - ROW_GAP + MARGIN

    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    for tile, x, y, border in layout:
        image_height, image_width = tile.image.shape[:2]
        if border:
            canvas[y:y + image_height + 2 * border, x:x + image_width + 2 * border] = tile.border
        canvas[y + border:y + border + image_height, x + border:x + border + image_width] = \
            tile.image

    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(canvas, interpolation="nearest")
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)
    axes.axis("off")
    for x, y, text, size, align, weight in texts:
        axes.text(x, y, text, fontsize=size, ha=align, va="top", fontweight=weight or "normal",
                  color="black", parse_math=False)
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    with atomic_path(output_path) as temporary_path:  # a reader never sees half a picture
        figure.savefig(temporary_path, dpi=DPI, facecolor="white", format="png")
    return output_path
