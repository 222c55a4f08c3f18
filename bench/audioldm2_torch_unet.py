"""PyTorch side of bench/audioldm2_real.ts: diffusers' AudioLDM2 UNet, per-step latency.

Rebuilds the random-weight pipeline of `--size` with `--seed` (the exporter's build is deterministic,
so these are the weights the ONNX folder holds), sets torch's intra-op threads, and times the UNet
call one denoising step makes: batch 2 (classifier-free guidance), `--frames` latent frames, the same
input shapes the parastep side feeds. Prints one JSON line:
{"medianMs", "minMs", "timesMs", "peakRssMiB", "buildS", "threads", "params"}.

With `--serve` it prints `ready`, then runs one call per line read from stdin and prints that call's
milliseconds, so bench/audioldm2_real.ts can alternate it with parastep's calls (a load burst from
elsewhere then hits both sides alike); end of input prints the JSON summary.

Usage: .venv/bin/python bench/audioldm2_torch_unet.py --size base --threads 2 --frames 256 --repeats 3 [--serve]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_mib() -> float:
    """VmHWM: this process image's peak (ru_maxrss would carry the spawning Deno process's over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--sequence", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--serve", action="store_true")
    args = p.parse_args()

    import torch

    from models.export.audioldm2 import configs

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    size = configs.SIZES[args.size]
    torch.manual_seed(args.seed * 1000)  # the seed build_pipeline draws the UNet with (_seeded(seed, 0))
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

    unet = AudioLDM2UNet2DConditionModel(**configs.unet_config(size)).eval()
    build_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(1)
    width = size.mel_bins // 2 ** (len(size.vae_channels) - 1)
    sample = torch.randn(2, size.latent_channels, args.frames, width, generator=gen)
    timestep = torch.tensor([981, 981])
    lm = torch.randn(2, 8, size.lm_dim, generator=gen)
    t5 = torch.randn(2, args.sequence, size.t5_dim, generator=gen)
    mask = torch.ones(2, args.sequence, dtype=torch.long)
    times = []

    def call() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            unet(sample, timestep, encoder_hidden_states=lm, encoder_hidden_states_1=t5,
                 encoder_attention_mask_1=mask, return_dict=False)
        return (time.perf_counter() - t0) * 1000

    if args.serve:
        print("ready", flush=True)
        for _ in sys.stdin:
            times.append(call())
            print(f"{times[-1]:.3f}", flush=True)
        times = times[1:]  # the first call warms up
    else:
        for k in range(args.repeats + 1):  # the first call warms up
            ms = call()
            if k > 0:
                times.append(ms)
    print(json.dumps({
        "medianMs": statistics.median(times),
        "minMs": min(times),
        "timesMs": times,
        "peakRssMiB": _peak_rss_mib(),
        "buildS": build_s,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in unet.parameters()),
    }))


if __name__ == "__main__":
    main()
