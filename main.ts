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
import { type Command, parseCommand, UsageError } from "./src/cli/args.ts";
import { describeError } from "./src/cli/errors.ts";
import { withInterrupt } from "./src/cli/interrupt.ts";
import { usage } from "./src/cli/help.ts";
import { formatBench, runBench } from "./src/cli/bench.ts";
import { formatBenchE2e, runBenchE2e } from "./src/cli/bench_e2e.ts";
import { runGen } from "./src/cli/gen.ts";
import { runInfo } from "./src/cli/info.ts";
import { printErrorLine, printLine } from "./src/cli/print.ts";

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
    printErrorLine(
      `parastep: ${e.message} (see 'parastep ${e.command ? `help ${e.command}` : "--help"}')`,
    );
    return 2;
  }
  try {
    switch (command.kind) {
      case "help":
        printLine(usage(command.topic));
        return 0;
      case "version":
        printLine(`parastep ${VERSION}`);
        return 0;
      case "info":
        if (command.nats !== undefined) {
          const { runInfoNats } = await import("./src/cli/serve.ts");
          await runInfoNats({ ...command, nats: command.nats });
        } else runInfo(command, VERSION);
        return 0;
      case "serve": {
        const { runServe } = await import("./src/cli/serve.ts");
        return await runServe(command, VERSION);
      }
      case "gen": {
        const { line, exitCode } = await withInterrupt((signal) =>
          runGen(command, { signal, onLine: printLine })
        );
        printLine(line);
        return exitCode;
      }
      case "bench": {
        if (command.e2e) {
          const report = await withInterrupt((signal) => runBenchE2e(command, { signal }));
          printLine(formatBenchE2e(report));
          return 0;
        }
        const report = await withInterrupt((signal) => runBench(command, { signal }));
        printLine(formatBench(report));
        return 0;
      }
      default: {
        const _exhaustive: never = command;
        return _exhaustive;
      }
    }
  } catch (e) {
    const { message, exitCode } = describeError(e);
    printErrorLine(`parastep: ${message}`);
    return exitCode;
  }
}

if (import.meta.main) {
  // Not Deno.exit: a Worker left inside ONNX Runtime must not see its globals destroyed.
  exitProcess(await main(Deno.args));
}
