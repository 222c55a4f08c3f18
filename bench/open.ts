/**
 * `deno task bench:open`: how long creating each component's session takes,
 * for 1 and N workers, through parastep (ONNX Runtime 1.30 from
 * onnxruntime-node, or another library) and through Python's onnxruntime
 * (the exporter's .venv) on the same graphs with the same options.
 *
 * Every measurement is a fresh process (bench/_open_child.ts, or bench/open.py
 * for Python) that opens each component once, after one tiny session that
 * takes ORT's one-time start. Configurations run round-robin, `--runs` times,
 * in a rotated order each round, so a busy machine slows all of them alike;
 * the tables give the median and the range. With `--phases` every round also
 * runs each 1-worker configuration with ORT's verbose log, which splits a
 * session's creation into phases by ORT's own log timestamps:
 *
 * - `load`: reading and parsing the model (session constructed to "Initializing session");
 * - `optimize`: partitioning and graph transforms (to "Use DeviceBasedPartition");
 * - `plan`: the allocation planner (to "Saving initialized tensors");
 * - `weights`: placing initializers (to "Done saving initialized tensors");
 * - `kernels`: creating kernels and pre-packing weights (to "Session successfully initialized").
 *
 * Configurations (`--configs`, comma-separated `RUNTIME:VARIANT`):
 *
 * - runtimes: `ps` (parastep, the library it finds), `ps@LABEL` (parastep
 *   with the library `--lib LABEL=PATH`), `py` (Python onnxruntime),
 *   `py@LABEL` (Python with `--lib LABEL=FOLDER` first on PYTHONPATH, e.g. an
 *   unpacked onnxruntime wheel of another version);
 * - variants: `base` (level all, graph as bytes, as openComponent does),
 *   `path` (ORT reads the file), `disabled`, `basic`, `extended` (levels),
 *   `noprepack` (session.disable_prepacking), and for parastep only
 *   `cache-cold` (empty graph cache: optimise and write), `cache-warm`
 *   (load the cached optimised graph), `borrow` (the coordinator opens one
 *   session, every worker borrows it: `Session.borrow`), and `borrow-warm`
 *   (the same with a warm graph cache).
 *
 * Usage:
 *   deno task bench:open [--model audioldm2-bench] [--components unet,...] [--workers 1,2]
 *     [--configs ps:base,py:base,...] [--runs 5] [--phases] [--lib LABEL=PATH]...
 *     [--python .venv/bin/python] [--json PATH]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { median } from "../src/metrics/stats.ts";
import { resolveModel } from "../src/models/model.ts";
import type { ChildResult, ChildSpec } from "./_open_spec.ts";

const VARIANTS = [
  "base",
  "path",
  "disabled",
  "basic",
  "extended",
  "noprepack",
  "cache-cold",
  "cache-warm",
  "borrow",
  "borrow-warm",
] as const;
type Variant = typeof VARIANTS[number];
const PARASTEP_ONLY: readonly Variant[] = [
  "cache-cold",
  "cache-warm",
  "borrow",
  "borrow-warm",
];
const PHASES = ["load", "optimize", "plan", "weights", "kernels", "other"] as const;
type Phase = typeof PHASES[number];

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "audioldm2-bench" },
    components: { type: "string" },
    workers: { type: "string", default: "1,2" },
    configs: {
      type: "string",
      default:
        "ps:base,ps:path,ps:disabled,ps:noprepack,ps:cache-warm,ps:borrow-warm,py:base,py:disabled",
    },
    runs: { type: "string", default: "5" },
    phases: { type: "boolean", default: false },
    lib: { type: "string", multiple: true, default: [] },
    python: { type: "string" },
    json: { type: "string" },
  },
});

function fail(message: string): never {
  console.error(`bench:open: ${message}`);
  Deno.exit(2);
}

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const model = (() => {
  try {
    return resolveModel(values.model);
  } catch (e) {
    fail(e instanceof Error ? e.message : String(e));
  }
})();
const components = values.components?.split(",") ?? Object.keys(model.manifest.components);
for (const c of components) {
  if (!(c in model.manifest.components)) {
    fail(`--components names '${c}', which ${model.manifestFile} does not list`);
  }
}
const workerCounts = values.workers.split(",").map(Number);
if (workerCounts.some((n) => !Number.isInteger(n) || n < 1)) {
  fail(`--workers must be integers >= 1: current value is ${values.workers}`);
}
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) {
  fail(`--runs must be an integer >= 1: current value is ${values.runs}`);
}
const libs = new Map<string, string>();
for (const entry of values.lib) {
  const at = entry.indexOf("=");
  if (at < 1) fail(`--lib must be LABEL=PATH: current value is ${entry}`);
  libs.set(entry.slice(0, at), entry.slice(at + 1));
}
const python = values.python ?? `${root}.venv/bin/python`;

interface Config {
  name: string;
  runtime: "ps" | "py";
  lib: string | null;
  variant: Variant;
}

const configs: Config[] = values.configs.split(",").map((name) => {
  const [runtimePart, variant] = name.split(":") as [string, Variant | undefined];
  const [runtime, label] = runtimePart.split("@") as [string, string | undefined];
  if (runtime !== "ps" && runtime !== "py") fail(`--configs: '${name}' must start with ps: or py:`);
  if (variant === undefined || !VARIANTS.includes(variant)) {
    fail(`--configs: '${name}' must end with one of ${VARIANTS.join(", ")}`);
  }
  if (runtime === "py" && PARASTEP_ONLY.includes(variant)) {
    fail(`--configs: '${name}' is parastep only`);
  }
  if (label !== undefined && !libs.has(label)) {
    fail(`--configs: '${name}' names no --lib ${label}=PATH`);
  }
  return { name, runtime, lib: label === undefined ? null : libs.get(label)!, variant };
});

const tmp = await Deno.makeTempDir({ prefix: "bench-open-" });
/** One warm graph cache per configuration (cache-warm, borrow-warm), filled before the runs. */
const warmCaches = new Map<string, string>();

function spec(
  config: Config,
  workers: number,
  phases: boolean,
  cacheDir: string | null,
): ChildSpec {
  const v = config.variant;
  return {
    model: model.dir,
    components,
    workers,
    threads: null,
    level: v === "disabled" || v === "basic" || v === "extended" ? v : "all",
    source: v === "path" ? "path" : "auto",
    prepacking: v !== "noprepack",
    cacheDir,
    borrow: v === "borrow" || v === "borrow-warm",
    phases,
  };
}

async function measure(
  config: Config,
  workers: number,
  phases: boolean,
): Promise<{ result: ChildResult; stderr: string }> {
  let cacheDir: string | null = null;
  if (config.variant === "cache-cold") cacheDir = await Deno.makeTempDir({ dir: tmp });
  if (config.variant.endsWith("-warm")) cacheDir = warmCaches.get(config.name)!;
  const args = JSON.stringify(spec(config, workers, phases, cacheDir));
  const command = config.runtime === "py"
    ? new Deno.Command(python, {
      args: [`${root}bench/open.py`, args],
      stdout: "piped",
      stderr: "piped",
      env: config.lib === null ? {} : { PYTHONPATH: config.lib },
    })
    : new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${root}bench/_open_child.ts`, args],
      stdout: "piped",
      stderr: "piped",
      env: config.lib === null ? {} : { PARASTEP_ORT_LIB: config.lib },
    });
  const out = await command.output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    fail(
      `${config.name} with ${workers} worker(s) failed (exit ${out.code}):\n${stderr.slice(-2000)}`,
    );
  }
  if (config.variant === "cache-cold") await Deno.remove(cacheDir!, { recursive: true });
  return { result: JSON.parse(stdout.trim().split("\n").pop()!), stderr };
}

/** Seconds since midnight of an ORT log line's timestamp. */
function logTime(line: string): number | null {
  const m = /^\d{4}-\d\d-\d\d (\d\d):(\d\d):(\d\d(?:\.\d+)?) \[/.exec(line);
  return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]) : null;
}

const PHASE_ENDS: [Phase, string][] = [
  ["load", "Initializing session."],
  ["optimize", "Use DeviceBasedPartition"],
  ["plan", "Saving initialized tensors."],
  ["weights", "Done saving initialized tensors"],
  ["kernels", "Session successfully initialized."],
];

/** Each component's phases (ms) from a verbose log with @@open / @@done markers. */
function parsePhases(
  stderr: string,
  totals: Record<string, number>,
): Record<string, Record<Phase, number>> {
  // deno-lint-ignore no-control-regex -- ORT colours its log lines
  const lines = stderr.replace(/\x1b\[[0-9;]*m/g, "").split("\n");
  const out: Record<string, Record<Phase, number>> = {};
  let current: string | null = null;
  let block: string[] = [];
  for (const line of lines) {
    const mark = /^@@(open|done) (\S+)$/.exec(line);
    if (mark) {
      if (mark[1] === "open") {
        current = mark[2]!;
        block = [];
      } else if (current !== null) {
        out[current] = phasesOf(block, totals[current] ?? NaN);
        current = null;
      }
    } else if (current !== null) block.push(line);
  }
  return out;
}

function phasesOf(block: string[], totalMs: number): Record<Phase, number> {
  const times = block.map(logTime).filter((t): t is number => t !== null);
  const start = times[0] ?? NaN;
  const phases = {} as Record<Phase, number>;
  let previous = start;
  for (const [phase, text] of PHASE_ENDS) {
    const line = block.find((l) => l.includes(text));
    const at = line === undefined ? NaN : logTime(line)!;
    phases[phase] = (at - previous) * 1000;
    previous = at;
  }
  phases.other = totalMs - (previous - start) * 1000;
  return phases;
}

interface Sample {
  config: string;
  workers: number;
  component: string;
  /** Slowest worker's session creation (for borrow: the borrow only; wallMs has the open). */
  ms: number;
  wallMs: number;
  ownerMs: number;
  rssMiB: number;
  cache: string;
  firstSessionMs: number;
}
const samples: Sample[] = [];
const phaseSamples: { config: string; component: string; phases: Record<Phase, number> }[] = [];

// Fill the warm caches once, unmeasured.
for (const config of configs) {
  if (!config.variant.endsWith("-warm")) continue;
  const dir = await Deno.makeTempDir({ dir: tmp });
  warmCaches.set(config.name, dir);
  const args = JSON.stringify(spec(config, 1, false, dir));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${root}bench/_open_child.ts`, args],
    env: config.lib === null ? {} : { PARASTEP_ORT_LIB: config.lib },
    stdout: "null",
    stderr: "inherit",
  }).output();
  if (!out.success) fail(`filling the graph cache for ${config.name} failed`);
}

const jobs = configs.flatMap((config) => workerCounts.map((workers) => ({ config, workers })));
const started = performance.now();
for (let run = 0; run < runs; run++) {
  for (let k = 0; k < jobs.length; k++) {
    const { config, workers } = jobs[(k + run) % jobs.length]!;
    const { result } = await measure(config, workers, false);
    for (const [component, r] of Object.entries(result.components)) {
      samples.push({
        config: config.name,
        workers,
        component,
        ms: Math.max(...r.ms),
        wallMs: r.wallMs,
        ownerMs: r.ownerMs,
        rssMiB: r.rssMiB,
        cache: r.cache,
        firstSessionMs: result.firstSessionMs,
      });
    }
    if (values.phases && workers === 1) {
      const verbose = await measure(config, 1, true);
      const totals = Object.fromEntries(
        Object.entries(verbose.result.components).map(([c, r]) => [c, r.ms[0]!]),
      );
      for (const [component, phases] of Object.entries(parsePhases(verbose.stderr, totals))) {
        phaseSamples.push({ config: config.name, component, phases });
      }
    }
  }
  console.error(
    `bench:open: round ${run + 1}/${runs} done (${
      ((performance.now() - started) / 1000).toFixed(0)
    } s)`,
  );
  // Every round's samples are kept, so an interrupted run still leaves its numbers.
  if (values.json) await writeJson(values.json, run + 1);
}
await Deno.remove(tmp, { recursive: true });

const fmt = (xs: number[]) => {
  const m = median(xs);
  return `${m.toFixed(0)} (${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)})`;
};
const lines: string[] = [];
lines.push(
  `bench:open: ${model.dir}, ${runs} runs, ${navigator.hardwareConcurrency} cores; ms, median (min-max)`,
);
for (const component of components) {
  lines.push("", `## ${component}`, "");
  lines.push(
    "| config | workers | create (slowest worker) | wall incl. sharing | RSS growth MiB | cache |",
  );
  lines.push("| --- | --- | --- | --- | --- | --- |");
  for (const { config, workers } of jobs) {
    const s = samples.filter((x) =>
      x.config === config.name && x.workers === workers && x.component === component
    );
    lines.push(
      `| ${config.name} | ${workers} | ${fmt(s.map((x) => x.ms))} | ${
        fmt(s.map((x) => x.wallMs))
      } | ${median(s.map((x) => x.rssMiB)).toFixed(1)} | ${
        [...new Set(s.map((x) => x.cache))].join(",")
      } |`,
    );
  }
  if (values.phases) {
    lines.push("", `phases, 1 worker (verbose log; ms, median):`, "");
    lines.push(`| config | ${PHASES.join(" | ")} |`);
    lines.push(`| --- | ${PHASES.map(() => "---").join(" | ")} |`);
    for (const config of configs) {
      const p = phaseSamples.filter((x) => x.config === config.name && x.component === component);
      if (p.length === 0) continue;
      lines.push(
        `| ${config.name} | ${
          PHASES.map((ph) => median(p.map((x) => x.phases[ph])).toFixed(0)).join(" | ")
        } |`,
      );
    }
  }
}
lines.push("", "first session of a process (ORT's one-time start), ms:");
for (const config of configs) {
  lines.push(
    `- ${config.name}: ${
      fmt(samples.filter((x) => x.config === config.name).map((x) => x.firstSessionMs))
    }`,
  );
}
console.log(lines.join("\n"));
async function writeJson(path: string, rounds: number): Promise<void> {
  await Deno.writeTextFile(
    path,
    JSON.stringify({ model: model.dir, runs: rounds, samples, phases: phaseSamples }, null, 1),
  );
}
