"""Reference cases for the preprocessing a blob's metadata can ask for beyond the
ImageNet default (`make_resize_cases.py` covers that one): the nearest and bicubic
filters, a resize of both sides ('squash'), other crop fractions, and luminance
(`convert("L")`), written to tests/resample/ and checked by
soft-host/tests/resample_pillow.rs.

Run once from the repository root (the output is committed; rerunning rewrites it):

    python3 scripts/make_resample_cases.py

Made with Python 3.11, Pillow 13.0.0 and numpy. Only Pillow is needed: on a PIL image,
torchvision's `Resize(size, interpolation)` is `Image.resize(size, filter)` (no
`reducing_gap`) at the size `_compute_resized_output_size` gives, and `CenterCrop` is a
crop at `int(round((resized - crop) / 2.0))`; both are written out below. timm's eval
transform resizes to `floor(crop / crop_pct)`, the shorter side for `crop_mode 'center'`,
both sides for `'squash'`.

The sources are tests/resize/'s photo-like PNGs, and one 8x8 digit of the demo's test
split at 16 grey levels per 255 (`round(v * 255 / 16)`), upsampled to 64x64 by nearest as
the demo model was trained.

What the directory holds: `<case>.png`, the RGB (or, for luminance, L) crop, and
`cases.json` with each case's source, filter, resize mode, crop fraction, crop, resized
size and offsets.
"""

import json
import math
import pathlib

import numpy as np
import PIL
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ROOT / "tests" / "resize"
OUT = ROOT / "tests" / "resample"
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def resized_size(width, height, side, mode):
    """torchvision's `_compute_resized_output_size` for an int size ('center'), or
    both sides ('squash')."""
    if mode == "both":
        return side, side
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = side, int(side * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def case(name, source, filt, mode, crop_pct, crop, grey=False):
    image = Image.open(OUT / source if source.startswith("digit") else SOURCES / source)
    image = image.convert("L" if grey else "RGB")
    side = math.floor(crop / crop_pct)
    width, height = resized_size(*image.size, side, mode)
    resized = image.resize((width, height), FILTERS[filt])
    left = int(round((width - crop) / 2.0))
    top = int(round((height - crop) / 2.0))
    out = resized.crop((left, top, left + crop, top + crop))
    pixels = f"{name}.png"
    out.save(OUT / pixels)
    return {
        "name": name,
        "source": source,
        "size": list(image.size),
        "filter": filt,
        "mode": mode,
        "crop_pct": crop_pct,
        "crop": crop,
        "resize": side,
        "resized": [width, height],
        "offset": [left, top],
        "grey": grey,
        "pixels": pixels,
    }


def digit():
    """The first test digit, 0..16, as an 8x8 L PNG at round(v * 255 / 16)."""
    raw = np.load(ROOT / "models" / "digits" / "test_images.npy")[0]
    levels = np.round(raw * 255.0 / 16.0).astype(np.uint8)
    Image.fromarray(levels, "L").save(OUT / "digit8.png")
    return "digit8.png"


def main():
    OUT.mkdir(exist_ok=True)
    cases = [case("digit.nearest64", digit(), "nearest", "center", 1.0, 64, grey=True)]
    for source in ["landscape.png", "portrait.png", "tall.png", "tiny.png", "palette.png"]:
        stem = source.removesuffix(".png")
        for filt in ["nearest", "bicubic"]:
            cases.append(case(f"{stem}.{filt}.center", source, filt, "center", 0.875, 32))
            cases.append(case(f"{stem}.{filt}.squash", source, filt, "both", 0.9, 32))
    cases.append(case("landscape.bilinear.squash", "landscape.png", "bilinear", "both", 1.0, 40))
    cases.append(case("portrait.bicubic.pct95", "portrait.png", "bicubic", "center", 0.95, 96))
    cases.append(case("landscape.bicubic.grey", "landscape.png", "bicubic", "center", 0.9, 32, True))
    cases.append(case("tiny.nearest.up", "tiny.png", "nearest", "center", 1.0, 45))
    manifest = {
        "made_by": "scripts/make_resample_cases.py",
        "versions": {"pillow": PIL.__version__, "numpy": np.__version__},
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
