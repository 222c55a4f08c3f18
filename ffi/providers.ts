/**
 * Execution providers: which are compiled into the library, which can run
 * here, and appending one to session options.
 *
 * @module
 */

import { loadCudaLibraries } from "./cuda.ts";
import { OrtError } from "./errors.ts";
import { webGpuLock } from "./lock.ts";
import { withQuietStderr } from "./quiet.ts";
import { autoWebGpuUnsuitable, vulkanDevices } from "./vulkan.ts";
import { check, cString, cStringArray, ortLibrary, pointerOut, readPointer } from "./library.ts";

/** An execution provider parastep can ask for. */
export type ExecutionProvider = "cpu" | "cuda" | "webgpu";

/** What `auto` tries, best first. */
export const AUTO_ORDER: readonly ExecutionProvider[] = ["cuda", "webgpu", "cpu"];

/** ORT's name for each provider, as `GetAvailableProviders` lists them. */
export const ORT_PROVIDER_NAME: Readonly<Record<ExecutionProvider, string>> = {
  cpu: "CPUExecutionProvider",
  cuda: "CUDAExecutionProvider",
  webgpu: "WebGpuExecutionProvider",
};

/** One provider tried while building session options. */
export interface ProviderAttempt {
  /** The provider tried. */
  readonly ep: ExecutionProvider;
  /** Whether it was appended. */
  readonly ok: boolean;
  /** Why it was skipped or failed (ORT's message where ORT gave one). */
  readonly reason?: string;
}

/** The providers compiled into the loaded library (ORT's names). */
export function compiledProviders(): string[] {
  const { api } = ortLibrary();
  const list = pointerOut();
  const count = new Int32Array(1);
  check(api.GetAvailableProviders.call(list, count), "GetAvailableProviders");
  const arr = readPointer(list, "GetAvailableProviders");
  const n = count[0] ?? 0;
  const view = new Deno.UnsafePointerView(arr);
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const p = view.getPointer(i * 8);
    if (p) names.push(Deno.UnsafePointerView.getCString(p));
  }
  check(api.ReleaseAvailableProviders.call(arr, n), "ReleaseAvailableProviders");
  return names;
}

/**
 * Why `ep` cannot work on this machine, checked without touching ORT's providers, or
 * undefined when nothing rules it out. For WebGPU this lists the Vulkan devices through the
 * Vulkan loader: asking Dawn when there is none prints warnings on stderr that no log level
 * silences. These checks keep `auto` quiet and give exact reasons.
 */
export function precheck(ep: ExecutionProvider): string | undefined {
  if (ep === "cpu") return undefined;
  const { path } = ortLibrary();
  if (!compiledProviders().includes(ORT_PROVIDER_NAME[ep])) {
    return `${ORT_PROVIDER_NAME[ep]} is not compiled into ${path}`;
  }
  if (ep === "cuda" && Deno.build.os === "linux") {
    // Opens the CUDA libraries in order (once per realm), so ORT's own dlopen of the provider
    // finds them; a missing one is named here with its fix instead of ORT's generic message.
    const problem = loadCudaLibraries();
    if (problem !== undefined) return problem;
  }
  if (ep === "webgpu" && Deno.build.os === "linux") {
    const vulkan = vulkanDevices();
    if (!vulkan.ok) return vulkan.reason;
    if (vulkan.devices.length === 0) return "the Vulkan loader lists no device";
  }
  return undefined;
}

/**
 * Why `auto` should not try `ep` here, or undefined: {@linkcode precheck}, and for WebGPU
 * also a machine whose only Vulkan device is a software renderer (slower than the CPU
 * provider; `--ep webgpu` still uses it).
 */
export function autoPrecheck(ep: ExecutionProvider): string | undefined {
  const reason = precheck(ep);
  if (reason !== undefined || ep !== "webgpu" || Deno.build.os !== "linux") return reason;
  return autoWebGpuUnsuitable();
}

/**
 * The provider `auto` would try first on this machine: the first of {@linkcode AUTO_ORDER} that
 * the local checks ({@linkcode autoPrecheck}) do not rule out. A session may still fall back
 * further if that provider then cannot open the model.
 */
export function autoCandidate(): ExecutionProvider {
  return AUTO_ORDER.find((ep) => autoPrecheck(ep) === undefined) ?? "cpu";
}

/** Options for appending a provider. */
export interface AppendOptions {
  /** CUDA device ordinal. @default {0} */
  deviceId?: number;
}

/**
 * Appends `ep` to native session options.
 *
 * @throws {OrtError} naming the provider and quoting ORT when ORT refuses it
 */
export function appendProvider(
  options: Deno.PointerObject,
  ep: ExecutionProvider,
  { deviceId = 0 }: AppendOptions = {},
): void {
  const { api } = ortLibrary();
  const context = `Appending the ${ep} execution provider`;
  switch (ep) {
    case "cpu":
      return; // always present; nothing to append
    case "cuda": {
      if (!Number.isInteger(deviceId) || deviceId < 0) {
        throw new RangeError(
          `Cannot use CUDA as 'deviceId' must be a non-negative integer: current value is ${deviceId}`,
        );
      }
      const out = pointerOut();
      check(api.CreateCUDAProviderOptions.call(out), "CreateCUDAProviderOptions", context);
      const cuda = readPointer(out, "CreateCUDAProviderOptions");
      try {
        const keys = cStringArray(["device_id"]);
        const values = cStringArray([String(deviceId)]);
        check(
          api.UpdateCUDAProviderOptions.call(cuda, keys.array, values.array, 1n),
          "UpdateCUDAProviderOptions",
          context,
        );
        check(
          api.SessionOptionsAppendExecutionProvider_CUDA_V2.call(options, cuda),
          "SessionOptionsAppendExecutionProvider_CUDA_V2",
          context,
        );
      } finally {
        api.ReleaseCUDAProviderOptions.call(cuda);
      }
      return;
    }
    case "webgpu": {
      const none = new BigUint64Array(1);
      check(
        api.SessionOptionsAppendExecutionProvider.call(options, cString("WebGPU"), none, none, 0n),
        "SessionOptionsAppendExecutionProvider",
        context,
      );
      return;
    }
  }
}

/**
 * Appends the provider `ep` asks for; on failure the error quotes ORT and adds
 * what the local checks know about the cause.
 *
 * @throws {OrtError} naming the provider
 */
export function appendRequestedProvider(
  options: Deno.PointerObject,
  ep: ExecutionProvider,
  append: AppendOptions = {},
): void {
  try {
    appendProvider(options, ep, append);
  } catch (e) {
    if (!(e instanceof OrtError)) throw e;
    const hint = precheck(ep);
    throw new OrtError(
      e.call,
      e.code,
      hint === undefined ? e.ortMessage : `${e.ortMessage} (${hint})`,
      `Appending the ${ep} execution provider`,
    );
  }
}

/** Options for {@linkcode probeProvider}. */
export interface ProbeOptions {
  /**
   * Silence what native code prints on stderr meanwhile (Dawn's adapter warnings).
   * @default {true}
   */
  quiet?: boolean;
}

/**
 * Whether `ep` can be appended here: the local checks, then a real append to
 * throwaway session options (which loads the provider and, for WebGPU, asks
 * for an adapter, under the process's WebGPU lock). Needs an open
 * {@linkcode Env} (ORT's default logger).
 */
export function probeProvider(ep: ExecutionProvider, options: ProbeOptions = {}): ProviderAttempt {
  const reason = precheck(ep);
  if (reason !== undefined) return { ep, ok: false, reason };
  const { api } = ortLibrary();
  const out = pointerOut();
  check(api.CreateSessionOptions.call(out), "CreateSessionOptions");
  const so = readPointer(out, "CreateSessionOptions");
  const lock = ep === "webgpu" ? webGpuLock() : null;
  lock?.acquireSync("probe the WebGPU provider");
  try {
    // Releasing the options releases the provider factory, which touches the WebGPU context too.
    return withQuietStderr(options.quiet ?? true, () => {
      try {
        appendProvider(so, ep);
        return { ep, ok: true };
      } catch (e) {
        if (!(e instanceof OrtError)) throw e;
        return { ep, ok: false, reason: e.ortMessage };
      } finally {
        api.ReleaseSessionOptions.call(so);
      }
    });
  } finally {
    lock?.release();
  }
}
