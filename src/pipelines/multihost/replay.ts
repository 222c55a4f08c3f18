/**
 * The in-process engine told that ranks were lost (`gen --in-process --replay-loss STEP:N`): it
 * computes what `gen --nats --on-rank-loss continue` computed across hosts when a rank was lost
 * at round start STEP and the rest ran at N, bit for bit ({@link runInProcessWithLosses}), so a
 * re-planned output can be reproduced and checked on one host.
 *
 * @module
 */

import type { ExecutionProvider } from "../../../ffi/mod.ts";
import { samplerForm } from "../../parastep/devices.ts";
import { type RankLoss, runInProcessWithLosses } from "../../parastep/rounds.ts";
import { type DenoiseEngine, denoiseInProcess, type OpenedEngine } from "../denoise.ts";

/** The in-process engine replaying `losses` (rank numbers are not needed: -1 in the report). */
export function replayLossEngine(
  losses: readonly Pick<RankLoss, "step" | "devices">[],
): DenoiseEngine {
  return async (spec): Promise<OpenedEngine> => {
    if (spec.mode !== "parastep" || spec.devices === 1) return await denoiseInProcess(spec);
    const module: unknown = await import(spec.module.href);
    const form = samplerForm(module, spec.module.href);
    if (form.kind !== "denoiser") {
      throw new TypeError(`Cannot replay a rank loss as ${spec.module.href} has no openDenoiser`);
    }
    const started = performance.now();
    // The same threads as the in-process engine: ranks share the cores.
    const threads = spec.threads ??
      Math.max(1, Math.floor(navigator.hardwareConcurrency / spec.devices));
    const denoiser = await form.open(spec.open, {
      rank: 0,
      devices: 1,
      ep: spec.ep,
      deviceId: spec.deviceIds?.[0] ?? 0,
      intraOpThreads: threads,
    }, { signal: spec.signal ?? new AbortController().signal });
    const loadMs = performance.now() - started;
    const ep =
      (denoiser.executionProvider ?? (spec.ep === "auto" ? "cpu" : spec.ep)) as ExecutionProvider;
    return {
      loadMs,
      denoiserSessions: 1,
      async run(job) {
        using sampler = denoiser.bind(job.generation);
        const loopStart = performance.now();
        const result = await runInProcessWithLosses(
          { steps: job.steps, warmup: job.warmup, devices: spec.devices },
          () => sampler,
          job.x0,
          losses,
          {
            ...(job.signal ? { signal: job.signal } : {}),
            ...(job.exchange ? { exchange: job.exchange } : {}),
          },
        );
        return {
          output: result.output,
          ep,
          modelCalls: result.modelCalls,
          criticalPathCalls: result.criticalPathCalls,
          bytesExchanged: 0,
          loopMs: performance.now() - loopStart,
          exchangeMsPerRound: 0,
          hopMs: { latents: null, eps: null },
          losses: losses.map((l) => ({ rank: -1, ...l })),
        };
      },
      [Symbol.asyncDispose]() {
        return denoiser[Symbol.asyncDispose]();
      },
    };
  };
}
