/**
 * `parastep bench`: for each device count N, the sequential baseline,
 * ParaStep on N Workers and BatchStep with stride N, all on the same prompt
 * and seed; latency, speedup against the ideal, communication, and quality
 * against the sequential output.
 *
 * Latency is the denoising loop's wall time (opening sessions excluded),
 * median over `--runs`. On the CPU a "device" is a Worker with
 * floor(cores / N) intra-op threads; the baselines are the sequential sampler
 * with one thread and with every core.
 *
 * @module
 */

import { Env } from "../../ffi/mod.ts";
import { type OutputContent, OutputSet, type OutputTarget } from "../io/output_set.ts";
import { median } from "../metrics/stats.ts";
import { checkComponentGraphs, type ModelFolder, resolveModelFor } from "../models/model.ts";
import { criticalPathCalls, type Exchange, EXCHANGES } from "../parastep/rounds.ts";
import {
  checkCapacity,
  checkDevices,
  defaultWarmup,
  type DenoiseEngine,
  denoiseInProcess,
  type DenoiseMode,
  type DenoiseReport,
  denoiseWithWorkers,
  familyOf,
  type OpenedEngine,
  type PipelineFamily,
  type QualityMetric,
  type RequestBase,
} from "../pipelines/mod.ts";
import type { BenchCommand } from "./args.ts";
import { checkFamilyFlags } from "./gen.ts";
import { ProgressBar } from "./progress.ts";

/** One measured configuration. */
export interface BenchRow {
  /** e.g. "sequential, 1 thread", "ParaStep N=2", "BatchStep L=2". */
  readonly config: string;
  readonly mode: DenoiseMode;
  /** How ParaStep ranks shared each round's results; absent for single-device modes. */
  readonly exchange?: Exchange;
  /** BatchStep's stride L; absent for other modes. */
  readonly stride?: number;
  /** Devices (Workers) used. */
  readonly devices: number;
  /** Intra-op threads per device. */
  readonly threads: number;
  /** How steps travelled between ranks: "channel" (BroadcastChannel) or "nats". */
  readonly transport?: "channel" | "nats";
  /** Median denoising wall time over the runs, ms. */
  readonly medianMs: number;
  /** Every run's denoising wall time, ms. */
  readonly runsMs: readonly number[];
  /** Against "sequential, 1 thread". */
  readonly speedup: number;
  /** Against "sequential, all cores". */
  readonly speedupVsAllCores: number;
  /** Steps over network calls on the critical path: the speedup if calls were all that cost. */
  readonly idealSpeedup: number;
  /** Network calls on the critical path (measured). */
  readonly criticalPathCalls: number;
  /** Bytes of steps exchanged per run. */
  readonly bytesExchanged: number;
  /** Parallel rounds per run (0 for single-device modes). */
  readonly rounds: number;
  /**
   * Milliseconds per round that exchanging steps adds to the critical path: rank 0's time sending
   * plus its wait for the other ranks' eps, median over rounds, then over runs (see
   * `DenoiseReport.exchangeMsPerRound`).
   */
  readonly exchangeMsPerRound: number;
  /**
   * Median one-way transit of the round's latents broadcast and of its eps messages (post to
   * payload in hand), median over runs; null for a kind the configuration does not send (latents
   * with all-gather, both on one device). With gather both hops lie on a round's critical path when
   * the ranks' calls take equally long; with all-gather only the eps hop does.
   */
  readonly hopMs: { readonly latents: number | null; readonly eps: number | null };
  /** {@link BenchRow.exchangeMsPerRound} as a share of one sequential step. */
  readonly exchangeShareOfStep: number;
  /**
   * Milliseconds per round the run took beyond its critical-path calls at the
   * sequential per-step cost: exchange, waiting and scheduling together.
   */
  readonly overheadMsPerRound: number;
  /**
   * Quality of the output against the sequential one, by the family's measures (for audio:
   * "SNR dB", "LSD dB", "mel PSNR dB"); infinite when identical.
   */
  readonly quality: Readonly<Record<string, number>>;
}

/** The whole report, as `--json` writes it. */
export interface BenchReport {
  readonly model: string;
  /** The model's family, e.g. "audioldm2". */
  readonly family: string;
  readonly steps: number;
  readonly warmup: number;
  readonly latentDims: readonly number[];
  readonly cpuCores: number;
  readonly runs: number;
  /** Sequential ms per step with one thread: the cost of one UNet call plus its step. */
  readonly stepMs: number;
  readonly rows: readonly BenchRow[];
  readonly date: string;
  readonly deno: string;
}

/** A configuration's runs, in order; its numbers are medians over them. */
interface Measured {
  /** Every run's report (every run computes the same output). */
  reports: DenoiseReport[];
  runsMs: number[];
  medianMs: number;
}

function summarize(reports: DenoiseReport[]): Measured {
  const runsMs = reports.map((r) => r.loopMs);
  return { reports, runsMs, medianMs: median(runsMs) };
}

/** Runs `parastep bench` and returns the report (the CLI prints it). */
export async function runBench(
  command: BenchCommand,
  options: { signal?: AbortSignal } = {},
): Promise<BenchReport> {
  const model = resolveModelFor(command.model, command);
  const family = familyOf(model);
  checkFamilyFlags(family, command.model, command.flags);
  const targets: OutputTarget[] = [];
  if (command.json !== undefined) targets.push({ path: command.json, label: "the JSON report" });
  if (command.plot !== undefined) targets.push({ path: command.plot, label: "the plot" });
  const outputs = OutputSet.plan(targets);
  try {
    return await measure(family, model, command, outputs, options.signal);
  } catch (e) {
    // An abort surfaces as whatever failed first (a cancelled run): report the abort.
    if (options.signal?.aborted) throw options.signal.reason;
    throw e;
  }
}

/**
 * The request a bench measures (the family's bench flags under the command's), with its steps T
 * and warm-up W.
 */
export function benchRequest<R extends RequestBase, C, M>(
  family: PipelineFamily<R, C, M>,
  model: ModelFolder,
  command: BenchCommand,
): { request: R; steps: number; warmup: number } {
  const request = family.checkRequest(model, {
    ...(command.steps !== undefined ? { steps: command.steps } : {}),
    seed: command.seed,
    flags: { ...family.benchFlags, ...command.flags },
  });
  const steps = request.steps;
  return { request, steps, warmup: command.warmup ?? defaultWarmup(model, steps) };
}

async function measure<R extends RequestBase, C, M>(
  family: PipelineFamily<R, C, M>,
  model: ModelFolder,
  command: BenchCommand,
  outputs: OutputSet,
  signal: AbortSignal | undefined,
): Promise<BenchReport> {
  const { request, steps: T, warmup: W } = benchRequest(family, model, command);
  const cores = navigator.hardwareConcurrency;
  const ep = command.ep;
  // Refuse a bad plan before minutes of encoding and warm-up go into it.
  for (const N of command.gpus) {
    checkDevices(T, W, N);
    checkCapacity(model, family.denoiserInit(model, request).component, { ep, devices: N });
  }
  checkComponentGraphs(model, family.components);
  using env = Env.create({ logLevel: command.verbose ? "warning" : "fatal" });
  const session = command.threads !== undefined ? { intraOpThreads: command.threads } : {};
  const conditioning = await family.encode(env, model, request, { session });
  using decoder = family.openDecoder(env, model, { session });
  const x0 = family.prepareLatents(request);
  const simulate = command.simulateStepMs;
  // --simulate-step: the family's own sampler with every model call replaced by a wait.
  const samplerModule = simulate === undefined
    ? family.samplerModule
    : new URL("../pipelines/simulated_sampler.ts", import.meta.url);
  const open = simulate === undefined ? family.denoiserInit(model, request) : {
    module: family.samplerModule.href,
    open: family.denoiserInit(model, request),
    ms: simulate,
  };
  const generation = family.generationInit(model, request, conditioning);
  // Every configuration, measured round-robin (one run of each per pass) so that drift in the
  // machine's speed over the benchmark spreads over all of them alike.
  interface Config {
    label: string;
    engine: DenoiseEngine;
    mode: DenoiseMode;
    devices: number;
    threads: number;
    stride: number;
    exchange?: Exchange;
    transport?: "channel" | "nats";
  }
  const configs: Config[] = [
    {
      label: "sequential, 1 thread",
      engine: denoiseInProcess,
      mode: "sequential",
      devices: 1,
      threads: 1,
      stride: 1,
    },
  ];
  if (cores > 1) {
    configs.push({
      label: `sequential, ${cores} threads`,
      engine: denoiseInProcess,
      mode: "sequential",
      devices: 1,
      threads: cores,
      stride: 1,
    });
  }
  const strides = new Set<number>();
  const exchanges: readonly Exchange[] = command.exchange ? [command.exchange] : EXCHANGES;
  for (const N of command.gpus.filter((n) => n > 1)) {
    for (const exchange of exchanges) {
      configs.push({
        label: `ParaStep N=${N}` + (exchange === "allgather" ? ", all-gather" : ""),
        engine: denoiseWithWorkers,
        mode: "parastep",
        devices: N,
        threads: Math.max(1, Math.floor(cores / N)),
        stride: 1,
        exchange,
        transport: "channel",
      });
      const nats = command.nats;
      if (nats !== undefined) {
        // Every rank a Worker of this process, exchanging over the NATS server (loopback).
        configs.push({
          label: `ParaStep N=${N}` + (exchange === "allgather" ? ", all-gather" : "") +
            ", NATS",
          engine: async (spec) => {
            const [{ natsEngine }, { credsOf }] = await Promise.all([
              import("../pipelines/multihost/engine.ts"),
              import("./serve.ts"),
            ]);
            return await natsEngine({ url: nats.url, ...credsOf(nats), localRanks: N })(spec);
          },
          mode: "parastep",
          devices: N,
          threads: Math.max(1, Math.floor(cores / N)),
          stride: 1,
          exchange,
          transport: "nats",
        });
      }
    }
    // BatchStep needs the batched model call, which a simulated step does not have.
    if (simulate !== undefined) continue;
    const stride = command.stride ?? N;
    if (strides.has(stride)) continue;
    strides.add(stride);
    configs.push({
      label: `BatchStep L=${stride}`,
      engine: denoiseInProcess,
      mode: "batchstep",
      devices: 1,
      threads: 1,
      stride,
    });
  }
  const reports: DenoiseReport[][] = configs.map(() => []);
  const engines: OpenedEngine[] = [];
  const progress = new ProgressBar("bench", command.runs * configs.length * T);
  try {
    // Each configuration's denoisers open once (Workers start once); the runs reuse them.
    for (const c of configs) {
      engines.push(
        await c.engine({
          module: samplerModule,
          open,
          mode: c.mode,
          devices: c.devices,
          ep,
          threads: c.threads,
          ...(signal ? { signal } : {}),
        }),
      );
    }
    for (let run = 0; run < command.runs; run++) {
      for (const [k, c] of configs.entries()) {
        const done = (run * configs.length + k) * T;
        const report = await engines[k]!.run({
          generation,
          x0,
          steps: T,
          warmup: W,
          stride: c.stride,
          ...(c.exchange ? { exchange: c.exchange } : {}),
          onStep: (i) => progress.update(done + i + 1),
          ...(signal ? { signal } : {}),
          ...(command.stallTimeout !== undefined
            ? { stallTimeoutMs: command.stallTimeout * 1000 }
            : {}),
        });
        reports[k]!.push(report);
      }
    }
  } finally {
    progress.finish();
    for (const engine of engines) await engine[Symbol.asyncDispose]();
  }
  const measured = reports.map(summarize);

  const sequential1 = measured[0]!;
  const sequentialAll = measured[cores > 1 ? 1 : 0]!;
  const reference = await decoder.decode(request, sequential1.reports.at(-1)!.output);
  const stepMs = sequential1.medianMs / T;
  const rows: BenchRow[] = [];
  for (const [k, c] of configs.entries()) {
    const m = measured[k]!;
    const report = m.reports.at(-1)!;
    const exchangeMs = median(m.reports.map((r) => r.exchangeMsPerRound));
    const out = await decoder.decode(request, report.output);
    const rounds = c.mode === "parastep" && c.devices > 1 ? Math.ceil((T - W) / c.devices) : 0;
    const calls = report.criticalPathCalls;
    rows.push({
      config: c.label,
      mode: c.mode,
      ...(c.exchange ? { exchange: c.exchange } : {}),
      ...(c.transport ? { transport: c.transport } : {}),
      ...(c.mode === "batchstep" ? { stride: c.stride } : {}),
      devices: c.devices,
      threads: c.threads,
      medianMs: m.medianMs,
      runsMs: m.runsMs,
      speedup: sequential1.medianMs / m.medianMs,
      speedupVsAllCores: sequentialAll.medianMs / m.medianMs,
      idealSpeedup: T / calls,
      criticalPathCalls: calls,
      bytesExchanged: report.bytesExchanged,
      rounds,
      exchangeMsPerRound: exchangeMs,
      exchangeShareOfStep: exchangeMs / stepMs,
      hopMs: {
        latents: medianOfRuns(m.reports.map((r) => r.hopMs.latents)),
        eps: medianOfRuns(m.reports.map((r) => r.hopMs.eps)),
      },
      overheadMsPerRound: rounds > 0 ? (m.medianMs - calls * stepMs) / rounds : 0,
      quality: byName(family.quality(reference, out)),
    });
  }
  const report: BenchReport = {
    model: model.dir,
    family: family.name,
    steps: T,
    warmup: W,
    latentDims: request.latentDims,
    cpuCores: cores,
    runs: command.runs,
    stepMs,
    rows,
    date: new Date().toISOString(),
    deno: Deno.version.deno,
  };
  const contents: OutputContent[] = [];
  if (command.json !== undefined) {
    // JSON has no Infinity (identical outputs' SNR and PSNR): write it as the string "Infinity".
    const json = JSON.stringify(
      report,
      (_, v) => typeof v === "number" && !Number.isFinite(v) ? String(v) : v,
      2,
    );
    contents.push(new TextEncoder().encode(json));
  }
  if (command.plot !== undefined) contents.push(new TextEncoder().encode(speedupSvg(report)));
  await outputs.commit(contents, signal ? { signal } : {});
  return report;
}

function byName(metrics: readonly QualityMetric[]): Record<string, number> {
  return Object.fromEntries(metrics.map((m) => [m.name, m.value]));
}

/** The median of per-run values, or null when no run measured one. */
function medianOfRuns(values: readonly (number | null)[]): number | null {
  const measured = values.filter((v): v is number => v !== null);
  return measured.length === 0 ? null : median(measured);
}

function hop(ms: number | null): string {
  return ms === null ? "-" : ms.toFixed(2);
}

function db(x: number): string {
  return Number.isFinite(x) ? x.toFixed(1) : "inf";
}

/** Bytes exchanged per parallel round: all but the warm-up message (latents and cache), per round. */
export function roundBytes(r: BenchReport, x: BenchRow): number {
  const warmup = 2 * 4 * r.latentDims.reduce((a, d) => a * d, 1);
  return x.rounds > 0 ? (x.bytesExchanged - warmup) / x.rounds : 0;
}

/** The report as a Markdown table plus a header line. */
export function formatBench(r: BenchReport): string {
  const metrics = Object.keys(r.rows[0]?.quality ?? {});
  const lines = [
    `${r.model}: T=${r.steps}, W=${r.warmup}, latents [${r.latentDims}], ${r.cpuCores} CPU cores, ` +
    `median of ${r.runs} runs, denoising loop only (sessions opened beforehand); ` +
    `sequential step ${r.stepMs.toFixed(1)} ms with 1 thread`,
    "",
    "| config | devices x threads | median ms | speedup | vs all cores | ideal | calls on critical path | KiB exchanged | KiB/round | exchange ms/round (% of a step) | hops ms (latents + eps) | overhead ms/round | " +
    metrics.map((name) => `${name} |`).join(" "),
    "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|".repeat(metrics.length),
  ];
  for (const x of r.rows) {
    const cells = [
      x.config,
      `${x.devices} x ${x.threads}`,
      x.medianMs.toFixed(0),
      x.speedup.toFixed(2),
      x.speedupVsAllCores.toFixed(2),
      x.idealSpeedup.toFixed(2),
      String(x.criticalPathCalls),
      (x.bytesExchanged / 1024).toFixed(0),
      x.rounds ? (roundBytes(r, x) / 1024).toFixed(1) : "-",
      x.rounds
        ? `${x.exchangeMsPerRound.toFixed(2)} (${(100 * x.exchangeShareOfStep).toFixed(1)}%)`
        : "-",
      x.rounds ? `${hop(x.hopMs.latents)} + ${hop(x.hopMs.eps)}` : "-",
      x.rounds ? x.overheadMsPerRound.toFixed(2) : "-",
      ...metrics.map((name) => db(x.quality[name] ?? NaN)),
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/**
 * Speedup against N: measured ParaStep (each exchange) and BatchStep (against
 * sequential with one thread) beside the ideal curve T / (W + ceil((T - W) / N)).
 */
export function speedupSvg(r: BenchReport): string {
  const para = r.rows.filter((x) => x.mode === "parastep" && x.exchange !== "allgather");
  const allGather = r.rows.filter((x) => x.mode === "parastep" && x.exchange === "allgather");
  const batch = r.rows.filter((x) => x.mode === "batchstep");
  const maxN = Math.max(
    2,
    ...para.map((x) => x.devices),
    ...allGather.map((x) => x.devices),
    ...batch.map((x) => x.stride ?? 2),
  );
  const ideal = Array.from({ length: maxN }, (_, k) => ({
    n: k + 1,
    s: criticalPathCalls({ steps: r.steps, warmup: r.warmup, devices: k + 1 }),
  })).map(({ n, s }) => ({ n, s: r.steps / s }));
  const points = [
    { n: 1, s: 1 },
    ...para.map((x) => ({ n: x.devices, s: x.speedup })),
  ];
  const allGatherPoints = [
    { n: 1, s: 1 },
    ...allGather.map((x) => ({ n: x.devices, s: x.speedup })),
  ];
  // BatchStep with stride L makes the calls of ParaStep on N = L devices: plotted at N = L.
  const batchPoints = batch.map((x) => ({ n: x.stride ?? 2, s: x.speedup }));
  const maxS = Math.max(
    ...ideal.map((p) => p.s),
    ...points.map((p) => p.s),
    ...allGatherPoints.map((p) => p.s),
    ...batchPoints.map((p) => p.s),
    1,
  ) * 1.1;
  const [w, h, m] = [480, 320, 48];
  const X = (n: number) => m + ((n - 1) / Math.max(1, maxN - 1)) * (w - 2 * m);
  const Y = (s: number) => h - m - (s / maxS) * (h - 2 * m);
  const path = (ps: { n: number; s: number }[]) =>
    ps.map((p, k) => `${k ? "L" : "M"}${X(p.n).toFixed(1)},${Y(p.s).toFixed(1)}`).join(" ");
  const ticks = Array.from({ length: maxN }, (_, k) => k + 1).map((n) =>
    `<text x="${X(n)}" y="${h - m + 18}" text-anchor="middle">${n}</text>`
  );
  const tick = maxS <= 3 ? 0.5 : 1;
  const yTicks = Array.from({ length: Math.floor(maxS / tick) + 1 }, (_, k) => k * tick).map((s) =>
    `<text x="${m - 8}" y="${Y(s) + 4}" text-anchor="end">${s}</text>` +
    `<line x1="${m}" x2="${w - m}" y1="${Y(s)}" y2="${Y(s)}" stroke="#eee"/>`
  );
  // One legend line per series drawn; BatchStep with stride L sits at N = L (the same calls).
  const series: [string, string, number][] = [
    ["#1f77b4", "ParaStep (measured)", para.length],
    ["#2ca02c", "ParaStep, all-gather (measured)", allGather.length],
    ["#ff7f0e", "BatchStep, at N = L (measured)", batch.length],
  ];
  const legend = series.filter(([, , rows]) => rows > 0).map(([colour, label], k) =>
    `<text x="${w - m}" y="${m + 16 * (k + 1)}" text-anchor="end" fill="${colour}">${label}</text>`
  );
  const dots = (ps: { n: number; s: number }[], colour: string) =>
    ps.map((p) => `<circle cx="${X(p.n)}" cy="${Y(p.s)}" r="4" fill="${colour}"/>`).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
${yTicks.join("\n")}
<line x1="${m}" y1="${h - m}" x2="${w - m}" y2="${h - m}" stroke="black"/>
<line x1="${m}" y1="${m}" x2="${m}" y2="${h - m}" stroke="black"/>
${ticks.join("\n")}
<text x="${w / 2}" y="${h - 8}" text-anchor="middle">devices N</text>
<text x="14" y="${h / 2}" transform="rotate(-90 14 ${
    h / 2
  })" text-anchor="middle">speedup vs sequential (1 thread)</text>
<text x="${
    w / 2
  }" y="20" text-anchor="middle">T=${r.steps}, W=${r.warmup}, ${r.cpuCores} cores</text>
<path d="${path(ideal)}" fill="none" stroke="#999" stroke-dasharray="6 4"/>
<path d="${path(points)}" fill="none" stroke="#1f77b4" stroke-width="2"/>
${dots(points, "#1f77b4")}
${
    allGather.length
      ? `<path d="${path(allGatherPoints)}" fill="none" stroke="#2ca02c" stroke-width="2"/>`
      : ""
  }
${dots(allGather.map((x) => ({ n: x.devices, s: x.speedup })), "#2ca02c")}
${dots(batchPoints, "#ff7f0e")}
<text x="${w - m}" y="${m}" text-anchor="end" fill="#999">ideal T / (W + ceil((T-W)/N))</text>
${legend.join("\n")}
</svg>
`;
}
