"""Reference cases for `soft_host::image_input`: torchvision's ImageNet eval transform on
small photo-like images, written to tests/resize/ and checked by
soft-host/tests/resize_torchvision.rs.

Run once from the repository root (the output is committed; rerunning rewrites it):

    python3 scripts/make_resize_cases.py

Made with Python 3.11, torch 2.15.0, torchvision 0.29.2, Pillow 13.0.0 (libjpeg-turbo,
JPEG lib version 6.2) and numpy 2.4.6. The pixels depend on the Pillow version: Pillow
13 resamples very tall images vertically first (python-pillow/Pillow#9549), earlier
versions always horizontally first, which moves some pixels of the `tall` case by a
level. A different libjpeg can also decode the JPEG differently, which is why its
decoded pixels are stored too.

A wider, throwaway check of the same code on random sizes and crops:

    python3 scripts/make_resize_cases.py --sweep /tmp/resize-sweep --count 400
    SOFT_RESIZE_CASES=/tmp/resize-sweep cargo test --release -p soft-host --test resize_torchvision

There is no photo collection to draw on, so the committed sources are synthesised
deterministically to look like photos where it matters to a resampler: smooth sky and
ground gradients, soft hills, a sun disc, hard-edged buildings with windows, thin dark
strokes like text or branches, a slight blur like a lens, and sensor-like noise.

What a case directory holds:

- `<name>.png` / `photo.jpg`: the sources. `photo.decoded.png` is Pillow's decoding of
  `photo.jpg` (converted to RGB), so the resampler is compared on exactly the pixels
  torchvision saw, whatever the Rust decoder makes of the JPEG.
- `<name>.crop<C>.png`: torchvision's output of `Resize(int(C * 256 / 224),
  BILINEAR, antialias=True)` then `CenterCrop(C)` on `Image.open(src).convert("RGB")`
  (what torchvision's `ImageFolder` loader does), as an RGB PNG. On a PIL image that
  `Resize` is Pillow's `Image.resize` (no `reducing_gap`), which rounds to uint8 after
  each of its two passes, so this PNG is torchvision's output exactly.
- `<name>.crop32.npy`: for the 32 crops, the whole chain including `ToTensor()` and
  `Normalize(IMAGENET_MEAN, IMAGENET_STD)`, float32 `[3, 32, 32]`.
- `normalize.npy`: `ToTensor()` then `Normalize` of every uint8 level, float32
  `[3, 256]` (row = channel). Both act on one value at a time, so this table and the
  crop PNGs give torchvision's float output for every case (checked here on every case
  before writing); 224 and 96 crops as float32 would take 600 and 110 KB each.
- `cases.json`: the cases, with the resize side, resized size and crop offsets.
"""

import argparse
import json
import pathlib

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image, ImageDraw, ImageFilter
from torchvision import transforms as T

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def scene(width, height, seed, noise=1.0):
    """A photo-like RGB image: sky, hills, sun, buildings, strokes, blur, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    sky = np.stack([70 + 90 * v, 120 + 80 * v, 200 + 40 * v - 20 * u], axis=-1)
    horizon = 0.55 + 0.08 * np.sin(2 * np.pi * (u * 1.3 + rng.random())) + 0.04 * np.sin(
        2 * np.pi * (u * 4.1 + rng.random())
    )
    ground = np.stack([60 + 60 * u, 110 - 40 * v, 40 + 20 * u * v], axis=-1)
    # A soft edge between sky and hills, a few pixels wide.
    t = np.clip((v - horizon) * height / 3 + 0.5, 0, 1)[..., None]
    img = sky * (1 - t) + ground * t
    # Sun: an antialiased disc with a glow.
    cx, cy, r = width * (0.2 + 0.6 * rng.random()), height * 0.2, 0.08 * min(width, height) + 1
    d = np.hypot(x - cx, y - cy)
    img += np.clip(r + 0.5 - d, 0, 1)[..., None] * (np.array([255, 240, 180]) - img)
    img += (30 * np.exp(-((d / (3 * r)) ** 2)))[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    # Buildings with hard edges and windows.
    for _ in range(3):
        w = int(width * (0.08 + 0.1 * rng.random())) + 1
        h = int(height * (0.15 + 0.25 * rng.random())) + 1
        left = int(rng.random() * max(width - w, 1))
        top = int(height * 0.6) - h // 2
        shade = tuple(int(c) for c in rng.integers(40, 200, 3))
        draw.rectangle([left, top, left + w, top + h], fill=shade)
        for wy in range(top + 2, top + h - 2, 5):
            for wx in range(left + 2, left + w - 2, 4):
                if rng.random() < 0.6:
                    draw.rectangle([wx, wy, wx + 1, wy + 2], fill=(250, 230, 140))
    # Text-like strokes: short dark segments in rows, as on a sign.
    sx, sy = int(width * 0.1), int(height * 0.8)
    for row in range(2):
        px = sx
        while px < width * 0.9:
            kind = rng.integers(0, 3)
            if kind == 0:
                draw.line([px, sy + row * 9, px, sy + row * 9 + 6], fill=(20, 20, 25), width=1)
            elif kind == 1:
                draw.line([px, sy + row * 9 + 6, px + 3, sy + row * 9], fill=(20, 20, 25), width=1)
            else:
                draw.arc([px, sy + row * 9, px + 4, sy + row * 9 + 6], 0, 360, fill=(20, 20, 25))
            px += int(rng.integers(3, 7))
    # Branches: thin lines at random angles.
    for _ in range(6):
        x0, y0 = rng.random() * width, rng.random() * height
        a = rng.random() * np.pi
        length = 0.2 * min(width, height)
        draw.line([x0, y0, x0 + length * np.cos(a), y0 + length * np.sin(a)], fill=(50, 35, 25))
    pil = pil.filter(ImageFilter.GaussianBlur(0.6))
    arr = np.asarray(pil).astype(np.float64) + noise * rng.standard_normal((height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


def eval_resize_crop(crop):
    """The resize and crop of the chain `soft_host::image_input::load` implements."""
    return T.Compose(
        [
            T.Resize(int(crop * 256 / 224), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(crop),
        ]
    )


to_float = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])


def normalize_table(out):
    """`ToTensor` + `Normalize` of every level, written to normalize.npy."""
    levels = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2), "RGB")
    table = to_float(levels).numpy()[:, 0, :].astype(np.float32)
    assert table.shape == (3, 256)
    np.save(out / "normalize.npy", table)
    return table


def make_case(out, table, name, file, crop, tensor, fast=False):
    """torchvision's output for one source and crop, written next to the source."""
    with Image.open(out / file) as opened:
        image = opened.convert("RGB")
    w, h = image.size
    side = int(crop * 256 / 224)
    resized = T.Resize(side, interpolation=T.InterpolationMode.BILINEAR, antialias=True)(image)
    cropped = eval_resize_crop(crop)(image)
    assert cropped.size == (crop, crop) and cropped.mode == "RGB"
    rw, rh = resized.size
    top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
    assert np.array_equal(np.asarray(cropped), np.asarray(resized)[top : top + crop, left : left + crop])
    floats = to_float(cropped).numpy()
    assert floats.dtype == np.float32
    pixels = np.asarray(cropped).transpose(2, 0, 1)
    assert np.array_equal(floats, table[np.arange(3)[:, None, None], pixels])
    stem = f"{name}.crop{crop}"
    cropped.save(out / f"{stem}.png", **({"compress_level": 1} if fast else {"optimize": True}))
    case = {
        "name": name,
        "source": file,
        "size": [w, h],
        "crop": crop,
        "resize": side,
        "resized": [rw, rh],
        "offset": [left, top],
        # Pillow 13's pass order (what soft's `vertical_first` reproduces).
        "vertical_first": rh < h and h - rh > 2 * (w - rw),
        "pixels": f"{stem}.png",
    }
    if tensor:
        np.save(out / f"{stem}.npy", floats)
        case["tensor"] = f"{stem}.npy"
    return case


def write_meta(out, cases, jpeg=None):
    meta = {
        "made_by": "scripts/make_resize_cases.py",
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": PIL.__version__,
            "numpy": np.__version__,
        },
        "mean": MEAN,
        "std": STD,
        "cases": cases,
    }
    if jpeg:
        meta["jpeg"] = jpeg
    (out / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")


def committed(out):
    """The committed cases: photo-like sources of assorted shapes and modes."""
    save = lambda image, file: image.save(out / file, optimize=True)
    # Sizes are chosen so that, across the crops, there are upscales and downscales by
    # up to ~8x, both orientations, a side already at the resize target, a 7x5 image,
    # images tall enough for Pillow 13 to resample vertically first, and centre-crop
    # margins that are odd with an odd half (where torchvision's round-half-to-even
    # differs from flooring). 224 crops are ~50 KB each as PNG; only some sources get one.
    sources = [
        ("landscape", "landscape.png", scene(400, 300, seed=1, noise=0.0), (224, 96, 32)),
        ("portrait", "portrait.png", scene(121, 187, seed=2), (96, 32)),
        ("tiny", "tiny.png", scene(7, 5, seed=3, noise=20.0), (96, 32)),
        # Shorter side 109 = int(96 * 256 / 224): for crop 96 torchvision does not resample.
        ("exact", "exact.png", scene(143, 109, seed=4), (96, 32)),
        ("gray", "gray.png", scene(180, 131, seed=5).convert("L"), (224, 96, 32)),
        ("tall", "tall.png", scene(112, 300, seed=9, noise=0.5), (96, 32)),
        ("palette", "palette.png", scene(64, 61, seed=7).quantize(colors=32, dither=Image.Dither.NONE), (96, 32)),
    ]
    # RGBA with varying alpha: the loader's convert("RGB") drops alpha (no compositing).
    rgba = scene(97, 128, seed=6).convert("RGBA")
    alpha = np.fromfunction(lambda y, x: (x * 2 + y) % 256, (128, 97)).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha, "L"))
    sources.append(("rgba", "rgba.png", rgba, (96, 32)))
    for _, file, image, _ in sources:
        save(image, file)
    # A JPEG with the usual 4:2:0 chroma subsampling, and Pillow's decoding of it.
    scene(160, 120, seed=8).save(out / "photo.jpg", quality=90)
    with Image.open(out / "photo.jpg") as jpeg:
        save(jpeg.convert("RGB"), "photo.decoded.png")
    sources.append(("photo", "photo.decoded.png", None, (96, 32)))

    table = normalize_table(out)
    cases = [
        make_case(out, table, name, file, crop, tensor=crop == 32)
        for name, file, _, crops in sources
        for crop in crops
    ]
    write_meta(out, cases, jpeg={"file": "photo.jpg", "decoded": "photo.decoded.png"})
    return cases


def sweep(out, count, seed):
    """Random sizes and crops on noise, for a wider check than the committed cases."""
    rng = np.random.default_rng(seed)
    table = normalize_table(out)
    cases = []
    for i in range(count):
        shape = i % 4
        if shape == 0:
            w, h = (int(v) for v in rng.integers(1, 80, 2))
        elif shape == 1:
            w, h = (int(v) for v in rng.integers(1, 600, 2))
        elif shape == 2:
            w, h = (int(v) for v in rng.integers(200, 1500, 2))
        else:  # strips, either way round
            w, h = int(rng.integers(1, 40)), int(rng.integers(300, 2000))
            if rng.random() < 0.5:
                w, h = h, w
        crop = int(rng.choice([8, 9, 16, 31, 32, 57, 96, 100, 160, 224, 225, 384]))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if rng.random() < 0.5:  # half noise, half a sawtooth with noise
            y, x = np.mgrid[0:h, 0:w]
            pixels = ((x * 7 + y * 3) % 256).astype(np.uint8)[..., None] // 2 + pixels // 2
        Image.fromarray(pixels, "RGB").save(out / f"s{i}.png", compress_level=1)
        cases.append(make_case(out, table, f"s{i}", f"s{i}.png", crop, tensor=False, fast=True))
    write_meta(out, cases)
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=pathlib.Path, help="write random cases here instead")
    parser.add_argument("--count", type=int, default=400, help="cases in a sweep")
    parser.add_argument("--seed", type=int, default=123, help="seed of a sweep")
    args = parser.parse_args()
    out = args.sweep or pathlib.Path(__file__).resolve().parent.parent / "tests" / "resize"
    out.mkdir(parents=True, exist_ok=True)
    cases = committed(out) if args.sweep is None else sweep(out, args.count, args.seed)
    total = sum(p.stat().st_size for p in out.iterdir())
    odd = sum(any((r - c["crop"]) % 4 == 3 for r in c["resized"]) for c in cases)
    vertical = sum(c["vertical_first"] for c in cases)
    print(
        f"{len(cases)} cases, {total / 1024:.0f} KiB in {out}; "
        f"{odd} with a margin rounding up, {vertical} resampled vertically first"
    )


if __name__ == "__main__":
    main()
