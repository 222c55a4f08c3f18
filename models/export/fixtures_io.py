"""Write I/O and RNG fixtures for the Deno tests in tests/io/ and tests/random_test.ts.

Standalone script (numpy and the standard library only). From the repository root::

    /work/venvs/exp/bin/python models/export/fixtures_io.py [--out tests/fixtures]

Writes:

- ``npy/*.npy`` + ``npy/expected.json``: arrays saved by numpy (each dtype parastep reads, format
  versions 1.0/2.0/3.0, a 0-d and an empty array) and, for refusal tests, a Fortran-order and a
  big-endian file. expected.json gives dtype, shape, version and the values (NaN/Infinity as strings,
  int64 as decimal strings).
- ``wav/*.wav`` + ``wav/expected.json`` + ``wav/*.npy``: 16-bit PCM written by Python's ``wave``
  module (mono and stereo), 32-bit IEEE float written with ``struct`` following the WAVE spec for
  non-PCM data (fmt chunk of 18 bytes with cbSize 0, a ``fact`` chunk, then ``data``), the decoded
  samples as numpy computes them, and the PCM16 rounding reference
  ``clip(round_half_even(clip(x, -1, 1) * 32768), -32768, 32767)``.
- ``png/crc32.json``: ``zlib.crc32`` of a few byte strings.
- ``random/sfc64.json``: numpy's SFC64 bit generator, started from the state
  ``a = b = c = seed, counter = 1`` and advanced 12 outputs (parastep's seeding); per seed its first
  raw uint64 outputs, the first ``Generator.random()`` doubles, and the Box-Muller normals (float32)
  made from those doubles.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import wave
import zlib
from pathlib import Path

import numpy as np

SEED = 7


def jsonable(values: np.ndarray) -> list:
    out = []
    for v in values.ravel().tolist():
        if isinstance(v, bool):
            out.append(v)
        elif isinstance(v, int):
            out.append(str(v))  # int64 may exceed 2^53
        elif isinstance(v, float) and not math.isfinite(v):
            out.append("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))
        else:
            out.append(v)
    return out


def write_npy(out: Path, rng: np.random.Generator) -> None:
    d = out / "npy"
    d.mkdir(parents=True, exist_ok=True)
    expected: dict[str, dict] = {}

    def save(name: str, arr: np.ndarray, version=None) -> None:
        path = d / f"{name}.npy"
        with open(path, "wb") as fh:
            np.lib.format.write_array(fh, arr, version=version, allow_pickle=False)
        values = arr.astype(np.float64) if arr.dtype == np.float16 else arr
        expected[name] = {
            "descr": np.lib.format.dtype_to_descr(arr.dtype),
            "shape": list(arr.shape),
            "version": list(version) if version else [1, 0],
            "values": jsonable(np.ascontiguousarray(values)),
        }

    save("f4_2x3", rng.standard_normal((2, 3)).astype(np.float32))
    save("f8_4", np.array([0.1, -2.5, 1e300, 5e-324]))
    save("i8_2x2x2", np.array([[[0, -1], [2**62, -(2**63)]], [[7, 8], [9, 2**53 + 1]]], dtype=np.int64))
    save("i4_5", np.array([0, -1, 2**31 - 1, -(2**31), 12345], dtype=np.int32))
    save(
        "f2_3x2",
        np.array([[1.0, -0.0], [65504.0, 6e-8], [np.inf, np.nan]], dtype=np.float16),
    )
    save("b1_4", np.array([True, False, False, True]))
    save("u1_3x3", np.arange(0, 255, 29, dtype=np.uint8)[:9].reshape(3, 3))
    save("f4_scalar", np.array(3.5, dtype=np.float32))
    save("f4_empty_0x3", np.zeros((0, 3), dtype=np.float32))
    save("f4_v2", rng.standard_normal(5).astype(np.float32), version=(2, 0))
    save("f4_v3", rng.standard_normal((1, 2)).astype(np.float32), version=(3, 0))
    save("f4_long_1x1x1x1x1x1x7", rng.standard_normal((1, 1, 1, 1, 1, 1, 7)).astype(np.float32))

    # Refusals (not in expected.json's readable set).
    np.save(d / "refuse_fortran.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    np.save(d / "refuse_big_endian.npy", np.arange(3, dtype=">f4"))
    np.save(d / "refuse_complex.npy", np.arange(2, dtype=np.complex64))
    (d / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


def write_float_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """32-bit IEEE float WAV: RIFF, fmt (18 bytes, format 3, cbSize 0), fact, data."""
    data = samples.astype("<f4").tobytes()
    channels = 1
    fmt = struct.pack("<HHIIHHH", 3, channels, rate, rate * 4 * channels, 4 * channels, 32, 0)
    fact = struct.pack("<I", len(samples) // channels)
    body = b"WAVE"
    body += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"fact" + struct.pack("<I", len(fact)) + fact
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def write_wav(out: Path, rng: np.random.Generator) -> None:
    d = out / "wav"
    d.mkdir(parents=True, exist_ok=True)
    rate = 16000
    n = 400

    pcm = (rng.standard_normal(n) * 8000).clip(-32768, 32767).astype(np.int16)
    pcm[:4] = [-32768, 32767, 0, -1]
    with wave.open(str(d / "pcm16_mono.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    np.save(d / "pcm16_mono_decoded.npy", (pcm.astype(np.float64) / 32768).astype(np.float32))

    stereo = (rng.standard_normal((50, 2)) * 3000).astype(np.int16)
    with wave.open(str(d / "pcm16_stereo_22050.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(stereo.astype("<i2").tobytes())
    np.save(d / "pcm16_stereo_22050_decoded.npy", (stereo.astype(np.float64) / 32768).astype(np.float32))

    flt = (rng.standard_normal(n) * 0.3).astype(np.float32)
    flt[:3] = [1.5, -2.0, 0.0]  # float WAV keeps values outside [-1, 1]
    write_float_wav(d / "float32_mono.wav", flt, rate)
    np.save(d / "float32_mono_decoded.npy", flt)

    # PCM16 rounding reference: half-to-even on exact halves, clipping at both ends.
    x = np.concatenate(
        [
            np.array([-2.0, -1.0, -0.99999, 1.0, 1.5, 0.0, -0.0], dtype=np.float32),
            (np.array([0.5, 1.5, 2.5, -0.5, -1.5, 32766.5, -32767.5]) / 32768).astype(np.float32),
            rng.uniform(-1.1, 1.1, 100).astype(np.float32),
        ]
    )
    expected = np.clip(np.round(np.clip(x.astype(np.float64), -1, 1) * 32768), -32768, 32767)
    np.save(d / "pcm16_rounding_input.npy", x)
    np.save(d / "pcm16_rounding_expected.npy", expected.astype(np.int32))

    meta = {
        "pcm16_mono.wav": {"sampleRate": rate, "channels": 1, "format": "pcm16"},
        "pcm16_stereo_22050.wav": {"sampleRate": 22050, "channels": 2, "format": "pcm16"},
        "float32_mono.wav": {"sampleRate": rate, "channels": 1, "format": "float32"},
    }
    (d / "expected.json").write_text(json.dumps(meta, indent=2) + "\n")


def write_crc(out: Path) -> None:
    d = out / "png"
    d.mkdir(parents=True, exist_ok=True)
    inputs = [b"", b"a", b"IEND", b"123456789", bytes(range(256)) * 3, b"IHDR" + bytes(13)]
    table = [{"hex": b.hex(), "crc32": zlib.crc32(b)} for b in inputs]
    (d / "crc32.json").write_text(json.dumps(table, indent=2) + "\n")


def seeded_sfc64(seed: int) -> np.random.SFC64:
    """numpy's SFC64 in parastep's seeded state: a = b = c = seed, counter = 1, 12 outputs skipped."""
    bg = np.random.SFC64(0)
    bg.state = {
        "bit_generator": "SFC64",
        "state": {"state": np.array([seed, seed, seed, 1], dtype=np.uint64)},
        "has_uint32": 0,
        "uinteger": 0,
    }
    bg.random_raw(12)
    return bg


def write_random(out: Path) -> None:
    d = out / "random"
    d.mkdir(parents=True, exist_ok=True)
    cases = []
    for seed in (0, 1, 42, 2**53 - 1, 2**64 - 1):
        raw = seeded_sfc64(seed).random_raw(8)
        u = np.random.Generator(seeded_sfc64(seed)).random(64)  # (next_uint64 >> 11) * 2^-53
        # Box-Muller on pairs: u1 = 1 - U[2k] in (0, 1], u2 = U[2k+1]; both outputs used.
        u1 = 1.0 - u[0::2]
        u2 = u[1::2]
        r = np.sqrt(-2.0 * np.log(u1))
        z = np.empty(64)
        z[0::2] = r * np.cos(2 * np.pi * u2)
        z[1::2] = r * np.sin(2 * np.pi * u2)
        cases.append(
            {
                "seed": str(seed),
                "raw": [str(int(v)) for v in raw],
                "uniform": u.tolist(),
                "normal_f32": z.astype(np.float32).astype(np.float64).tolist(),
            }
        )
    (d / "sfc64.json").write_text(json.dumps({"numpy": np.__version__, "cases": cases}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    write_npy(args.out, rng)
    write_wav(args.out, rng)
    write_crc(args.out)
    write_random(args.out)
    print(f"wrote npy/, wav/, png/crc32.json, random/sfc64.json under {args.out}")


if __name__ == "__main__":
    main()
