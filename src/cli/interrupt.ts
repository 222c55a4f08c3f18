/**
 * Ctrl-C for the CLI: stop the run cleanly, but never wait long for it.
 *
 * The first Ctrl-C aborts the run (workers cancel their model runs and session loads, nothing is
 * written). If the run has not stopped `graceMs` later, or at a second Ctrl-C, the process ends at
 * once with exit code 130 and one line, through libc's `_exit` (ffi/exit.ts): Workers may still be
 * inside ONNX Runtime (a session load cannot be cancelled in some of its passes), and `exit()`
 * would run ORT's static destructors under them.
 *
 * The main thread handles Ctrl-C only when its event loop runs, and it runs ONNX Runtime calls of
 * its own that block it for seconds with a big model (the text encoders and the decoder load
 * synchronously). A small backstop Worker therefore listens for Ctrl-C too, on its own thread, and
 * ends the process itself when the main thread has not done so shortly after it should have. A
 * shared state word decides who leaves, so exactly one line is printed.
 *
 * @module
 */

import { exitProcess } from "../../ffi/exit.ts";
import { libcCandidates } from "../../ffi/libc.ts";
import { removePendingWrites } from "../io/atomic.ts";
import { EXIT_INTERRUPTED, InterruptedError } from "./errors.ts";

/** The line a second Ctrl-C prints (after `parastep: `) before the process ends at once. */
export const FORCED_INTERRUPT_MESSAGE =
  "Interrupted (Ctrl-C twice): stopped at once, nothing was written";

/**
 * How long after Ctrl-C the run may take to stop by itself before the process leaves anyway.
 * Workers cancel their model runs within milliseconds, but a session load can only be cancelled
 * between ONNX Runtime's passes, and some passes of a big model take seconds.
 */
export const INTERRUPT_GRACE_MS = 3000;

/** How much later than the main thread the backstop acts, so a responsive main thread wins. */
const BACKSTOP_DELAY_MS = 250;

/** Options for {@linkcode withInterrupt}. */
export interface InterruptOptions {
  /**
   * Milliseconds after the first Ctrl-C before the process ends on its own.
   * @default {INTERRUPT_GRACE_MS}
   */
  graceMs?: number;
}

/** The shared state word: who, if anyone, is ending the process. */
const RUNNING = 0;
const FINISHING = 1;
const LEAVING = 2;

/**
 * The backstop, a Worker from a Blob (so that it needs no file of its own, also in a compiled
 * executable). It claims the state word before it prints, like the main thread.
 */
const BACKSTOP_SOURCE = `
let exit = null;
self.onmessage = ({ data }) => {
  const state = new Int32Array(data.state);
  for (const name of data.libc) {
    try {
      const lib = Deno.dlopen(name, { _exit: { parameters: ["i32"], result: "void" } });
      exit = (code) => lib.symbols._exit(code);
      break;
    } catch {
      // Try the next name.
    }
  }
  const leave = (line) => {
    if (exit === null || Atomics.compareExchange(state, 0, ${RUNNING}, ${LEAVING}) !== ${RUNNING}) {
      return;
    }
    console.error(line);
    exit(data.code);
  };
  let count = 0;
  Deno.addSignalListener("SIGINT", () => {
    count += 1;
    if (count === 1) setTimeout(() => leave(data.interrupted), data.graceMs + data.delayMs);
    else setTimeout(() => leave(data.forced), data.delayMs);
  });
};
`;

/** Start the backstop, or `null` where it cannot end the process (no FFI permission). */
function startBackstop(state: Int32Array, graceMs: number): Worker | null {
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
  const url = URL.createObjectURL(new Blob([BACKSTOP_SOURCE], { type: "text/javascript" }));
  try {
    const worker = new Worker(url, { type: "module", name: "parastep interrupt backstop" });
    worker.postMessage({
      state: state.buffer,
      libc: libcCandidates(),
      code: EXIT_INTERRUPTED,
      graceMs,
      delayMs: BACKSTOP_DELAY_MS,
      interrupted: `parastep: ${new InterruptedError().message}`,
      forced: `parastep: ${FORCED_INTERRUPT_MESSAGE}`,
    });
    return worker;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/**
 * Runs `task` with a signal that Ctrl-C (SIGINT) aborts, so a long run stops cleanly (workers
 * shut down, no file written) instead of dying mid-write.
 *
 * If the task has not settled `graceMs` after Ctrl-C, or at a second Ctrl-C, the process prints
 * one line, removes the temporary files of writes in progress and ends at once with exit code
 * 130, through `_exit` (see the module doc); also while the main thread is blocked in a native
 * call.
 *
 * @param task The run; it gets the signal.
 * @param options See {@linkcode InterruptOptions}.
 * @returns What `task` returns.
 */
export async function withInterrupt<T>(
  task: (signal: AbortSignal) => Promise<T>,
  options: InterruptOptions = {},
): Promise<T> {
  const graceMs = options.graceMs ?? INTERRUPT_GRACE_MS;
  const state = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
  const controller = new AbortController();
  const backstop = startBackstop(state, graceMs);
  let grace: ReturnType<typeof setTimeout> | undefined;
  const leaveNow = (message: string) => {
    if (Atomics.compareExchange(state, 0, RUNNING, LEAVING) !== RUNNING) return;
    console.error(`parastep: ${message}`);
    removePendingWrites();
    exitProcess(EXIT_INTERRUPTED, { now: true });
  };
  const onInterrupt = () => {
    if (controller.signal.aborted) return leaveNow(FORCED_INTERRUPT_MESSAGE);
    const interrupted = new InterruptedError();
    controller.abort(interrupted);
    grace = setTimeout(() => leaveNow(interrupted.message), graceMs);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    return await task(controller.signal);
  } finally {
    clearTimeout(grace);
    Deno.removeSignalListener("SIGINT", onInterrupt);
    if (Atomics.compareExchange(state, 0, RUNNING, FINISHING) !== RUNNING) {
      // The backstop is ending the process this very moment: say nothing more.
      await new Promise(() => {});
    }
    backstop?.terminate();
  }
}
