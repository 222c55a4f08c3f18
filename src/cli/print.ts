/**
 * Printing results to stdout, where a failure (a full disk, a reader that went away) is one line
 * and exit code 1 rather than a stack trace, or silence.
 *
 * @module
 */

const encoder = new TextEncoder();

/** Standard output could not be written. Exit code 1. */
export class StdoutError extends Error {
  override name = "StdoutError";

  /** @param reason Why, one line. */
  constructor(reason: string, cause: unknown) {
    super(`Cannot write to standard output: ${reason}`, { cause });
  }
}

/**
 * Writes `text` and a newline to stdout, all of it.
 *
 * @throws {StdoutError} when stdout fails (`console.log` would throw a raw error on a full disk
 *   and drop the text silently on a closed pipe)
 */
export function printLine(text: string): void {
  const bytes = encoder.encode(`${text}\n`);
  try {
    for (let off = 0; off < bytes.length;) off += Deno.stdout.writeSync(bytes.subarray(off));
  } catch (e) {
    throw new StdoutError(stdoutReason(e), e);
  }
}

/** Writes `text` and a newline to stderr; if even that fails there is nobody left to tell. */
export function printErrorLine(text: string): void {
  const bytes = encoder.encode(`${text}\n`);
  try {
    for (let off = 0; off < bytes.length;) off += Deno.stderr.writeSync(bytes.subarray(off));
  } catch {
    // stderr is gone too; the exit code still says what happened.
  }
}

function stdoutReason(e: unknown): string {
  if (e instanceof Deno.errors.BrokenPipe) return "the reader closed it (broken pipe)";
  const code = (e as { code?: unknown } | null)?.code;
  if (code === "ENOSPC") return "no space left on the device";
  if (code === "EFBIG") return "the file is larger than this file system or process allows";
  const message = e instanceof Error ? e.message : String(e);
  return message.split("\n")[0]!;
}
