/**
 * A command-line program for the exit tests: runs one generation of the stuck sampler
 * (workers_stuck_sampler.ts) on Workers the way `parastep gen` runs its engine (Ctrl-C through
 * `withInterrupt`, errors through `describeError`, the exit through `exitProcess`),
 * so a test can send it signals and check how the process ends.
 *
 * Usage: `deno run -A workers_stuck_cli.ts <load-async|load-sync|hang-run|block-main> [options]
 * [tag]`, options `{ devices, nodes, closeTimeoutMs, stallTimeoutMs, graceMs, hang }`; the
 * tag is ignored (a test finds the process by it).
 *
 * Standard output: one JSON object per line, `{ probe: { rank, event } }` for each announcement
 * of the sampler, `{ shutdown: [...] }` with the shutdown reports, `{ done: true }` on success.
 * Standard error: what `parastep` would print on failure.
 *
 * @module
 */

import { exitProcess } from "../../ffi/exit.ts";
import { Env, Session } from "../../ffi/mod.ts";
import { withInterrupt } from "../../src/cli/interrupt.ts";
import { describeError } from "../../src/cli/errors.ts";
import { runWorkers, type RunWorkersOptions } from "../../src/parastep/mod.ts";
import { slowLoadingModel, slowModel } from "../support/models.ts";
import { jsToyCond, jsToyX0 } from "./workers_js_sampler.ts";
import type { StuckInit } from "./workers_stuck_sampler.ts";

/** The options the program takes, as JSON in its second argument. */
export interface StuckCliOptions {
  /** Ranks. @default {2} */
  devices?: number;
  /** Nodes of the slow-loading model (`load-*`). @default {32000} */
  nodes?: number;
  /** `RunWorkersOptions.closeTimeoutMs`. */
  closeTimeoutMs?: number;
  /** `RunWorkersOptions.stallTimeoutMs`. */
  stallTimeoutMs?: number;
  /** `withInterrupt`'s grace after Ctrl-C. */
  graceMs?: number;
  /** `hang-run`: the rank and step that hang. @default {{ rank: 1, step: 3 }} */
  hang?: { rank: number; step: number };
}

const STEPS = 12;
const N_LATENT = 64;

/** What the program can get stuck on: the sampler's modes, or `block-main` (see below). */
type Mode = StuckInit["mode"] | "block-main";

async function run(mode: Mode, options: StuckCliOptions): Promise<number> {
  const devices = options.devices ?? 2;
  const probe = new BroadcastChannel(`stuck-probe-${crypto.randomUUID()}`);
  probe.onmessage = (event) => console.log(JSON.stringify({ probe: event.data }));
  const init: StuckInit = {
    mode: mode === "block-main" ? "load-sync" : mode,
    toy: { steps: STEPS, cond: jsToyCond(N_LATENT), guidance: 3.5 },
    // A minute or more of MatMuls on one core for the hung call; a slow load otherwise.
    model: mode === "hang-run" ? slowModel(2048, 600) : slowLoadingModel(options.nodes ?? 32000),
    hang: options.hang ?? { rank: 1, step: 3 },
    probe: probe.name,
  };
  const runOptions: RunWorkersOptions = {
    ep: "cpu",
    onShutdown: (reports) => console.log(JSON.stringify({ shutdown: reports })),
    ...(options.closeTimeoutMs === undefined ? {} : { closeTimeoutMs: options.closeTimeoutMs }),
    ...(options.stallTimeoutMs === undefined ? {} : { stallTimeoutMs: options.stallTimeoutMs }),
  };
  try {
    await withInterrupt<unknown>(
      (signal) =>
        mode === "block-main" ? blockMain(init.model) : runWorkers({
          plan: { steps: STEPS, warmup: 2, devices },
          module: new URL("./workers_stuck_sampler.ts", import.meta.url),
          init,
          x0: jsToyX0(N_LATENT),
        }, { ...runOptions, signal }),
      options.graceMs === undefined ? {} : { graceMs: options.graceMs },
    );
    console.log(JSON.stringify({ done: true }));
    return 0;
  } catch (e) {
    const { message, exitCode } = describeError(e);
    console.error(`parastep: ${message}`);
    return exitCode;
  } finally {
    probe.close();
  }
}

/**
 * `block-main`: the main thread itself loads the slow model with the blocking `Session.create`,
 * as `generate()` loads its encoders, so its event loop cannot hear Ctrl-C for many seconds.
 */
async function blockMain(model: Uint8Array): Promise<void> {
  console.log(JSON.stringify({ probe: { rank: -1, event: "blocking" } }));
  using env = Env.create();
  using _session = Session.create(env, model, { intraOpThreads: 1 });
  await Promise.resolve();
}

const MODES: readonly string[] = ["load-async", "load-sync", "hang-run", "block-main"];

if (import.meta.main) {
  const [mode, json] = Deno.args;
  if (mode === undefined || !MODES.includes(mode)) {
    console.error(`usage: workers_stuck_cli.ts <${MODES.join("|")}> [options JSON] [tag]`);
    Deno.exit(2);
  }
  exitProcess(await run(mode as Mode, JSON.parse(json ?? "{}")));
}
