import assert from "node:assert/strict";
import { parseCommand } from "../../src/cli/args.ts";
import { type BenchRow, runBench, speedupSvg } from "../../src/cli/bench.ts";
import { formatBenchE2e, runBenchE2e } from "../../src/cli/bench_e2e.ts";
import { MAIN, PERMISSIONS } from "../support/cli.ts";

const TINY = new URL("../../models/audioldm2-tiny", import.meta.url).pathname;

Deno.test("bench measures sequential, ParaStep and BatchStep and writes its JSON and plot", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const command = parseCommand([
      "bench",
      "--model",
      TINY,
      "--ep",
      "cpu",
      "--gpus",
      "1,2",
      "--steps",
      "9",
      "--runs",
      "1",
      "--json",
      `${dir}/bench.json`,
      "--plot",
      `${dir}/bench.svg`,
    ]);
    assert.equal(command.kind, "bench");
    if (command.kind !== "bench") return;
    const report = await runBench(command);
    const cores = navigator.hardwareConcurrency;
    const labels = report.rows.map((r) => r.config);
    assert.deepEqual(labels, [
      "sequential, 1 thread",
      ...(cores > 1 ? [`sequential, ${cores} threads`] : []),
      "ParaStep N=2",
      "ParaStep N=2, all-gather",
      "BatchStep L=2",
    ]);
    const [T, W] = [9, 5];
    const row = (label: string) => report.rows.find((r) => r.config === label)!;
    // parastep.md: W + ceil((T - W) / N) calls on the critical path; BatchStep W + ceil((T-1-W)/L) + 1.
    assert.equal(row("sequential, 1 thread").criticalPathCalls, T);
    assert.equal(row("ParaStep N=2").criticalPathCalls, W + Math.ceil((T - W) / 2));
    assert.equal(row("BatchStep L=2").criticalPathCalls, W + Math.ceil((T - 1 - W) / 2) + 1);
    assert.equal(row("ParaStep N=2").idealSpeedup, T / (W + Math.ceil((T - W) / 2)));
    // Bytes: the warm-up message (latents + guided eps), then per full round one guided eps and
    // one latents broadcast, each the latents' size.
    const x = 8 * 32 * 4 * 4;
    assert.equal(row("ParaStep N=2").bytesExchanged, 2 * x + Math.floor((T - W) / 2) * 2 * x);
    // Exchange is measured on the ParaStep row only: the two hops of a round took some time, and
    // single-device rows exchange nothing.
    const para = row("ParaStep N=2");
    assert.ok(
      (para.hopMs.latents ?? 0) > 0 && (para.hopMs.eps ?? 0) > 0,
      JSON.stringify(para.hopMs),
    );
    assert.ok(para.exchangeMsPerRound > 0 && Number.isFinite(para.exchangeMsPerRound));
    assert.deepEqual(row("sequential, 1 thread").hopMs, { latents: null, eps: null });
    assert.equal(row("BatchStep L=2").exchangeMsPerRound, 0);
    // All-gather: the same calls and output (so the same quality), and the same bytes but for the
    // latents broadcast that ends gather's last full round (T - W = 4 is two full rounds).
    const allGather = row("ParaStep N=2, all-gather");
    assert.equal(allGather.exchange, "allgather");
    assert.equal(para.exchange, "gather");
    assert.equal(allGather.criticalPathCalls, para.criticalPathCalls);
    assert.equal(allGather.bytesExchanged, para.bytesExchanged - x);
    assert.equal(allGather.quality["SNR dB"], para.quality["SNR dB"]);
    assert.equal(allGather.hopMs.latents, null); // no latents messages
    assert.ok((allGather.hopMs.eps ?? 0) > 0);
    assert.deepEqual(Object.keys(para.quality), ["SNR dB", "LSD dB", "mel PSNR dB"]);
    assert.equal(row("sequential, 1 thread").quality["SNR dB"], Infinity);
    assert.ok(
      Number.isFinite(row("ParaStep N=2").quality["SNR dB"]),
      "ParaStep's output differs from sequential",
    );
    const json = JSON.parse(
      await Deno.readTextFile(`${dir}/bench.json`),
      (_, v) => v === "Infinity" ? Infinity : v,
    );
    assert.deepEqual(json, report);
    const svg = await Deno.readTextFile(`${dir}/bench.svg`);
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    // N = 1 and N = 2 for ParaStep, N = 2 for all-gather, one BatchStep.
    assert.equal(svg.match(/<circle /g)?.length, 4);
    assert.match(svg, /ParaStep, all-gather \(measured\)/);
    assert.match(svg, /BatchStep, at N = L \(measured\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the speedup plot keeps every dot on the chart and lists only the series it draws", () => {
  const row = (over: Partial<BenchRow>): BenchRow => ({
    config: "x",
    mode: "parastep",
    devices: 2,
    threads: 1,
    medianMs: 1,
    runsMs: [1],
    speedup: 1.5,
    speedupVsAllCores: 1,
    idealSpeedup: 1.79,
    criticalPathCalls: 28,
    bytesExchanged: 0,
    rounds: 23,
    exchangeMsPerRound: 0,
    exchangeShareOfStep: 0,
    hopMs: { latents: null, eps: null },
    overheadMsPerRound: 0,
    quality: { "SNR dB": 70, "LSD dB": 0, "mel PSNR dB": 90 },
    ...over,
  });
  const svg = speedupSvg({
    model: "m",
    family: "audioldm2",
    steps: 50,
    warmup: 5,
    latentDims: [1, 8, 64, 16],
    cpuCores: 2,
    runs: 1,
    stepMs: 40,
    // Only gather rows, and a BatchStep stride (4) beyond the largest N (2).
    rows: [
      row({ exchange: "gather" }),
      row({ mode: "batchstep", devices: 1, stride: 4, speedup: 1.1 }),
    ],
    date: "",
    deno: "",
  });
  const width = Number(svg.match(/width="(\d+)"/)![1]);
  const xs = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].map((m) => Number(m[1]));
  assert.equal(xs.length, 3); // ParaStep at N = 1 and 2, BatchStep at N = L = 4
  assert.ok(xs.every((x) => x > 0 && x < width), JSON.stringify(xs));
  assert.doesNotMatch(svg, /all-gather/);
  assert.match(svg, /BatchStep, at N = L/);
});

Deno.test("Ctrl-C during bench stops cleanly: exit 130 and one line", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...PERMISSIONS,
      MAIN,
      "bench",
      "--model",
      TINY,
      "--ep",
      "cpu",
      "--steps",
      "900",
      "--runs",
      "1",
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Loading, encoding and the first configurations' 900 steps take longer than this.
  await new Promise((r) => setTimeout(r, 4000));
  child.kill("SIGINT");
  const { code, stdout, stderr } = await child.output();
  const message = new TextDecoder().decode(stderr).trim();
  assert.equal(code, 130, message);
  assert.equal(message, "parastep: Interrupted (Ctrl-C): stopped cleanly, nothing was written");
  assert.equal(new TextDecoder().decode(stdout), "");
});

Deno.test("bench --e2e times fresh gen processes on a cold, then a warm graph cache, and their outputs agree", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const command = parseCommand([
      "bench",
      "--e2e",
      "--model",
      TINY,
      "--ep",
      "cpu",
      "--gpus",
      "1,2",
      "--steps",
      "8",
      "--runs",
      "1",
      "--json",
      `${dir}/e2e.json`,
    ]);
    assert.equal(command.kind === "bench" && command.e2e, true);
    if (command.kind !== "bench") return;
    const report = await runBenchE2e(command);
    assert.deepEqual(report.rows.map((r) => [r.devices, r.mode]), [
      [1, "sequential"],
      [2, "ParaStep"],
    ]);
    for (const row of report.rows) {
      assert.equal(row.warm.length, 1);
      assert.ok(row.sameOutput, `gen --gpus ${row.devices}: cold and warm outputs differ`);
      for (const run of [row.cold, ...row.warm]) {
        // The process holds the whole generation and Deno's start besides.
        assert.ok(run.processMs > run.timings.totalMs);
        assert.ok(run.timings.denoiseMs > 0 && run.timings.loadMs > 0);
      }
    }
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/e2e.json`)).rows, report.rows);
    const table = formatBenchE2e(report);
    assert.match(table, /\| 2 \(ParaStep\) \| warm \|/);
    assert.match(table, /Warm, end to end: gen --gpus 2 takes [\d.]+x the time of gen --gpus 1/);
    // What --e2e cannot do is refused while parsing.
    assert.throws(
      () => parseCommand(["bench", "--e2e", "--plot", "x.svg"]),
      /--plot does not apply to --e2e/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
