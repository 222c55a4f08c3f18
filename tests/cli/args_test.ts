import assert from "node:assert/strict";
import { parseCommand, UsageError } from "../../src/cli/args.ts";

Deno.test("parseCommand reads help, version and info", () => {
  assert.deepEqual(parseCommand([]), { kind: "help" });
  assert.deepEqual(parseCommand(["--help"]), { kind: "help" });
  assert.deepEqual(parseCommand(["-V"]), { kind: "version" });
  assert.deepEqual(parseCommand(["help", "info"]), { kind: "help", topic: "info" });
  assert.deepEqual(parseCommand(["info", "--help"]), { kind: "help", topic: "info" });
  assert.deepEqual(parseCommand(["info"]), { kind: "info", json: false, verbose: false });
  assert.deepEqual(parseCommand(["--verbose", "info", "--json"]), {
    kind: "info",
    json: true,
    verbose: true,
  });
});

Deno.test("parseCommand refuses unknown commands, flags and arguments with a usage error", () => {
  const refuses = (args: string[], pattern: RegExp, command?: string) =>
    assert.throws(
      () => parseCommand(args),
      (e: unknown) => e instanceof UsageError && pattern.test(e.message) && e.command === command,
    );
  refuses(["frobnicate"], /Unknown command 'frobnicate'/);
  refuses(["help", "frobnicate"], /Unknown command 'frobnicate'/);
  refuses(["--bogus"], /^Unknown option '--bogus'$/);
  refuses(["info", "--bogus"], /^Unknown option '--bogus'$/, "info");
  refuses(["info", "extra"], /Unexpected argument 'extra'/, "info");
  // A flag given twice is refused, not silently overridden by the last.
  refuses(
    ["gen", "-p", "x", "--steps", "3", "--steps", "4"],
    /^--steps was given more than once/,
    "gen",
  );
  refuses(["gen", "--prompt", "x", "-p", "y"], /^--prompt was given more than once/, "gen");
  // A value that starts with a dash keeps node's hint.
  refuses(
    ["gen", "-p", "x", "--gpus", "-1"],
    /^--gpus needs a value: to give one that starts with a dash, write --gpus=-VALUE$/,
    "gen",
  );
});

Deno.test("parseCommand reads gen with defaults and every flag", () => {
  const gen = parseCommand(["gen", "--prompt", "rain"]);
  assert.equal(gen.kind, "gen");
  if (gen.kind !== "gen") return;
  assert.equal(gen.model, "audioldm2-tiny");
  assert.deepEqual(gen.flags, { prompt: "rain" });
  assert.equal(gen.gpus, 1);
  assert.equal(gen.mode, "parastep");
  assert.equal(gen.ep, "auto");
  assert.equal(gen.dtype, "auto");
  assert.equal(gen.seed, 0);
  assert.equal(gen.steps, undefined);
  assert.equal(gen.exchange, undefined); // generate() then uses "gather"
  assert.equal(gen.graphCache, true);
  const full = parseCommand([
    "gen",
    "-m",
    "models/x",
    "-p",
    "wind",
    "--negative-prompt",
    "noise",
    "--steps",
    "50",
    "--guidance",
    "2.5",
    "--duration",
    "4",
    "--seed",
    "9",
    "--ep",
    "cuda",
    "--devices",
    "4",
    "--warmup",
    "3",
    "--exchange",
    "allgather",
    "-o",
    "x.wav",
    "--spectrogram",
    "x.png",
    "--wav-format",
    "float32",
    "--threads",
    "2",
    "--dtype",
    "fp16",
    "--stall-timeout",
    "90",
    "--in-process",
    "--no-graph-cache",
    "--report",
    "x.json",
  ]);
  assert.deepEqual(full, {
    kind: "gen",
    model: "models/x",
    steps: 50,
    seed: 9,
    ep: "cuda",
    dtype: "fp16",
    gpus: 4,
    mode: "parastep",
    warmup: 3,
    stride: undefined,
    exchange: "allgather",
    out: "x.wav",
    prompts: undefined,
    report: "x.json",
    threads: 2,
    stallTimeout: 90,
    graphCache: false,
    inProcess: true,
    verbose: false,
    flags: {
      prompt: "wind",
      "negative-prompt": "noise",
      guidance: 2.5,
      duration: 4,
      spectrogram: "x.png",
      "wav-format": "float32",
    },
  });
  const batch = parseCommand(["gen", "-p", "x", "--mode", "batchstep", "--stride", "3"]);
  assert.equal(batch.kind === "gen" && batch.stride, 3);
});

Deno.test("parseCommand refuses flags that would do nothing with the others given", () => {
  const refuses = (args: string[], pattern: RegExp) =>
    assert.throws(
      () => parseCommand(args),
      (e: unknown) => e instanceof UsageError && pattern.test(e.message) && e.command === "gen",
    );
  refuses(
    ["gen", "-p", "x", "--exchange", "allgather"],
    /--exchange applies to ParaStep on several devices/,
  );
  refuses(
    ["gen", "-p", "x", "--gpus", "2", "--mode", "sequential", "--exchange", "gather"],
    /--exchange applies to ParaStep/,
  );
  refuses(["gen", "-p", "x", "--stride", "2"], /--stride applies to --mode batchstep only/);
  refuses(
    ["gen", "-p", "x", "--mode", "batchstep", "--gpus", "2"],
    /--mode batchstep runs on one device/,
  );
  // bench measures BatchStep and both exchanges, so it takes both flags.
  const bench = parseCommand(["bench", "--stride", "2", "--exchange", "gather"]);
  assert.equal(bench.kind, "bench");
});

Deno.test("parseCommand reads bench's device list", () => {
  const bench = parseCommand(["bench", "--gpus", "2, 1,2", "--runs", "5", "--json", "r.json"]);
  assert.equal(bench.kind, "bench");
  if (bench.kind !== "bench") return;
  assert.deepEqual(bench.gpus, [1, 2]);
  assert.equal(bench.runs, 5);
  assert.equal(bench.json, "r.json");
  assert.deepEqual((parseCommand(["bench"]) as { gpus: readonly number[] }).gpus, [1, 2]);
  // No --exchange: bench measures both; with it, that one.
  assert.equal((parseCommand(["bench"]) as { exchange?: string }).exchange, undefined);
  assert.equal(
    (parseCommand(["bench", "--exchange", "gather"]) as { exchange?: string }).exchange,
    "gather",
  );
});

Deno.test("bad flag values are one-line usage errors without the usage text", () => {
  const refuses = (args: string[], pattern: RegExp) =>
    assert.throws(
      () => parseCommand(args),
      (e: unknown) => e instanceof UsageError && pattern.test(e.message),
    );
  refuses(["gen", "-p", "x", "--steps", "ten"], /--steps: 'ten' is not an integer/);
  refuses(["gen", "-p", "x", "--steps", "2.5"], /--steps: '2.5' is not an integer/);
  refuses(["gen", "-p", "x", "--steps", "0"], /--steps: '0' is below 1: give an integer >= 1$/);
  // Negative and huge seeds are named for what they are, and quoted as given.
  refuses(["gen", "-p", "x", "--seed=-1"], /--seed: '-1' is below 0: give an integer >= 0$/);
  refuses(
    ["gen", "-p", "x", "--seed", "18446744073709551616"],
    /--seed: '18446744073709551616' is too large: give an integer up to 9007199254740991$/,
  );
  refuses(["gen", "-p", "x", "--guidance", "1e"], /--guidance: '1e' is not a number/);
  refuses(["gen", "-p", "x", "--stall-timeout", "0"], /--stall-timeout: '0' is not above 0/);
  refuses(["gen", "-p", "x", "--gpus", "0"], /--gpus: '0' is below 1: give an integer >= 1/);
  refuses(["gen", "-p", "x", "--gpus=-1"], /--gpus: '-1' is below 1: give an integer >= 1/);
  refuses(
    ["gen", "-p", "x", "--wav-format", "mp3"],
    /--wav-format: 'mp3' \(choose one of pcm16, float32\)/,
  );
  refuses(
    ["gen", "-p", "x", "--ep", "tpu"],
    /--ep: 'tpu' \(choose one of cpu, cuda, webgpu, auto\)/,
  );
  refuses(
    ["gen", "-p", "x", "--dtype", "float16"],
    /--dtype: 'float16' \(choose one of auto, fp32, fp16, bf16\)/,
  );
  refuses(["gen", "-p", "x", "--mode", "fast"], /--mode: 'fast'/);
  refuses(
    ["gen", "-p", "x", "--exchange", "ring"],
    /--exchange: 'ring' \(choose one of gather, allgather\)/,
  );
  refuses(["gen", "-p", "x", "--gpus", "2", "--devices", "2"], /not both/);
  refuses(["bench", "--gpus", "1,x"], /--gpus: 'x'/);
});
