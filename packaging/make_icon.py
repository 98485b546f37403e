"""Draws Folio's app icon with Pillow and writes every size macOS asks for, plus Folio.icns.

Run `python packaging/make_icon.py` after changing the drawing; the outputs are committed so a
build needs neither this script nor a Mac's `iconutil`. The picture: a page of a document with
a chat bubble over it, on a blue rounded square laid out on Apple's 1024-point icon grid.
"""

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = ROOT / "resources"
ICONSET = RESOURCES / "Folio.iconset"
ICNS = RESOURCES / "Folio.icns"
PNG_256 = RESOURCES / "icons" / "folio-256.png"

# (file name in the .iconset, pixel size): the ten entries `iconutil` expects.
ICONSET_ENTRIES = [
    (f"icon_{pt}x{pt}{'@2x' if scale == 2 else ''}.png", pt * scale)
    for pt in (16, 32, 128, 256, 512)
    for scale in (1, 2)
]

MASTER = 1024
SS = 2  # drawn at twice the size, then downsampled: cheap anti-aliasing for every edge


def _gradient(size, top, bottom):
    """A vertical gradient image from colour `top` to colour `bottom`."""
    column = Image.new("RGBA", (1, size))
    for y in range(size):
        t = y / (size - 1)
        column.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)) + (255,))
    return column.resize((size, size))


def draw_master() -> Image.Image:
    s = MASTER * SS
    u = s / 1024  # one point of the 1024 grid, in pixels
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))

    # Apple's grid: an 824-point body centred in 1024, corner radius about 185.
    body = [100 * u, 100 * u, 924 * u, 924 * u]
    radius = 185 * u
    shadow = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    ImageDraw.Draw(shadow).rounded_rectangle([body[0], body[1] + 14 * u, body[2], body[3] + 14 * u],
                                             radius, fill=(0, 0, 0, 90))
    img.alpha_composite(shadow.filter(ImageFilter.GaussianBlur(18 * u)))
    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).rounded_rectangle(body, radius, fill=255)
    img.paste(_gradient(s, (74, 128, 240), (30, 58, 138)), (0, 0), mask)

    d = ImageDraw.Draw(img)
    # The page, with its top-right corner folded over.
    left, top, right, bottom, fold = 290 * u, 210 * u, 700 * u, 800 * u, 120 * u
    d.polygon([(left, top), (right - fold, top), (right, top + fold), (right, bottom), (left, bottom)],
              fill=(255, 255, 255, 255))
    d.polygon([(right - fold, top), (right - fold, top + fold), (right, top + fold)], fill=(200, 214, 242, 255))
    for i, width in enumerate((250, 330, 300, 330, 180, 260)):
        y = 360 * u + i * 62 * u
        d.rounded_rectangle([left + 60 * u, y, left + 60 * u + width * u, y + 26 * u], 13 * u,
                            fill=(176, 190, 214, 255))

    # The chat bubble, overlapping the page's lower right.
    bubble = [500 * u, 560 * u, 820 * u, 780 * u]
    d.polygon([(560 * u, 770 * u), (540 * u, 850 * u), (640 * u, 775 * u)], fill=(245, 158, 11, 255))
    d.rounded_rectangle(bubble, 70 * u, fill=(245, 158, 11, 255))
    for x in (590, 660, 730):
        d.ellipse([(x - 22) * u, 648 * u, (x + 22) * u, 692 * u], fill=(255, 255, 255, 255))
    return img.resize((MASTER, MASTER), Image.LANCZOS)


def write_all(master: Image.Image | None = None) -> list[Path]:
    master = master or draw_master()
    ICONSET.mkdir(parents=True, exist_ok=True)
    PNG_256.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for name, px in ICONSET_ENTRIES:
        path = ICONSET / name
        master.resize((px, px), Image.LANCZOS).save(path, optimize=True)
        written.append(path)
    master.resize((256, 256), Image.LANCZOS).save(PNG_256, optimize=True)
    sizes = sorted({px for _, px in ICONSET_ENTRIES})
    master.save(ICNS, append_images=[master.resize((px, px), Image.LANCZOS) for px in sizes])
    return written + [PNG_256, ICNS]


if __name__ == "__main__":
    for path in write_all():
        print(path.relative_to(ROOT))
    sys.exit(0)
