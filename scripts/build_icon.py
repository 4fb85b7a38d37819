"""Draw the plugin's icon, ``napari_medseg/icon.png`` (256 x 256 RGBA).

An axial brain slice on a dark rounded square, coloured with the default model's tissue
classes (grey matter orange, white matter cream, CSF blue), the way the panel shows a
segmentation. Drawn at 4x and reduced with a Lanczos filter for smooth edges.

    python scripts/build_icon.py
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
SCALE = 4
OUTPUT = Path(__file__).resolve().parents[1] / "napari_medseg" / "icon.png"
BACKGROUND = (27, 40, 56, 255)
GREY_MATTER = (240, 160, 60, 255)  # the bundle's class colours (config.json)
WHITE_MATTER = (240, 240, 200, 255)
CSF = (60, 140, 240, 255)


def _box(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
    """An ellipse's bounding box in the drawing's pixels, from units of the 256 grid."""
    return ((cx - rx) * SCALE, (cy - ry) * SCALE, (cx + rx) * SCALE, (cy + ry) * SCALE)


def draw() -> Image.Image:
    """The icon as a 256 x 256 RGBA image."""
    big = SIZE * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    pen.rounded_rectangle((0, 0, big - 1, big - 1), radius=48 * SCALE, fill=BACKGROUND)
    pen.ellipse(_box(128, 132, 84, 100), fill=GREY_MATTER)  # cortex
    for side in (-1, 1):  # the two hemispheres' white matter, with gyri as notches
        pen.ellipse(_box(128 + side * 36, 132, 36, 78), fill=WHITE_MATTER)
        for dy in (-54, -27, 0, 27, 54):  # sulci cut into the white matter's outer edge
            edge = 36 + 36 * math.sqrt(1 - (dy / 78) ** 2)
            pen.ellipse(_box(128 + side * (edge - 4), 132 + dy, 9, 6), fill=GREY_MATTER)
        pen.ellipse(_box(128 + side * 14, 128, 9, 30), fill=CSF)  # lateral ventricles
    pen.rectangle(((128 - 2) * SCALE, 34 * SCALE, (128 + 2) * SCALE, 230 * SCALE), fill=CSF)  # midline fissure
    return image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def main() -> None:
    buffer = io.BytesIO()
    draw().save(buffer, format="PNG", optimize=True)
    partial = OUTPUT.with_suffix(".png.part")
    partial.write_bytes(buffer.getvalue())
    partial.replace(OUTPUT)
    print(f"wrote {OUTPUT.name} ({len(buffer.getvalue())} bytes)")


if __name__ == "__main__":
    main()
