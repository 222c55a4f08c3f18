/**
 * One table from several `gpu-check.json` files (bench/gpu/run.sh): for each
 * model, execution provider and configuration, the denoiser's time per call,
 * the loop's time and its speedup over the same provider's sequential loop,
 * and the agreement with the CPU's output of the same configuration.
 *
 * Usage: deno run --allow-read bench/gpu/summary.ts LABEL=gpu-check.json...
 *
 * @module
 */

/** One row of `gpu-check.json`'s `results` (written by bench/gpu_check.ts). */
export interface CheckResult {
  ep: string;
  config: string;
  medianMs: number;
  stepMs: number;
  loadMs: number;
  calls: number;
  exchangeMsPerRound: number;
  qualityVsCpu: { name: string; value: number | null };
  relErrorVsCpu: number | null;
}

/** `gpu-check.json`. */
export interface CheckFile {
  providers: { ep: string; ok: boolean; reason?: string }[];
  results: CheckResult[];
}

function fixed(v: number | null | undefined, digits: number): string {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  return Number.isFinite(v) ? v.toFixed(digits) : "inf";
}

/** The markdown table for `files` (label, parsed file or why it is missing), in order. */
export function summarize(files: readonly [string, CheckFile | string][]): string {
  const lines = [
    "| model | EP | config | ms per call | loop ms | speedup vs sequential | calls | exchange ms/round | vs CPU | rel. error vs CPU |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  const notes: string[] = [];
  for (const [label, file] of files) {
    if (typeof file === "string") {
      lines.push(`| ${label} | - | ${file} | | | | | | | |`);
      continue;
    }
    for (const p of file.providers) {
      if (!p.ok && p.ep !== "webgpu") notes.push(`${label}: ${p.ep} unavailable: ${p.reason}`);
    }
    for (const r of file.results) {
      const sequential = file.results.find((s) => s.ep === r.ep && s.config === "sequential");
      const speedup = sequential ? sequential.medianMs / r.medianMs : NaN;
      const q = r.qualityVsCpu;
      lines.push(
        `| ${label} | ${r.ep} | ${r.config} | ${fixed(r.stepMs, 2)} | ${fixed(r.medianMs, 1)} | ${
          fixed(speedup, 2)
        } | ${r.calls} | ${fixed(r.exchangeMsPerRound, 2)} | ${
          r.ep === "cpu" ? "reference" : `${q.name} ${fixed(q.value, 1)}`
        } | ${r.relErrorVsCpu === null ? "-" : r.relErrorVsCpu.toExponential(2)} |`,
      );
    }
  }
  return [...lines, ...notes.map((n) => `\n${n}`)].join("\n");
}

if (import.meta.main) {
  const files: [string, CheckFile | string][] = Deno.args.map((arg) => {
    const eq = arg.indexOf("=");
    const [label, path] = eq < 0 ? [arg, arg] : [arg.slice(0, eq), arg.slice(eq + 1)];
    try {
      return [label, JSON.parse(Deno.readTextFileSync(path)) as CheckFile];
    } catch (e) {
      return [label, `no results (${path}: ${(e as Error).message.split("\n")[0]})`];
    }
  });
  console.log(summarize(files));
}
