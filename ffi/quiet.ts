/**
 * Silencing native code that writes to stderr behind ORT's logger.
 *
 * Dawn (inside ORT's WebGPU provider) prints its adapter warnings with
 * `fprintf(stderr, ...)`, e.g. "Warning: maxDynamicUniformBuffersPerPipelineLayout
 * artificially reduced ..." on Mesa's lavapipe or "Warning: vkCreateInstance: Found no
 * drivers!" without a Vulkan driver, whatever log level ORT was given.
 * {@linkcode withQuietStderr} points file descriptor 2 at `/dev/null` for the
 * duration of one synchronous native call and restores it afterwards.
 *
 * File descriptors belong to the process: while a call runs silenced, every
 * thread's stderr goes to `/dev/null`. Callers keep the window to one native
 * call, and the WebGPU calls that need it are serialised process-wide (see
 * gate.ts), so two windows never overlap.
 *
 * @module
 */

const LIBC: Partial<Record<typeof Deno.build.os, string>> = {
  linux: "libc.so.6",
  darwin: "libSystem.B.dylib",
};

const SYMBOLS = {
  dup: { parameters: ["i32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

const STDERR = 2;
/** `O_WRONLY`, the same on Linux and macOS. */
const O_WRONLY = 1;

let libc: Deno.DynamicLibrary<typeof SYMBOLS> | null | undefined;

function openLibc(): Deno.DynamicLibrary<typeof SYMBOLS> | null {
  if (libc !== undefined) return libc;
  const file = LIBC[Deno.build.os];
  try {
    libc = file === undefined ? null : Deno.dlopen(file, SYMBOLS);
  } catch {
    libc = null;
  }
  return libc;
}

/**
 * Runs `fn` with file descriptor 2 pointed at `/dev/null` when `quiet`, then
 * restores it (also when `fn` throws). Where the C library cannot be opened,
 * `fn` runs unsilenced.
 */
export function withQuietStderr<T>(quiet: boolean, fn: () => T): T {
  const restore = quiet ? silenceStderr() : null;
  try {
    return fn();
  } finally {
    restore?.();
  }
}

/**
 * {@linkcode withQuietStderr} for an asynchronous `fn` (a nonblocking native call): fd 2 stays
 * pointed at `/dev/null` until `fn` settles, so the process's other writes to stderr meanwhile are
 * lost too; callers keep such windows short and only when not verbose.
 */
export async function withQuietStderrAsync<T>(quiet: boolean, fn: () => Promise<T>): Promise<T> {
  const restore = quiet ? silenceStderr() : null;
  try {
    return await fn();
  } finally {
    restore?.();
  }
}

/** Points fd 2 at `/dev/null`; returns what restores it, or null where that cannot be done. */
function silenceStderr(): (() => void) | null {
  const c = openLibc();
  if (c === null) return null;
  const saved = c.symbols.dup(STDERR);
  if (saved < 0) return null;
  const devnull = c.symbols.open(new TextEncoder().encode("/dev/null\0"), O_WRONLY);
  if (devnull < 0 || c.symbols.dup2(devnull, STDERR) < 0) {
    if (devnull >= 0) c.symbols.close(devnull);
    c.symbols.close(saved);
    return null;
  }
  c.symbols.close(devnull);
  return () => {
    c.symbols.dup2(saved, STDERR);
    c.symbols.close(saved);
  };
}
