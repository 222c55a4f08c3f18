/**
 * Leaving the process while native code may still run on other threads.
 *
 * `Deno.exit` ends in libc's `exit()`, which runs the C++ static destructors of every loaded
 * library, libonnxruntime's among them (its logger, its operator-schema and kernel registries and
 * the mutexes guarding them). A thread still inside ONNX Runtime at that moment (a session still
 * loading, a run that never returns, in a Worker that was terminated because it stopped answering)
 * then uses what was just destroyed, and the process dies with SIGSEGV instead of its exit code:
 * measured here, 7 of 16 Ctrl-C's while eight Workers loaded their sessions. libc's `_exit()` ends
 * the process without running those destructors: the kernel stops every thread at once.
 *
 * Whoever leaves a native call behind (the coordinator, when it terminates a Worker that did not
 * close) says so with {@link noteStrandedNativeCall}; {@link exitProcess} then leaves through
 * `_exit`. Standard output and error need no flush first: Deno writes them unbuffered.
 *
 * @module
 */

import { exitImmediately } from "./libc.ts";

const stranded: string[] = [];

/**
 * Record that a thread of this process may still be inside a native call that uses a library's
 * global state (a Worker terminated while it did not answer): from now on {@link exitProcess}
 * leaves through `_exit`.
 *
 * @param what Who was left behind, for {@link strandedNativeCalls}.
 */
export function noteStrandedNativeCall(what: string): void {
  stranded.push(what);
}

/** What {@link noteStrandedNativeCall} recorded in this realm, oldest first. */
export function strandedNativeCalls(): readonly string[] {
  return stranded;
}

/** Options for {@link exitProcess}. */
export interface ExitOptions {
  /**
   * Leave through `_exit` even if nothing was recorded as stranded: a forced exit (a second
   * Ctrl-C) while native calls may be running.
   *
   * @default {false}
   */
  now?: boolean;
}

/**
 * End the process with `code`: through `Deno.exit`, or through libc's `_exit` (no static
 * destructors) when a native call may still be running on another thread (see the module doc)
 * or when `options.now` asks for it. Falls back to `Deno.exit` where `_exit` cannot be reached
 * (needs `--allow-ffi`).
 *
 * @param code The exit status.
 * @param options See {@link ExitOptions}.
 */
export function exitProcess(code: number, options: ExitOptions = {}): never {
  if (options.now || stranded.length > 0) exitImmediately(code);
  Deno.exit(code);
}
