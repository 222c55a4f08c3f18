/**
 * Finding, opening and checking the ONNX Runtime shared library, and the one
 * gate every C call goes through.
 *
 * The library is opened once per JavaScript realm (each Worker opens its own
 * handle; the dynamic linker shares the code) and is never unloaded: ORT keeps
 * threads and a default logger that must outlive every session, and a Worker's
 * handle is closed when the Worker ends, so the library is pinned
 * (`RTLD_NODELETE`, libc.ts) lest the last Worker to end unload it under the
 * rest of the process.
 *
 * @module
 */

import {
  OPTIONAL_ORT_FUNCTIONS,
  ORT_FUNCTIONS,
  type OrtFunctionName,
  REQUIRED_API_VERSION,
} from "./_defs.ts";
import { OrtError, OrtLoadError } from "./errors.ts";
import { pinLoadedLibrary } from "./libc.ts";

/** The environment variable that names the ONNX Runtime library to load. */
export const ORT_LIBRARY_ENV = "PARASTEP_ORT_LIB";

/**
 * The environment variable naming a folder prepared by `deno task setup:cuda --dir`: the CUDA
 * providers with a libonnxruntime beside them (ORT loads its providers from its own folder).
 */
export const CUDA_PROVIDERS_ENV = "PARASTEP_CUDA_PROVIDERS";

type Defs = typeof ORT_FUNCTIONS;
type FnDef<K extends OrtFunctionName> = {
  parameters: Defs[K]["parameters"];
  result: Defs[K]["result"];
};
/** Typed callers for every function of {@linkcode ORT_FUNCTIONS}. */
export type OrtApi = { [K in OrtFunctionName]: Deno.UnsafeFnPointer<FnDef<K>> };

/** An opened ONNX Runtime library and its function table. */
export interface OrtLibrary {
  /** Absolute or as-given path of the library that was opened. */
  readonly path: string;
  /** How the path was found. */
  readonly foundBy: "env" | "cuda-providers" | "beside-executable" | "npm-package";
  /** The library's version string, e.g. `1.30.0`. */
  readonly version: string;
  /** The OrtApi version requested from `GetApi`. */
  readonly apiVersion: number;
  /** ORT's build description (`GetBuildInfoString`), e.g. its git commit. */
  readonly buildInfo: string;
  /** Typed callers of the OrtApi functions. */
  readonly api: OrtApi;
  /** `GetTensorElementTypeAndShapeDataReference`, when the library has it (ORT >= 1.24). */
  readonly typeAndShape:
    | Deno.UnsafeFnPointer<
      {
        parameters: (typeof OPTIONAL_ORT_FUNCTIONS)["GetTensorElementTypeAndShapeDataReference"][
          "parameters"
        ];
        result: "pointer";
      }
    >
    | null;
  /** Nonblocking variant of `Run` (executes on a Deno worker thread). */
  readonly runNonblocking: Deno.UnsafeFnPointer<
    { parameters: Defs["Run"]["parameters"]; result: "pointer"; nonblocking: true }
  >;
  /** Nonblocking variant of `RunWithBinding`. */
  readonly runWithBindingNonblocking: Deno.UnsafeFnPointer<
    { parameters: Defs["RunWithBinding"]["parameters"]; result: "pointer"; nonblocking: true }
  >;
  /**
   * Nonblocking variant of `CreateSession`: the model loads on a Deno worker thread while the
   * calling thread's event loop runs (messages, timers, cancellation).
   */
  readonly createSessionNonblocking: Deno.UnsafeFnPointer<
    { parameters: Defs["CreateSession"]["parameters"]; result: "pointer"; nonblocking: true }
  >;
  /** Nonblocking variant of `CreateSessionFromArray`. */
  readonly createSessionFromArrayNonblocking: Deno.UnsafeFnPointer<
    {
      parameters: Defs["CreateSessionFromArray"]["parameters"];
      result: "pointer";
      nonblocking: true;
    }
  >;
  /**
   * `SessionOptionsSetLoadCancellationFlag`, when the library has it (ORT >= 1.22): safe to call
   * from one thread while a session loads with those options on another.
   */
  readonly setLoadCancellationFlag:
    | Deno.UnsafeFnPointer<
      {
        parameters: (typeof OPTIONAL_ORT_FUNCTIONS)["SessionOptionsSetLoadCancellationFlag"][
          "parameters"
        ];
        result: "pointer";
      }
    >
    | null;
}

const LIB_FILE: Partial<Record<typeof Deno.build.os, string>> = {
  linux: "libonnxruntime.so.1",
  darwin: "libonnxruntime.1.30.0.dylib",
  windows: "onnxruntime.dll",
};

const NPM_ARCH: Partial<Record<typeof Deno.build.arch, string>> = {
  x86_64: "x64",
  aarch64: "arm64",
};

/** Whether `path` is an existing regular file. */
export function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The folder part of `path`. */
export function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

/** The library file name for this platform. */
export function libraryFileName(): string {
  return LIB_FILE[Deno.build.os] ?? "libonnxruntime.so.1";
}

/**
 * The places searched for the library, in order: `$PARASTEP_ORT_LIB`, the one
 * in `$PARASTEP_CUDA_PROVIDERS`, the file beside the running executable (a
 * `deno compile`d parastep), then the `onnxruntime-node` npm package of this
 * checkout. Either variable, when set, is the only place looked at.
 */
export function libraryCandidates(): { path: string; foundBy: OrtLibrary["foundBy"] }[] {
  const candidates: { path: string; foundBy: OrtLibrary["foundBy"] }[] = [];
  const fromEnv = Deno.env.get(ORT_LIBRARY_ENV);
  if (fromEnv) return [{ path: fromEnv, foundBy: "env" }];
  const file = libraryFileName();
  const cudaDir = Deno.env.get(CUDA_PROVIDERS_ENV);
  if (cudaDir) {
    return [{ path: `${cudaDir.replace(/\/+$/, "")}/${file}`, foundBy: "cuda-providers" }];
  }
  candidates.push({ path: `${dirname(Deno.execPath())}/${file}`, foundBy: "beside-executable" });
  const arch = NPM_ARCH[Deno.build.arch] ?? Deno.build.arch;
  const rel = `node_modules/onnxruntime-node/bin/napi-v6/${Deno.build.os}/${arch}/${file}`;
  const root = new URL("../", import.meta.url);
  if (root.protocol === "file:") {
    candidates.push({
      path: decodeURIComponent(new URL(rel, root).pathname),
      foundBy: "npm-package",
    });
  }
  candidates.push({ path: `${Deno.cwd()}/${rel}`, foundBy: "npm-package" });
  return candidates;
}

let loaded: OrtLibrary | undefined;

/**
 * Opens ONNX Runtime once per realm and returns it.
 *
 * @throws {OrtLoadError} when no library is found, it cannot be opened, or it
 * is older than the API version parastep needs.
 */
export function ortLibrary(): OrtLibrary {
  if (loaded) return loaded;
  const candidates = libraryCandidates();
  const found = candidates.find((c) => isFile(c.path));
  if (!found) {
    const first = candidates[0];
    if (first?.foundBy === "env") {
      throw new OrtLoadError(
        `Cannot load ONNX Runtime as ${ORT_LIBRARY_ENV} names a file that does not exist: ${first.path}`,
        first.path,
      );
    }
    if (first?.foundBy === "cuda-providers") {
      throw new OrtLoadError(
        `Cannot load ONNX Runtime as ${CUDA_PROVIDERS_ENV} names a folder without ${libraryFileName()}: ` +
          `${first.path} does not exist (run \`deno task setup:cuda --dir ${
            dirname(first.path)
          }\`)`,
        first.path,
      );
    }
    throw new OrtLoadError(
      `Cannot find the ONNX Runtime library (${libraryFileName()}): looked in ${
        candidates.map((c) => c.path).join(", ")
      }. Run \`npm ci\` in the parastep checkout (it installs onnxruntime-node), ` +
        `or set ${ORT_LIBRARY_ENV} to the path of ${libraryFileName()}`,
    );
  }
  loaded = open(found.path, found.foundBy);
  return loaded;
}

function open(path: string, foundBy: OrtLibrary["foundBy"]): OrtLibrary {
  let lib;
  try {
    lib = Deno.dlopen(path, { OrtGetApiBase: { parameters: [], result: "pointer" } });
  } catch (e) {
    // Deno's message repeats its prefix and the path ("Could not open library: Could not open
    // library: /x.so: file too short"): keep the loader's reason once.
    const reason = (e instanceof Error ? e.message : String(e))
      .replace(/^(Could not open library: )+/, "")
      .replace(`${path}: `, "");
    throw new OrtLoadError(
      `Cannot open the ONNX Runtime library ${path}: ${reason} (is it libonnxruntime for ${Deno.build.os} ${Deno.build.arch}?)`,
      path,
      { cause: e },
    );
  }
  pinLoadedLibrary(path);
  const base = lib.symbols.OrtGetApiBase();
  if (base === null) throw new OrtLoadError(`OrtGetApiBase returned NULL in ${path}`, path);
  const baseView = new Deno.UnsafePointerView(base);
  // struct OrtApiBase { const OrtApi* (*GetApi)(uint32_t); const char* (*GetVersionString)(void); }
  const getApi = fnAt(baseView, 0, { parameters: ["u32"], result: "pointer" } as const);
  const getVersion = fnAt(baseView, 8, { parameters: [], result: "pointer" } as const);
  const versionPtr = getVersion.call();
  const version = versionPtr ? Deno.UnsafePointerView.getCString(versionPtr) : "unknown";
  // ORT 1.x serves OrtApi versions 1..x; check first so an old library gets a
  // clear message rather than ORT's own stderr line and a NULL table.
  const minor = Number(/^1\.(\d+)\./.exec(version)?.[1] ?? NaN);
  if (!(minor >= REQUIRED_API_VERSION)) {
    throw new OrtLoadError(
      `Cannot use ONNX Runtime ${version} at ${path}: parastep needs ONNX Runtime 1.${REQUIRED_API_VERSION} ` +
        `or newer (OrtApi version ${REQUIRED_API_VERSION}). Install a newer onnxruntime-node ` +
        `(npm ci) or point ${ORT_LIBRARY_ENV} at a newer library`,
      path,
    );
  }
  const table = getApi.call(REQUIRED_API_VERSION);
  if (table === null) {
    throw new OrtLoadError(
      `ONNX Runtime ${version} at ${path} refused OrtApi version ${REQUIRED_API_VERSION}`,
      path,
    );
  }
  const view = new Deno.UnsafePointerView(table);
  const api = {} as Record<string, unknown>;
  for (const [name, def] of Object.entries(ORT_FUNCTIONS)) {
    api[name] = fnAt(view, def.slot * 8, { parameters: def.parameters, result: def.result });
  }
  // deno-lint-ignore no-explicit-any -- built by iterating ORT_FUNCTIONS, whose keys and defs make up OrtApi
  const typed = api as any as OrtApi;
  const buildPtr = typed.GetBuildInfoString.call();
  const buildInfo = buildPtr ? Deno.UnsafePointerView.getCString(buildPtr) : "unknown";
  // Ask for a newer table only when the library serves it (no stderr noise otherwise).
  const tableSince = (since: number) => {
    const newer = minor >= since ? getApi.call(since) : null;
    return newer === null ? null : new Deno.UnsafePointerView(newer);
  };
  const shapeDef = OPTIONAL_ORT_FUNCTIONS.GetTensorElementTypeAndShapeDataReference;
  const shapeTable = tableSince(shapeDef.since);
  const typeAndShape = shapeTable === null ? null : fnAt(
    shapeTable,
    shapeDef.slot * 8,
    { parameters: shapeDef.parameters, result: shapeDef.result },
  );
  const cancelDef = OPTIONAL_ORT_FUNCTIONS.SessionOptionsSetLoadCancellationFlag;
  const cancelTable = tableSince(cancelDef.since);
  const setLoadCancellationFlag = cancelTable === null ? null : fnAt(
    cancelTable,
    cancelDef.slot * 8,
    { parameters: cancelDef.parameters, result: cancelDef.result },
  );
  const nonblocking = <
    K extends "Run" | "RunWithBinding" | "CreateSession" | "CreateSessionFromArray",
  >(name: K) =>
    fnAt(
      view,
      ORT_FUNCTIONS[name].slot * 8,
      {
        parameters: ORT_FUNCTIONS[name].parameters as Defs[K]["parameters"],
        result: "pointer",
        nonblocking: true,
      } as const,
    );
  return {
    path,
    foundBy,
    version,
    apiVersion: REQUIRED_API_VERSION,
    buildInfo,
    api: typed,
    typeAndShape,
    runNonblocking: nonblocking("Run"),
    runWithBindingNonblocking: nonblocking("RunWithBinding"),
    createSessionNonblocking: nonblocking("CreateSession"),
    createSessionFromArrayNonblocking: nonblocking("CreateSessionFromArray"),
    setLoadCancellationFlag,
  };
}

function fnAt<D extends Deno.ForeignFunction>(
  view: Deno.UnsafePointerView,
  offset: number,
  def: D,
): Deno.UnsafeFnPointer<D> {
  const ptr = view.getPointer(offset);
  if (ptr === null) throw new OrtLoadError(`OrtApi slot at byte ${offset} is NULL`);
  // The table holds untyped pointers; `def` is the signature ORT documents for this slot.
  return new Deno.UnsafeFnPointer(ptr as Deno.PointerObject<Omit<D, "nonblocking">>, def);
}

/**
 * Converts a non-NULL `OrtStatus*` into an {@linkcode OrtError} (reading its
 * code and message, then releasing it); NULL, meaning success, gives undefined.
 */
export function statusError(
  status: Deno.PointerValue,
  call: string,
  context?: string | (() => string),
): OrtError | undefined {
  if (status === null) return undefined;
  const { api } = ortLibrary();
  const code = api.GetErrorCode.call(status);
  const msgPtr = api.GetErrorMessage.call(status);
  const message = msgPtr ? Deno.UnsafePointerView.getCString(msgPtr) : "(no message)";
  api.ReleaseStatus.call(status);
  return new OrtError(call, code, message, typeof context === "function" ? context() : context);
}

/**
 * Throws {@linkcode statusError}'s error for a non-NULL status. A context that
 * costs something to build can be passed as a function: it runs only on error.
 */
export function check(
  status: Deno.PointerValue,
  call: string,
  context?: string | (() => string),
): void {
  const error = statusError(status, call, context);
  if (error !== undefined) throw error;
}

const encoder = new TextEncoder();

/** A NUL-terminated UTF-8 copy of `s`, to pass as a `const char*`. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** A one-slot out-parameter for a pointer (`T**` in C). */
export function pointerOut(): BigUint64Array<ArrayBuffer> {
  return new BigUint64Array(1);
}

/** Reads the pointer an ORT call wrote into {@linkcode pointerOut}. */
export function readPointer(out: BigUint64Array, call: string): Deno.PointerObject {
  const ptr = Deno.UnsafePointer.create(out[0] ?? 0n);
  if (ptr === null) throw new OrtError(call, 1, "returned a NULL handle");
  return ptr;
}

/** An array of C string pointers (`const char* const*`), plus the strings it points into. */
export function cStringArray(strings: readonly string[]): {
  array: BigUint64Array<ArrayBuffer>;
  keep: Uint8Array[];
} {
  const keep = strings.map(cString);
  const array = new BigUint64Array(keep.length);
  keep.forEach((s, i) => array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s))));
  return { array, keep };
}
