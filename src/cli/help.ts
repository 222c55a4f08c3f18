/**
 * Usage texts.
 *
 * @module
 */

import type { CommandName } from "./args.ts";

/** The overview printed by `parastep --help`. */
export const USAGE = `parastep: step-parallel diffusion sampling (ParaStep) on ONNX Runtime

Usage:
  parastep <command> [flags]

Commands:
  gen       Generate audio from a text prompt (ParaStep over N devices)
  bench     Compare sequential, ParaStep and BatchStep latency and quality
  info      Show ONNX Runtime, its execution providers, CPU cores and the models found
  help      Show help for a command

Global flags:
  -h, --help       Show help
  -V, --version    Show the version
  -v, --verbose    Let ONNX Runtime log warnings (default: errors only)

Environment:
  PARASTEP_ORT_LIB   Path of libonnxruntime to load (default: beside the executable,
                     then node_modules/onnxruntime-node of this checkout)
  PARASTEP_MODELS    Folder holding model folders (default: models/ of this checkout)

Run 'parastep help <command>' for a command's flags.`;

const RUN_FLAGS =
  `  -m, --model NAME|PATH   Model folder name under models/, or a path (default: audioldm2-tiny)
  -p, --prompt TEXT       What to generate
  --negative-prompt TEXT  What to steer away from (default: none)
  --steps T               Denoising steps (default: the model's, 20 for the tiny model)
  --guidance G            Classifier-free guidance scale; <= 1 turns it off (default: 3.5)
  --duration SECONDS      Audio length (default: the model's)
  --seed K                Seed of the initial noise (default: 0)
  --ep cpu|cuda|webgpu|auto
                          Execution provider; auto tries cuda, webgpu, cpu (default: auto)
  --gpus N, --devices N   Devices, one Worker each (CUDA device r for worker r)
  --warmup W              Sequential warm-up steps before the parallel rounds (default: 5)
  --stride L              BatchStep stride (default: 2)
  --exchange gather|allgather
                          How devices share a round: gather (eps to device 0, which
                          broadcasts the latents, as in the paper) or allgather (each
                          device broadcasts its eps and applies the round: one message
                          less to wait for, same output) (default: gather; bench: both)
  --threads K             ORT intra-op threads for encode/decode (default: all cores)
  -v, --verbose           Let ONNX Runtime log warnings`;

const COMMAND_USAGE: Readonly<Record<CommandName, string>> = {
  info: `Usage: parastep info [--json] [--verbose]

Shows the ONNX Runtime library in use (path, version, build), the execution
providers compiled into it and whether each can run here, the one '--ep auto'
would pick, the CPU cores, and the model folders found.

Flags:
  --json          Print the same as JSON
  -v, --verbose   Let ONNX Runtime log warnings`,
  gen: `Usage: parastep gen --prompt TEXT [flags]

Generates a 16 kHz WAV from a text prompt. With --gpus N > 1 the denoising
loop runs ParaStep on N devices (one Deno Worker each): after W sequential
warm-up steps, each round of N steps costs one network call per device.

Flags:
${RUN_FLAGS}
  --mode parastep|batchstep|sequential
                          How to spread the denoising loop (default: parastep)
  -o, --out PATH          Output WAV (default: <prompt-slug>_s<seed>.wav here)
  --wav-format pcm16|float32
                          WAV sample format (default: pcm16)
  --spectrogram PATH      Also write the mel spectrogram as a PNG
  --in-process            Run all ranks in this process (no Workers)

Existing outputs are replaced (all or none; mode, owner and symlinks kept).

Example:
  parastep gen --model audioldm2-tiny --prompt "rain on a tin roof" --gpus 2`,
  bench: `Usage: parastep bench [flags]

For each device count N, times the sequential baseline, ParaStep with N
devices (with each exchange, unless --exchange picks one) and BatchStep on
the same seed, and compares their outputs with the sequential one (SNR,
log-spectral distance, mel PSNR). Exchange per round is the time rank 0
spends sending and waiting for the others' eps in a round (median); hops are
the median one-way times of the latents and eps messages.

Flags:
${
    RUN_FLAGS.replace(
      "--gpus N, --devices N   Devices, one Worker each (CUDA device r for worker r)",
      "--gpus LIST             Device counts to compare, e.g. 1,2,4 (default: 1,2)",
    )
  }
  --runs K                Timed runs per configuration; the median is reported (default: 3)
  --json PATH             Also write the results as JSON
  --plot PATH.svg         Also draw speedup against N beside the ideal curve`,
};

/** The usage text for `command`, or the overview. */
export function usage(command?: CommandName): string {
  return command === undefined ? USAGE : COMMAND_USAGE[command];
}
