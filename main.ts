/**
 * parastep: step-parallel diffusion sampling (ParaStep) on ONNX Runtime.
 *
 * The CLI entry: parse, dispatch, print, exit. Run with
 * `deno task info` or see `parastep --help`.
 *
 * @module
 */

import denoConfig from "./deno.json" with { type: "json" };
import { exitProcess } from "./ffi/exit.ts";
import { removePendingWrites } from "./src/io/atomic.ts";
import { type Command, parseCommand, UsageError } from "./src/cli/args.ts";
import { describeError, EXIT_INTERRUPTED, InterruptedError } from "./src/cli/errors.ts";
import { usage } from "./src/cli/help.ts";
import { formatBench, runBench } from "./src/cli/bench.ts";
import { runGen } from "./src/cli/gen.ts";
import { runInfo } from "./src/cli/info.ts";

/** The version printed by `--version` and `info`. */
export const VERSION: string = denoConfig.version;

/**
 * Runs the CLI with `args` and returns the exit code: 0 success, 1 a failure
 * while running, 2 a command line or input that cannot be used.
 */
export async function main(args: string[]): Promise<number> {
  let command: Command;
  try {
    command = parseCommand(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(
      e.showUsage
        ? `parastep: ${e.message}\n\n${usage(e.command)}`
        : `parastep: ${e.message} (see 'parastep help${e.command ? ` ${e.command}` : ""}')`,
    );
    return 2;
  }
  try {
    switch (command.kind) {
      case "help":
        console.log(usage(command.topic));
        return 0;
      case "version":
        console.log(`parastep ${VERSION}`);
        return 0;
      case "info":
        runInfo(command, VERSION);
        return 0;
      case "gen": {
        const { line } = await withInterrupt((signal) => runGen(command, { signal }));
        console.log(line);
        return 0;
      }
      case "bench": {
        const report = await withInterrupt((signal) => runBench(command, { signal }));
        console.log(formatBench(report));
        return 0;
      }
      default: {
        const _exhaustive: never = command;
        return _exhaustive;
      }
    }
  } catch (e) {
    const { message, exitCode } = describeError(e);
    console.error(`parastep: ${message}`);
    return exitCode;
  }
}

/** The line a second Ctrl-C prints before the process ends at once. */
export const FORCED_INTERRUPT_MESSAGE =
  "Interrupted (Ctrl-C twice): stopped at once, nothing was written";

/**
 * How long after Ctrl-C the run may take to stop by itself before the process leaves anyway.
 * Workers cancel their model runs within milliseconds, but a session load can only be cancelled
 * between ONNX Runtime's passes, and some passes of a big model take seconds.
 */
export const INTERRUPT_GRACE_MS = 3000;

/** Options for {@linkcode withInterrupt}. */
export interface InterruptOptions {
  /**
   * Milliseconds after the first Ctrl-C before the process ends on its own (see below).
   * @default {INTERRUPT_GRACE_MS}
   */
  graceMs?: number;
}

/**
 * Runs `task` with a signal that Ctrl-C (SIGINT) aborts, so a long run stops
 * cleanly (workers shut down, no file written) instead of dying mid-write.
 *
 * The process does not wait long for that: if the task has not settled
 * `graceMs` after Ctrl-C, or at a second Ctrl-C, it prints one line, removes
 * the temporary files of writes in progress and ends at once with exit code
 * 130 through `_exit` (ffi/exit.ts), which is safe with Workers still inside
 * ONNX Runtime (a session still loading, say), where `Deno.exit` is not.
 */
export async function withInterrupt<T>(
  task: (signal: AbortSignal) => Promise<T>,
  options: InterruptOptions = {},
): Promise<T> {
  const controller = new AbortController();
  let grace: ReturnType<typeof setTimeout> | undefined;
  const leaveNow = (message: string) => {
    console.error(`parastep: ${message}`);
    removePendingWrites();
    exitProcess(EXIT_INTERRUPTED, { now: true });
  };
  const onInterrupt = () => {
    if (controller.signal.aborted) return leaveNow(FORCED_INTERRUPT_MESSAGE);
    const interrupted = new InterruptedError();
    controller.abort(interrupted);
    grace = setTimeout(() => leaveNow(interrupted.message), options.graceMs ?? INTERRUPT_GRACE_MS);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    return await task(controller.signal);
  } finally {
    clearTimeout(grace);
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
}

if (import.meta.main) {
  // Not Deno.exit: a Worker left inside ONNX Runtime must not see its globals destroyed.
  exitProcess(await main(Deno.args));
}
