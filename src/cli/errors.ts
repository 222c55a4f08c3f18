/**
 * Turning errors into one line and an exit code: the only place that does.
 *
 * @module
 */

import { OrtError, OrtLoadError } from "../../ffi/mod.ts";
import { WriteFileError } from "../io/atomic.ts";
import { ManifestError } from "../models/manifest.ts";
import { ModelNotFoundError } from "../models/model.ts";
import { RankError } from "../parastep/coordinator.ts";
import { SamplerError } from "../parastep/rounds.ts";
import { ExchangeError } from "../parastep/transport.ts";
import { OutputPathError } from "./output.ts";
import { StdoutError } from "./print.ts";

/** Exit code for a failure while running. */
export const EXIT_FAILURE = 1;
/** Exit code for a command line or input that cannot be used. */
export const EXIT_USAGE = 2;
/** Exit code after Ctrl-C, as shells report SIGINT (128 + 2). */
export const EXIT_INTERRUPTED = 130;

/** The user pressed Ctrl-C. */
export class InterruptedError extends Error {
  override name = "InterruptedError";

  constructor() {
    super("Interrupted (Ctrl-C): stopped cleanly, nothing was written");
  }
}

function oneLine(message: string): string {
  return message.split("\n").map((l) => l.trim()).filter((l) => l !== "").join(" ");
}

/**
 * The message and exit code for `e`. Known errors give their message alone;
 * anything else also gives its stack, since it is a bug worth reporting.
 */
export function describeError(e: unknown): { message: string; exitCode: number } {
  if (e instanceof InterruptedError) return { message: e.message, exitCode: EXIT_INTERRUPTED };
  if (
    e instanceof ManifestError || e instanceof ModelNotFoundError || e instanceof OutputPathError
  ) {
    return { message: e.message, exitCode: EXIT_USAGE };
  }
  if (
    e instanceof OrtLoadError || e instanceof OrtError || e instanceof RankError ||
    e instanceof SamplerError || e instanceof ExchangeError || e instanceof WriteFileError ||
    e instanceof StdoutError
  ) {
    // One line: ORT's own messages can run over several (`--verbose` lets ORT log them whole).
    return { message: oneLine(e.message), exitCode: EXIT_FAILURE };
  }
  // A NATS server that cannot be reached or refuses the credentials (src/parastep/nats/connect.ts,
  // matched by name so that runs on one host never load the NATS client).
  if (e instanceof Error && e.name === "NatsConnectError") {
    return { message: e.message, exitCode: EXIT_FAILURE };
  }
  // Values out of range are what request checks throw; a TypeError is a bug and keeps its stack.
  if (e instanceof RangeError) return { message: e.message, exitCode: EXIT_USAGE };
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return { message: e.message, exitCode: EXIT_FAILURE };
  }
  if (e instanceof Error) {
    return { message: `${e.message}\n${e.stack ?? ""}`, exitCode: EXIT_FAILURE };
  }
  return { message: String(e), exitCode: EXIT_FAILURE };
}
