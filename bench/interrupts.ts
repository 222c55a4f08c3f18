/**
 * Ctrl-C at random moments during `parastep gen`: how the process ends. Runs `gen` (default
 * `--gpus 8 --ep cpu`, the embedded tiny model, 900 steps so that the denoising loop outlasts the
 * latest interrupt) `--runs` times, sends SIGINT after a delay drawn uniformly from
 * `[--min, --max]` seconds (session opening included; the graph cache is the user's, or
 * `$PARASTEP_CACHE_DIR`: a fresh folder makes the first run cold), and reports per run the delay, the exit code, the seconds from the
 * signal to the exit, and whether stderr was the one expected line and no file was left.
 *
 * A correct engine gives exit code 130 every time; 139 is a crash (SIGSEGV). A Ctrl-C in the first
 * few hundred milliseconds, before parastep has started listening for it, ends the process by the
 * signal's default action: also 130 as a shell reports it, without the message (marked "killed by
 * SIGINT").
 *
 * Usage: deno run -A bench/interrupts.ts [--runs 16] [--gpus 8] [--min 0.2] [--max 4]
 *   [--seed 1] [--main PATH/main.ts] [--json PATH]
 *
 * `--main` runs another checkout's main.ts (e.g. the code before a fix).
 *
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "16" },
    gpus: { type: "string", default: "8" },
    min: { type: "string", default: "0.2" },
    max: { type: "string", default: "4" },
    seed: { type: "string", default: "1" },
    main: { type: "string", default: new URL("../main.ts", import.meta.url).pathname },
    json: { type: "string" },
  },
});
const runs = Number(values.runs);
const [min, max] = [Number(values.min), Number(values.max)];
if (!Number.isInteger(runs) || runs < 1 || !(min >= 0) || !(max >= min)) {
  console.error("interrupts: --runs must be an integer >= 1 and 0 <= --min <= --max");
  Deno.exit(2);
}

/** A small seeded generator (mulberry32), so a set of delays can be drawn again. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const EXPECTED = "parastep: Interrupted (Ctrl-C): stopped cleanly, nothing was written";
const next = random(Number(values.seed));
const results = [];
for (let run = 0; run < runs; run++) {
  const delayS = min + (max - min) * next();
  const dir = await Deno.makeTempDir({ prefix: "parastep-interrupts-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      values.main,
      "gen",
      "--prompt",
      "x",
      "--ep",
      "cpu",
      "--gpus",
      values.gpus,
      "--steps",
      "900",
      "--out",
      `${dir}/x.wav`,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  await new Promise((r) => setTimeout(r, delayS * 1000));
  const signalled = performance.now();
  let early = false;
  try {
    child.kill("SIGINT");
  } catch {
    early = true; // the run finished before the signal: a longer run or a shorter --max is needed
  }
  const [status, stderr] = await Promise.all([child.status, new Response(child.stderr).text()]);
  const exitS = (performance.now() - signalled) / 1000;
  const left = [...Deno.readDirSync(dir)].map((e) => e.name);
  await Deno.remove(dir, { recursive: true });
  const result = {
    delayS: Number(delayS.toFixed(2)),
    code: status.code,
    signal: status.signal,
    exitS: Number(exitS.toFixed(2)),
    oneLine: stderr.trimEnd() === EXPECTED,
    filesLeft: left.length,
    finishedBeforeSignal: early,
  };
  results.push(result);
  console.log(
    `run ${String(run + 1).padStart(2)}: Ctrl-C at ${result.delayS.toFixed(2)} s -> exit ${
      String(result.code).padStart(3)
    } after ${result.exitS.toFixed(2)} s${
      status.signal !== null
        ? `, killed by ${status.signal}`
        : result.oneLine
        ? ""
        : `, stderr: ${stderr.trim()}`
    }${left.length ? `, left: ${left.join(", ")}` : ""}${
      early ? " (finished before the signal: lower --max)" : ""
    }`,
  );
}
const codes = results.map((r) => r.code);
console.log(`exit codes: ${codes.join(" ")}`);
console.log(
  `130: ${codes.filter((c) => c === 130).length} of ${runs}; crashes (139): ${
    codes.filter((c) => c === 139).length
  }; longest signal-to-exit ${Math.max(...results.map((r) => r.exitS)).toFixed(2)} s`,
);
if (values.json) {
  await Deno.writeTextFile(values.json, JSON.stringify({ main: values.main, results }, null, 2));
}
