/**
 * parastep: step-parallel diffusion sampling (ParaStep) on ONNX Runtime.
 *
 * The CLI entry: parse, dispatch, print, exit. Run with
 * `deno task info` or see `parastep --help`.
 *
 * @module
 */

import denoConfig from "./deno.json" with { type: "json" };
import { type Command, parseCommand, UsageError } from "./src/cli/args.ts";
import { describeError } from "./src/cli/errors.ts";
import { usage } from "./src/cli/help.ts";
import { runInfo } from "./src/cli/info.ts";

/** The version printed by `--version` and `info`. */
export const VERSION: string = denoConfig.version;

/**
 * Runs the CLI with `args` and returns the exit code: 0 success, 1 a failure
 * while running, 2 a command line or input that cannot be used.
 */
export function main(args: string[]): number {
  let command: Command;
  try {
    command = parseCommand(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`parastep: ${e.message}\n\n${usage(e.command)}`);
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

if (import.meta.main) {
  Deno.exit(main(Deno.args));
}
