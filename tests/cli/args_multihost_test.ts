import assert from "node:assert/strict";
import { parseCommand, UsageError } from "../../src/cli/args.ts";

const refuses = (args: string[], pattern: RegExp, command?: string) =>
  assert.throws(
    () => parseCommand(args),
    (e: unknown) => e instanceof UsageError && pattern.test(e.message) && e.command === command,
  );

Deno.test("parseCommand reads serve, info --nats and gen --nats", () => {
  assert.deepEqual(
    parseCommand([
      "serve",
      "--nats",
      "nats://h:4222",
      "--gpus",
      "4",
      "--ep",
      "cuda",
      "--name",
      "b",
    ]),
    {
      kind: "serve",
      url: "nats://h:4222",
      creds: undefined,
      gpus: 4,
      ep: "cuda",
      models: undefined,
      name: "b",
      verbose: false,
    },
  );
  assert.deepEqual(parseCommand(["info", "--nats", "nats://h", "--json"]), {
    kind: "info",
    json: true,
    verbose: false,
    nats: { url: "nats://h", creds: undefined },
  });
  const gen = parseCommand([
    "gen",
    "--nats",
    "nats://h",
    "--gpus",
    "3",
    "--hosts",
    "a, b",
    "--local-ranks",
    "2",
    "--on-rank-loss",
    "continue",
    "--rank-timeout",
    "2.5",
  ]);
  assert.ok(gen.kind === "gen");
  assert.deepEqual(gen.multihost, {
    url: "nats://h",
    creds: undefined,
    hosts: ["a", "b"],
    localRanks: 2,
    onRankLoss: "continue",
    rankTimeout: 2.5,
  });
  const replay = parseCommand(["gen", "--gpus", "3", "--in-process", "--replay-loss", "77:2"]);
  assert.ok(replay.kind === "gen");
  assert.deepEqual(replay.replayLoss, { step: 77, devices: 2 });
  const bench = parseCommand(["bench", "--simulate-step", "40", "--nats", "nats://h"]);
  assert.ok(bench.kind === "bench");
  assert.equal(bench.simulateStepMs, 40);
  assert.deepEqual(bench.nats, { url: "nats://h", creds: undefined });
});

Deno.test("multi-host flags that do nothing with the others are refused", () => {
  refuses(["serve"], /serve needs --nats URL/, "serve");
  refuses(["serve", "--nats", "x", "--name", "a.b"], /Invalid value for --name/, "serve");
  refuses(["gen", "--hosts", "a"], /--hosts applies with --nats URL/, "gen");
  refuses(["gen", "--nats-creds", "f"], /--nats-creds applies with --nats URL/, "gen");
  refuses(["gen", "--nats", "x", "--gpus", "2", "--local-ranks", "3"], /more than --gpus 2/, "gen");
  refuses(["gen", "--nats", "x", "--in-process"], /--nats or --in-process/, "gen");
  refuses(["gen", "--nats", "x", "--on-rank-loss", "retry"], /choose one of fail, continue/, "gen");
  refuses(["gen", "--gpus", "3", "--replay-loss", "7:2"], /applies with --in-process/, "gen");
  refuses(["gen", "--gpus", "3", "--in-process", "--replay-loss", "7:3"], /STEP:N/, "gen");
});
