/**
 * Usage texts.
 *
 * @module
 */

import { FAMILIES } from "../pipelines/mod.ts";
import type { FlagSpec } from "../pipelines/family.ts";
import type { CommandName } from "./args.ts";

/** The overview printed by `parastep --help`. */
export const USAGE = `parastep: step-parallel diffusion sampling (ParaStep) on ONNX Runtime

Usage:
  parastep <command> [flags]

Commands:
  gen       Generate audio or video with a model (ParaStep over N devices)
  bench     Compare sequential, ParaStep and BatchStep latency and quality
  info      Show ONNX Runtime, its execution providers, CUDA devices, CPU cores and models
  serve     Offer this host's devices as ParaStep ranks to 'gen --nats' over NATS
  help      Show help for a command

Global flags:
  -h, --help       Show help
  -V, --version    Show the version
  -v, --verbose    Let ONNX Runtime log warnings (default: errors only)

Environment:
  PARASTEP_ORT_LIB   Path of libonnxruntime to load (default: beside the executable,
                     then node_modules/onnxruntime-node of this checkout)
  PARASTEP_CUDA_PROVIDERS
                     Folder prepared by 'deno task setup:cuda --dir': the CUDA providers
                     and the libonnxruntime loaded from there (when PARASTEP_ORT_LIB is unset)
  PARASTEP_MODELS    Folder holding model folders (default: models/ of this checkout)
  PARASTEP_CACHE_DIR Folder of the graph cache: graphs as ONNX Runtime optimised them, so
                     later runs open faster (default: .cache/ort of this checkout; for a
                     packaged parastep, $XDG_CACHE_HOME/parastep/ort). Safe to delete

Run 'parastep help <command>' for a command's flags.`;

const GEN_GPUS =
  `  --gpus N, --devices N   Devices, one Worker each (CUDA device r for worker r); with
                          --ep cpu at most 4 per core (beyond one per core they take turns)`;
const BENCH_GPUS = `  --gpus LIST             Device counts to compare, e.g. 1,2,4 (default: 1,2)`;

/** The flags `gen` and `bench` share, with the command's `--gpus` line. */
function runFlags(gpus: string): string {
  return `  -m, --model NAME|PATH   Model folder name under models/ or .cache/models/, or a path
                          (default: audioldm2-tiny); its family decides the flags below
  --steps T               Denoising steps (default: the model's; the most its scheduler can
                          space, e.g. 999 for AudioLDM2's DDIM)
  --seed K                Seed of the initial noise, 0 to 2^53-1 (default: 0)
  --ep cpu|cuda|webgpu|auto
                          Execution provider; auto tries cuda, webgpu, cpu (default: auto)
  --dtype auto|fp32|fp16  Float type of the graphs, for a folder exported with several
                          (--dtype fp32,fp16); auto is fp16 on CUDA when the folder holds
                          it, else the folder's own type (default: auto)
${gpus}
  --warmup W              Sequential warm-up steps before the parallel rounds (default:
                          the model's, 5 for AudioLDM2)
  --stride L              BatchStep stride (default: 2; --mode batchstep only)
  --exchange gather|allgather
                          How devices share a round: gather (eps to device 0, which
                          broadcasts the latents, as in the paper) or allgather (each
                          device broadcasts its eps and applies the round: one message
                          less to wait for, same output) (default: gather; bench: both)
  --threads K             ORT intra-op threads per session, at most the cores (default:
                          all cores for encode/decode, cores / N per denoising device)
  --stall-timeout SECONDS A device whose denoiser call has not returned for this long ends
                          the run, naming it (default: 60 s, or 10 x the slowest call seen)
  --no-graph-cache        Optimise every graph at open instead of loading the optimised
                          graph cached by an earlier run (see PARASTEP_CACHE_DIR)
  -v, --verbose           Let ONNX Runtime log warnings`;
}

/** One family's flags as help lines (`bench` leaves out output flags). */
function familySection(flags: readonly FlagSpec[], command: "gen" | "bench"): string {
  return flags
    .filter((f) => command === "gen" || !f.output)
    .map((f) => {
      const value = f.choices ? ` ${f.choices.join("|")}` : f.value ? ` ${f.value}` : "";
      const name = `${f.short ? `-${f.short}, ` : ""}--${f.name}${value}`;
      return name.length <= 22
        ? `  ${name.padEnd(22)}  ${f.help}`
        : `  ${name}\n${" ".repeat(26)}${f.help}`;
    })
    .join("\n");
}

/** Every family's flags, under the family's name. */
function familySections(command: "gen" | "bench"): string {
  return Object.values(FAMILIES)
    .map((family) =>
      `Flags of ${family.name} models, ${family.title}:\n${familySection(family.flags, command)}`
    )
    .join("\n\n");
}

const COMMAND_USAGE: Readonly<Record<CommandName, string>> = {
  info: `Usage: parastep info [--json] [--verbose] [--nats URL [--nats-creds FILE]]

Shows the ONNX Runtime library in use (path, version, build), the execution
providers compiled into it and whether each can run here, the one '--ep auto'
would pick, the CPU cores, and the model folders found. With --nats, lists
the hosts serving on that NATS server instead: their devices (busy or free),
execution provider and model folders with content hashes.

Flags:
  --json              Print the same as JSON
  --nats URL          nats://[user:pass@|token@]host[:port]: list the serving hosts
  --nats-creds FILE   NATS credentials file (JWT and NKey seed, mode 600)
  -v, --verbose       Let ONNX Runtime log warnings`,
  serve: `Usage: parastep serve --nats URL [--gpus N] [--ep cpu|cuda|webgpu|auto]
                      [--models DIR] [--name HOST] [--nats-creds FILE]

Offers this host's devices as ParaStep ranks to coordinators ('gen --nats URL')
on the NATS server at URL, generation after generation, until SIGINT or
SIGTERM (which aborts the generation in progress cleanly and exits 0). Opens
models only by folder name under --models, after checking that the manifest's
content hash is the coordinator's; a mismatch is refused with one line. Opens
no port of its own.

Flags:
  --nats URL              nats://[user:pass@|token@]host[:port]
  --nats-creds FILE       NATS credentials file (JWT and NKey seed, mode 600)
  --gpus N, --devices N   Devices offered, one Worker each (default: 1)
  --ep cpu|cuda|webgpu|auto
                          Execution provider of every device (default: auto)
  --models DIR            The folder of model folders (default: $PARASTEP_MODELS or
                          models/ of this checkout)
  --name HOST             This host's name in discovery (default: the hostname)
  -v, --verbose           Log every rank's step`,
  gen: `Usage: parastep gen [flags]

Generates with the model's pipeline (its family: audio from text, video from an
image or from text) and writes the output. With --gpus N > 1 the denoising loop
runs ParaStep on N devices (one Deno Worker each): after W sequential warm-up
steps, each round of N steps costs one network call per device. A flag of
another family than the model's is refused.

Flags:
${runFlags(GEN_GPUS)}
  --mode parastep|batchstep|sequential
                          How to spread the denoising loop (default: parastep)
  -o, --out PATH          Output file (default: named after the prompt or image and the
                          seed, here)
  --in-process            Run all ranks in this process (no Workers)
  --prompts FILE          One generation per line of FILE, with the sessions and Workers
                          opened once: a prompt, or a JSON object of this family's flags
                          plus "seed", "steps" and "out"; each written to --out (a
                          folder, default here) as N-<name> (N: the line number, with
                          zeros in front so that names sort by line).
                          A bad line is reported and skipped (exit 1 at the end)
  --report PATH           Also write what the run did as JSON: the time of each stage
                          (load, encode, denoise, decode, total), devices, provider

Several hosts (ranks on 'parastep serve' hosts, steps over NATS):
  --nats URL              nats://[user:pass@|token@]host[:port]; --gpus N then counts
                          ranks across hosts: rank 0 here, the rest on serving hosts
  --nats-creds FILE       NATS credentials file (JWT and NKey seed, mode 600)
  --hosts A,B             Only these hosts, in this order (default: all, by name)
  --local-ranks K         Ranks in this process, rank 0 first (default: 1)
  --on-rank-loss fail     A rank that stops answering ends the run: exit 1 naming host,
                          rank and step, nothing written (default: fail)
  --on-rank-loss continue The ranks left re-plan the remaining steps and finish; the summary
                          says which rank was lost at which step and the N the rest ran at
  --rank-timeout SECONDS  Silence after which a rank is lost (default: 10)
  --replay-loss STEP:N    With --in-process: compute what 'continue' did when a rank was lost
                          at step STEP and N ranks finished (the same output, bit for bit)

Existing outputs are replaced (all or none; mode, owner and symlinks kept).

${familySections("gen")}

Examples:
  parastep gen --model audioldm2-tiny --prompt "rain on a tin roof" --gpus 2
  parastep gen --model svd-tiny --image photo.png --frames 6 --gpus 2 --gif preview.gif
  parastep gen --prompt "rain" --nats nats://10.0.0.5:4222 --gpus 3`,
  bench: `Usage: parastep bench [flags]

For each device count N, times the sequential baseline, ParaStep with N
devices (with each exchange, unless --exchange picks one) and BatchStep on
the same seed, and compares their outputs with the sequential one (the
family's quality measures: SNR, log-spectral distance and mel PSNR for audio,
mean per-frame PSNR and SSIM for video). Exchange per round is the time rank 0
spends sending and waiting for the others' eps in a round (median); hops are
the median one-way times of the latents and eps messages.

Flags:
${runFlags(BENCH_GPUS)}
  --runs K                Timed runs per configuration; the median is reported (default: 3)
  --json PATH             Also write the results as JSON
  --plot PATH.svg         Also draw speedup against N beside the ideal curve
  --nats URL              Also run each ParaStep configuration with its ranks exchanging
                          steps over this NATS server (every rank a Worker here)
  --nats-creds FILE       NATS credentials file (JWT and NKey seed, mode 600)
  --simulate-step MS      Replace every model call by a wait of MS ms (the real latents,
                          guidance, scheduler and exchange): the engine's own cost at N
                          ranks, whatever the cores (no BatchStep)
  --e2e                   Time what a user waits for instead: for each N, 'parastep gen
                          --gpus N' as a fresh process, first on an empty graph cache
                          (cold), then --runs times on the filled one (warm); reports
                          the process time and each stage (load, encode, denoise, decode)

${familySections("bench")}`,
};

/** The usage text for `command`, or the overview. */
export function usage(command?: CommandName): string {
  return command === undefined ? USAGE : COMMAND_USAGE[command];
}
