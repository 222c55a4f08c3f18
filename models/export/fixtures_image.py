"""Write image fixtures for the Deno tests in tests/io/image_test.ts and tests/io/resize_test.ts.

Standalone script (numpy, Pillow, torch and diffusers from the exporter's environment). From the
repository root::

    .venv/bin/python models/export/fixtures_image.py [--out tests/fixtures/image]

Writes into ``tests/fixtures/image/``:

- ``decode/<name>.png|.jpg`` and ``decode/<name>.npy``: image files and what Pillow decodes them to,
  ``np.asarray(Image.open(f).convert("RGB"))`` (uint8 [H, W, 3]), i.e. what diffusers' ``load_image``
  gives the pipeline (without EXIF transposition). PNGs cover every colour type and bit depth, all
  five row filters and Adam7 interlacing; those Pillow cannot write (filters chosen per row, 16-bit
  RGB, low bit depths, interlacing) are written by ``write_png`` below from the PNG specification and
  decoded by Pillow for the expected values. JPEGs are written by Pillow (libjpeg) at 4:2:0, 4:2:2 and 4:4:4
  chroma subsampling, progressive, and greyscale.
- ``bad/``: files that are not images parastep reads (text named .jpg, a GIF, a BMP, a WebP, a
  truncated PNG, a PNG with a broken CRC, an empty file).
- ``lanczos/<name>_in.npy``, ``<name>_out.npy``: uint8 [H, W, 3] images and Pillow's
  ``Image.resize((W, H), Image.LANCZOS, reducing_gap=None)`` of them (what diffusers'
  ``VaeImageProcessor.resize`` does for SVD's conditioning image), plus ``<name>_vae.npy``: float32
  [1, 3, H, W], diffusers' own ``VideoProcessor.preprocess(image, height=H, width=W)`` output.
- ``clip/<name>_in.npy``, ``<name>_out.npy``: uint8 [H0, W0, 3] and float32 [1, 3, 224, 224], the
  CLIP input SVD makes from that image: the steps of ``StableVideoDiffusionPipeline._encode_image``
  before the encoder, run with diffusers' own functions (``pil_to_numpy``, ``numpy_to_pt``,
  ``2x - 1``, ``_resize_with_antialiasing``, ``(x + 1) / 2``) and a ``CLIPImageProcessor`` with the
  ViT-H/14 mean and std (transformers' defaults, the same as the real checkpoint's).
- ``index.json``: every case with its size, mode and what it checks.

Versions used for the committed fixtures: see index.json.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import PIL.Image
import torch

SEED = 20250612

# --- a PNG writer from the specification (https://www.w3.org/TR/png-3/), for what Pillow cannot write


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_rows(raw_rows: list[bytes], bpp: int, filters: list[int]) -> bytes:
    out = bytearray()
    prev = bytes(len(raw_rows[0])) if raw_rows else b""
    for row, ftype in zip(raw_rows, filters):
        out.append(ftype)
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][ftype]
            out.append((x - pred) & 0xFF)
        prev = row
    return bytes(out)


def _pack_row(samples: np.ndarray, depth: int) -> bytes:
    """One scanline of samples (already interleaved) at `depth` bits, big-endian."""
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per_byte = 8 // depth
    padded = np.zeros(-(-len(samples) // per_byte) * per_byte, dtype=np.uint8)
    padded[: len(samples)] = samples
    out = np.zeros(len(padded) // per_byte, dtype=np.uint8)
    for k in range(per_byte):
        out |= (padded[k::per_byte] << (8 - depth * (k + 1))).astype(np.uint8)
    return out.tobytes()


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(
    samples: np.ndarray,  # [H, W, C] integer samples
    colour_type: int,
    depth: int,
    interlace: bool = False,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
    rng: np.random.Generator | None = None,
) -> bytes:
    h, w, c = samples.shape
    bpp = max(1, c * depth // 8)
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    body = bytearray()
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows = [_pack_row(sub[y].reshape(-1), depth) for y in range(sub.shape[0])]
        filters = [int(rng.integers(0, 5)) if rng is not None else (y % 5) for y in range(len(rows))]
        body += _filter_rows(rows, bpp, filters)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 1 if interlace else 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if palette is not None:
        out += _chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    data = zlib.compress(bytes(body), 9)
    # Two IDAT chunks: a decoder must join them.
    out += _chunk(b"IDAT", data[: len(data) // 2]) + _chunk(b"IDAT", data[len(data) // 2 :])
    return out + _chunk(b"IEND", b"")


# --- pictures


def picture(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth gradients plus noise and a sharp edge: exercises every filter tap."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([x / max(w - 1, 1), y / max(h - 1, 1), 0.5 + 0.5 * np.sin(x * 0.7 + y * 0.3)], -1)
    base[(x > w * 0.6) & (y < h * 0.5)] = [0.95, 0.1, 0.2]
    noisy = base * 235 + rng.uniform(0, 20, base.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def pil_rgb(data: bytes) -> np.ndarray:
    im = PIL.Image.open(io.BytesIO(data))
    im.load()
    return np.asarray(im.convert("RGB"))


def write_decode(out: Path, rng: np.random.Generator, index: list) -> None:
    d = out / "decode"
    d.mkdir(parents=True)

    def save(name: str, ext: str, data: bytes, what: str) -> None:
        (d / f"{name}.{ext}").write_bytes(data)
        rgb = pil_rgb(data)
        np.save(d / f"{name}.npy", rgb)
        im = PIL.Image.open(io.BytesIO(data))
        index.append({"kind": "decode", "name": name, "file": f"{name}.{ext}", "mode": im.mode,
                      "size": [im.width, im.height], "what": what})

    def pil_bytes(im: PIL.Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()

    rgb = picture(13, 9, rng)
    save("rgb8_pillow", "png", pil_bytes(PIL.Image.fromarray(rgb), "PNG"), "8-bit RGB as Pillow writes it")
    save("rgb8_filters", "png", write_png(rgb.astype(np.int64), 2, 8, rng=rng), "8-bit RGB, row filters 0-4 at random")
    rgba = np.concatenate([rgb, rng.integers(0, 256, (9, 13, 1), dtype=np.uint8)], -1)
    save("rgba8", "png", pil_bytes(PIL.Image.fromarray(rgba, "RGBA"), "PNG"), "RGBA: alpha dropped, as convert('RGB')")
    gray = rgb[..., 0]
    save("gray8", "png", pil_bytes(PIL.Image.fromarray(gray, "L"), "PNG"), "8-bit greyscale")
    la = np.stack([gray, rgb[..., 1]], -1)
    save("gray_alpha8", "png", pil_bytes(PIL.Image.fromarray(la, "LA"), "PNG"), "greyscale with alpha")
    pal = PIL.Image.fromarray(rgb).quantize(colors=7)
    save("palette8", "png", pil_bytes(pal, "PNG"), "8-bit palette (7 colours)")
    pal_t = pal.copy()
    pal_t.info["transparency"] = 2
    save("palette8_trns", "png", pil_bytes(pal_t, "PNG", transparency=2), "palette with a transparent entry")
    bw = PIL.Image.fromarray(gray > 128)
    save("gray1", "png", pil_bytes(bw, "PNG"), "1-bit greyscale")
    g4 = (gray.astype(np.int64) >> 4)[..., None]
    save("gray4_filters", "png", write_png(g4, 0, 4, rng=rng), "4-bit greyscale, random filters, odd width")
    rgb16 = rgb.astype(np.int64) * 257 + rng.integers(0, 257, rgb.shape)
    save("rgb16", "png", write_png(rgb16, 2, 16, rng=rng), "16-bit RGB (Pillow keeps the high byte)")
    big = picture(21, 19, rng)
    save("rgb8_interlaced", "png", write_png(big.astype(np.int64), 2, 8, interlace=True, rng=rng),
         "8-bit RGB, Adam7 interlaced, size not a multiple of 8")
    palette = rng.integers(0, 256, (4, 3))
    idx2 = rng.integers(0, 4, (11, 10, 1))
    save("palette2_interlaced", "png", write_png(idx2, 3, 2, interlace=True, palette=palette, rng=rng),
         "2-bit palette, Adam7 interlaced")
    rgba16 = np.concatenate([rgb16, rng.integers(0, 65536, (9, 13, 1))], -1)
    save("rgba16", "png", write_png(rgba16, 6, 16, rng=rng), "16-bit RGBA")

    photo = picture(37, 23, rng)
    save("jpeg_420", "jpg", pil_bytes(PIL.Image.fromarray(photo), "JPEG", quality=90), "JPEG 4:2:0, quality 90")
    save("jpeg_422", "jpg", pil_bytes(PIL.Image.fromarray(photo), "JPEG", quality=90, subsampling=1), "JPEG 4:2:2")
    save("jpeg_444", "jpg", pil_bytes(PIL.Image.fromarray(photo), "JPEG", quality=95, subsampling=0), "JPEG 4:4:4")
    save("jpeg_progressive", "jpg",
         pil_bytes(PIL.Image.fromarray(photo), "JPEG", quality=85, progressive=True), "progressive JPEG")
    save("jpeg_gray", "jpg", pil_bytes(PIL.Image.fromarray(photo[..., 1], "L"), "JPEG", quality=90), "greyscale JPEG")


def write_bad(out: Path, rng: np.random.Generator, index: list) -> None:
    d = out / "bad"
    d.mkdir(parents=True)
    im = PIL.Image.fromarray(picture(8, 8, rng))

    def pil_bytes(fmt: str) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt)
        return buf.getvalue()

    png = pil_bytes("PNG")
    files = {
        "text.jpg": b"this is not a JPEG, only text someone named .jpg\n",
        "empty.png": b"",
        "image.gif": pil_bytes("GIF"),
        "image.bmp": pil_bytes("BMP"),
        "image.webp": pil_bytes("WEBP"),
        "truncated.png": png[: len(png) // 2],
        "bad_crc.png": png[:29] + bytes([png[29] ^ 0xFF]) + png[30:],
        "truncated.jpg": pil_bytes("JPEG")[:150],
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
        index.append({"kind": "bad", "file": name})


def write_lanczos(out: Path, rng: np.random.Generator, index: list) -> None:
    from diffusers.video_processor import VideoProcessor

    d = out / "lanczos"
    d.mkdir(parents=True)
    processor = VideoProcessor(do_resize=True, vae_scale_factor=8)
    # (name, input (w, h), output (w, h)): case2's landscape-to-portrait, a strong downscale, an
    # upscale, one axis only, and the identity (Pillow returns a copy).
    cases = [
        ("landscape_to_portrait", (61, 45), (32, 40)),
        ("down_4x", (100, 80), (24, 16)),
        ("up", (13, 9), (40, 32)),
        ("height_only", (48, 32), (48, 16)),
        ("same_size", (24, 16), (24, 16)),
    ]
    for name, (w0, h0), (w, h) in cases:
        src = picture(w0, h0, rng)
        im = PIL.Image.fromarray(src)
        resized = np.asarray(im.resize((w, h), PIL.Image.LANCZOS, reducing_gap=None))
        vae = processor.preprocess(im, height=h, width=w).numpy().astype(np.float32)
        np.save(d / f"{name}_in.npy", src)
        np.save(d / f"{name}_out.npy", resized)
        np.save(d / f"{name}_vae.npy", vae)
        index.append({"kind": "lanczos", "name": name, "in": [w0, h0], "out": [w, h]})


def write_clip(out: Path, rng: np.random.Generator, index: list) -> None:
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )
    from diffusers.video_processor import VideoProcessor
    from transformers import CLIPImageProcessor

    d = out / "clip"
    d.mkdir(parents=True)
    processor = VideoProcessor(do_resize=True, vae_scale_factor=8)
    feature_extractor = CLIPImageProcessor()  # ViT-H/14's mean and std are CLIP's defaults
    for name, (w0, h0) in [("down_300x200", (300, 200)), ("square_224", (224, 224))]:
        src = picture(w0, h0, rng)
        image = processor.numpy_to_pt(processor.pil_to_numpy(PIL.Image.fromarray(src)))
        image = image * 2.0 - 1.0
        image = _resize_with_antialiasing(image, (224, 224))
        image = (image + 1.0) / 2.0
        pixels = feature_extractor(
            images=image, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
            return_tensors="pt",
        ).pixel_values
        np.save(d / f"{name}_in.npy", src)
        np.save(d / f"{name}_out.npy", pixels.numpy().astype(np.float32))
        index.append({"kind": "clip", "name": name, "in": [w0, h0], "mean": list(feature_extractor.image_mean),
                      "std": list(feature_extractor.image_std)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/image"))
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    index: list = []
    write_decode(args.out, rng, index)
    write_bad(args.out, rng, index)
    write_lanczos(args.out, rng, index)
    write_clip(args.out, rng, index)
    import diffusers
    import transformers

    versions = {"pillow": PIL.__version__, "numpy": np.__version__, "torch": torch.__version__,
                "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    (args.out / "index.json").write_text(json.dumps({"versions": versions, "cases": index}, indent=2) + "\n")
    print(f"wrote {len(index)} cases under {args.out}")


if __name__ == "__main__":
    main()
