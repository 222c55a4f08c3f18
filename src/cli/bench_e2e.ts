/**
 * `parastep bench --e2e`: what a user waits for. Each device count N runs `parastep gen` as a
 * fresh process, first on an empty graph cache (cold), then `--runs` times on the cache that run
 * filled (warm), and reports the process's wall time beside the stages `gen --report` measured
 * inside it (load, encode, denoise, decode).
 *
 * @module
 */

import { OutputSet, type OutputTarget } from "../io/output_set.ts";
import { isAbsolute, joinPath } from "../io/paths.ts";
import { median } from "../metrics/stats.ts";
import { resolveModelFor } from "../models/model.ts";
import { checkDevices, familyOf } from "../pipelines/mod.ts";
import type { BenchCommand } from "./args.ts";
import { benchRequest } from "./bench.ts";
import type { GenReport } from "./gen.ts";
import { checkFamilyFlags } from "./gen.ts";
import { ProgressBar } from "./progress.ts";

/** The permissions `deno task gen` grants (deno.json). */
export const GEN_PERMISSIONS: readonly string[] = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
  "--allow-run",
  "--allow-net",
];

const MAIN = decodeURIComponent(new URL("../../main.ts", import.meta.url).pathname);

/** One `gen` process. */
export interface E2eRun {
  /** Spawn to exit, ms: Deno's start and module loading included. */
  readonly processMs: number;
  /** The stages `gen --report` measured inside the process. */
  readonly timings: GenReport["timings"];
}

/** One device count: its cold run and its warm runs. */
export interface E2eRow {
  readonly devices: number;
  /** "sequential" for one device, else "ParaStep". */
  readonly mode: string;
  readonly cold: E2eRun;
  readonly warm: readonly E2eRun[];
  /** Whether every run wrote the same bytes (the cache must not change outputs). */
  readonly sameOutput: boolean;
}

/** The `--e2e` report, as `--json` writes it. */
export interface E2eReport {
  readonly model: string;
  readonly family: string;
  readonly steps: number;
  readonly warmup: number;
  readonly cpuCores: number;
  readonly runs: number;
  readonly rows: readonly E2eRow[];
  readonly date: string;
  readonly deno: string;
}

/** The `gen` arguments that repeat `command`'s request. */
function genArgs(command: BenchCommand, modelDir: string, devices: number): string[] {
  const args = ["gen", "--model", modelDir, "--gpus", String(devices), "--ep", command.ep];
  args.push("--dtype", command.dtype, "--seed", String(command.seed));
  if (command.steps !== undefined) args.push("--steps", String(command.steps));
  if (command.warmup !== undefined) args.push("--warmup", String(command.warmup));
  if (command.exchange !== undefined) args.push("--exchange", command.exchange);
  if (command.threads !== undefined) args.push("--threads", String(command.threads));
  if (command.stallTimeout !== undefined) {
    args.push("--stall-timeout", String(command.stallTimeout));
  }
  if (!command.graphCache) args.push("--no-graph-cache");
  if (command.verbose) args.push("--verbose");
  for (const [name, value] of Object.entries(command.flags)) {
    if (value === false) continue;
    args.push(`--${name}`, ...(value === true ? [] : [String(value)]));
  }
  return args;
}

/** Runs one `gen` process in `dir` with the graph cache in `cacheDir`. */
async function runGenProcess(
  args: readonly string[],
  dir: string,
  cacheDir: string,
  signal: AbortSignal | undefined,
): Promise<{ run: E2eRun; output: Uint8Array }> {
  signal?.throwIfAborted();
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...GEN_PERMISSIONS, MAIN, ...args, "--report", `${dir}/report.json`],
    cwd: dir,
    env: { PARASTEP_CACHE_DIR: cacheDir },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const stop = () => child.kill("SIGINT");
  signal?.addEventListener("abort", stop, { once: true });
  let result: Deno.CommandOutput;
  try {
    result = await child.output();
  } finally {
    signal?.removeEventListener("abort", stop);
  }
  const processMs = performance.now() - started;
  signal?.throwIfAborted();
  if (!result.success) {
    const stderr = new TextDecoder().decode(result.stderr).trim().split("\n").at(-1) ?? "";
    throw new Error(
      `Cannot time 'parastep ${args.join(" ")}': it exited ${result.code}: ${stderr}`,
    );
  }
  const report: GenReport = JSON.parse(await Deno.readTextFile(`${dir}/report.json`));
  const output = await Deno.readFile(
    isAbsolute(report.out) ? report.out : joinPath(dir, report.out),
  );
  return { run: { processMs, timings: report.timings }, output };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Runs `parastep bench --e2e` and returns the report (the CLI prints it). */
export async function runBenchE2e(
  command: BenchCommand,
  options: { signal?: AbortSignal } = {},
): Promise<E2eReport> {
  const { signal } = options;
  const model = resolveModelFor(command.model, command);
  const family = familyOf(model);
  checkFamilyFlags(family, command.model, command.flags);
  const { steps: T, warmup: W } = benchRequest(family, model, command);
  for (const N of command.gpus) checkDevices(T, W, N);
  const targets: OutputTarget[] = [];
  if (command.json !== undefined) targets.push({ path: command.json, label: "the JSON report" });
  const outputs = OutputSet.plan(targets);
  const modelDir = Deno.realPathSync(model.dir);
  const flags = { ...family.benchFlags, ...command.flags };
  const work = await Deno.makeTempDir({ prefix: "parastep-e2e-" });
  const progress = new ProgressBar("bench --e2e", command.gpus.length * (1 + command.runs));
  const rows: E2eRow[] = [];
  try {
    for (const N of command.gpus) {
      const args = genArgs({ ...command, flags }, modelDir, N);
      // A cache of its own per N: its first run finds it empty.
      const cacheDir = `${work}/cache-${N}`;
      const runs: E2eRun[] = [];
      let first: Uint8Array | null = null;
      let sameOutput = true;
      for (let k = 0; k <= command.runs; k++) {
        const dir = `${work}/gpus${N}-run${k}`;
        await Deno.mkdir(dir);
        const { run, output } = await runGenProcess(args, dir, cacheDir, signal);
        first ??= output;
        sameOutput &&= equalBytes(first, output);
        runs.push(run);
        progress.update(rows.length * (1 + command.runs) + k + 1);
      }
      rows.push({
        devices: N,
        mode: N === 1 ? "sequential" : "ParaStep",
        cold: runs[0]!,
        warm: runs.slice(1),
        sameOutput,
      });
    }
  } finally {
    progress.finish();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  const report: E2eReport = {
    model: model.dir,
    family: family.name,
    steps: T,
    warmup: W,
    cpuCores: navigator.hardwareConcurrency,
    runs: command.runs,
    rows,
    date: new Date().toISOString(),
    deno: Deno.version.deno,
  };
  if (command.json !== undefined) {
    await outputs.commit(
      [new TextEncoder().encode(JSON.stringify(report, null, 2) + "\n")],
      signal ? { signal } : {},
    );
  }
  return report;
}

/** The median of each stage over `runs`. */
function medianRun(runs: readonly E2eRun[]): E2eRun {
  const stage = (pick: (r: E2eRun) => number) => median(runs.map(pick));
  return {
    processMs: stage((r) => r.processMs),
    timings: {
      encodeMs: stage((r) => r.timings.encodeMs),
      loadMs: stage((r) => r.timings.loadMs),
      loadWaitMs: stage((r) => r.timings.loadWaitMs),
      denoiseMs: stage((r) => r.timings.denoiseMs),
      decodeMs: stage((r) => r.timings.decodeMs),
      totalMs: stage((r) => r.timings.totalMs),
    },
  };
}

/** The report as a Markdown table plus a header line. */
export function formatBenchE2e(r: E2eReport): string {
  const s = (ms: number) => (ms / 1000).toFixed(2);
  const lines = [
    `${r.model}: T=${r.steps}, W=${r.warmup}, ${r.cpuCores} CPU cores; each run a fresh ` +
    `'parastep gen' process; cold: empty graph cache, warm: median of ${r.runs} later runs; ` +
    `seconds`,
    "",
    "| gen --gpus | cache | process | total (in gen) | load (beside encode) | encode | wait for load | denoise loop | decode | same output |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const row of r.rows) {
    const entries: [string, E2eRun][] = [["cold", row.cold]];
    if (row.warm.length > 0) entries.push(["warm", medianRun(row.warm)]);
    for (const [cache, run] of entries) {
      const t = run.timings;
      lines.push(
        `| ${row.devices} (${row.mode}) | ${cache} | ${s(run.processMs)} | ${s(t.totalMs)} | ` +
          `${s(t.loadMs)} | ${s(t.encodeMs)} | ${s(t.loadWaitMs)} | ${s(t.denoiseMs)} | ` +
          `${s(t.decodeMs)} | ${row.sameOutput ? "yes" : "NO"} |`,
      );
    }
  }
  const one = r.rows.find((x) => x.devices === 1);
  if (one && one.warm.length > 0) {
    const base = medianRun(one.warm).processMs;
    for (const row of r.rows.filter((x) => x.devices > 1 && x.warm.length > 0)) {
      const ms = medianRun(row.warm).processMs;
      lines.push(
        "",
        `Warm, end to end: gen --gpus ${row.devices} takes ${
          (ms / base).toFixed(2)
        }x the time of ` +
          `gen --gpus 1 (${s(ms)} s vs ${s(base)} s).`,
      );
    }
  }
  return lines.join("\n");
}
