/**
 * The two C library functions the binding needs beyond ONNX Runtime: `dlopen`, to keep the ORT
 * library loaded for the life of the process, and `_exit`, to leave without running static
 * destructors (see exit.ts).
 *
 * @module
 */

/** `RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE` of the platform's `<dlfcn.h>`, where known. */
const PIN_FLAGS: Partial<Record<typeof Deno.build.os, number>> = {
  linux: 0x00002 | 0x00004 | 0x01000,
  darwin: 0x2 | 0x10 | 0x80,
};

const LIBC: Partial<Record<typeof Deno.build.os, string[]>> = {
  linux: ["libc.so.6", "libc.so"],
  darwin: ["libSystem.B.dylib"],
};

const SYMBOLS = {
  _exit: { parameters: ["i32"], result: "void" },
  dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
} as const;

/** The names libc goes by on this platform, most likely first (empty where unknown). */
export function libcCandidates(): string[] {
  return [...(LIBC[Deno.build.os] ?? [])];
}

let libc: Deno.DynamicLibrary<typeof SYMBOLS> | null | undefined;

/** libc in this realm, or `null` where it cannot be opened (another OS, no FFI permission). */
function open(): Deno.DynamicLibrary<typeof SYMBOLS> | null {
  if (libc !== undefined) return libc;
  libc = null;
  for (const name of libcCandidates()) {
    try {
      libc = Deno.dlopen(name, SYMBOLS);
      break;
    } catch {
      // Try the next name.
    }
  }
  return libc;
}

/**
 * Mark the already loaded library at `path` never to be unloaded (`RTLD_NODELETE`).
 *
 * Deno closes a realm's `Deno.dlopen` handles when the realm ends: when the last Worker that
 * opened ONNX Runtime is terminated, its thread would unload the library and run ORT's static
 * destructors, racing the rest of the process (measured here: SIGSEGV in `__cxa_finalize` or an
 * abort while the main thread exited). Pinned, the library stays until the process ends.
 *
 * @param path The path the library was opened by.
 * @returns Whether the library is pinned (false where libc or the flags are not known).
 */
export function pinLoadedLibrary(path: string): boolean {
  const flags = PIN_FLAGS[Deno.build.os];
  const lib = open();
  if (flags === undefined || lib === null) return false;
  const bytes = new TextEncoder().encode(path);
  const cPath = new Uint8Array(bytes.length + 1);
  cPath.set(bytes);
  // The handle is never closed: it holds a reference of its own besides the flag.
  return lib.symbols.dlopen(cPath, flags) !== null;
}

/**
 * libc's `_exit(code)`: ends the process at once, without atexit handlers or static destructors.
 *
 * @returns Only where `_exit` cannot be reached (then the caller must exit another way).
 */
export function exitImmediately(code: number): void {
  open()?.symbols._exit(code);
}
