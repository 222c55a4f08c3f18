/**
 * Usage texts.
 *
 * @module
 */

import type { CommandName } from "./args.ts";

/** The overview printed by `parastep --help`. */
export const USAGE = `parastep: step-parallel diffusion sampling (ParaStep) on ONNX Runtime

Usage:
  parastep <command> [flags]

Commands:
  info      Show ONNX Runtime, its execution providers, CPU cores and the models found
  help      Show help for a command

Global flags:
  -h, --help       Show help
  -V, --version    Show the version
  -v, --verbose    Let ONNX Runtime log warnings (default: errors only)

Environment:
  PARASTEP_ORT_LIB   Path of libonnxruntime to load (default: beside the executable,
                     then node_modules/onnxruntime-node of this checkout)
  PARASTEP_MODELS    Folder holding model folders (default: models/ of this checkout)

Run 'parastep help <command>' for a command's flags.`;

const COMMAND_USAGE: Readonly<Record<CommandName, string>> = {
  info: `Usage: parastep info [--json] [--verbose]

Shows the ONNX Runtime library in use (path, version, build), the execution
providers compiled into it and whether each can run here, the one '--ep auto'
would pick, the CPU cores, and the model folders found.

Flags:
  --json          Print the same as JSON
  -v, --verbose   Let ONNX Runtime log warnings`,
};

/** The usage text for `command`, or the overview. */
export function usage(command?: CommandName): string {
  return command === undefined ? USAGE : COMMAND_USAGE[command];
}
