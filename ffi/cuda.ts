/**
 * The CUDA execution provider's native dependencies: the two provider
 * libraries beside libonnxruntime, the CUDA libraries they link against, and
 * what the CUDA driver says about the devices.
 *
 * ONNX Runtime loads `libonnxruntime_providers_shared.so` and
 * `libonnxruntime_providers_cuda.so` from the folder of the libonnxruntime it
 * runs from. The CUDA provider then needs the CUDA runtime, cuBLAS and cuRAND
 * (named in its `DT_NEEDED`), the driver's `libcuda.so.1`, and loads cuDNN,
 * cuFFT and NVRTC lazily. `deno task setup:cuda` records where it installed
 * those libraries in `parastep-cuda.json` beside the providers; they are
 * opened here by absolute path, in dependency order, before the provider is
 * appended, so the dynamic linker finds them by soname without
 * `LD_LIBRARY_PATH`.
 *
 * Every check names the exact file that is missing and the command that
 * fixes it.
 *
 * @module
 */

import { readElfDynamic } from "./elf.ts";
import { CUDA_PROVIDERS_ENV, dirname, isFile, ortLibrary } from "./library.ts";

/** The file `deno task setup:cuda` writes beside the provider libraries. */
export const CUDA_SETUP_FILE = "parastep-cuda.json";

/** The provider libraries ONNX Runtime loads from its own folder, in the order it loads them. */
export const CUDA_PROVIDER_FILES: readonly string[] = [
  "libonnxruntime_providers_shared.so",
  "libonnxruntime_providers_cuda.so",
];

/** The command that installs the CUDA providers and libraries (README, "GPU"). */
export const CUDA_SETUP_COMMAND = "deno task setup:cuda";

/** The driver library, which comes with the NVIDIA driver, never with a wheel. */
export const CUDA_DRIVER_LIBRARY = "libcuda.so.1";

/** One library recorded by the setup: its soname and where it is. */
export interface CudaLibraryEntry {
  /** The soname, e.g. `libcublas.so.13`. */
  readonly name: string;
  /** Its absolute path. */
  readonly path: string;
}

/** `parastep-cuda.json`, as written by `deno task setup:cuda`. */
export interface CudaSetup {
  /** The format version of this file. */
  readonly format: 1;
  /** The ONNX Runtime version the provider libraries were built for (the wheel's version). */
  readonly ortVersion: string;
  /** Where the providers came from, for people: e.g. `onnxruntime-gpu 1.30.0 from PyPI`. */
  readonly providerSource: string;
  /** The CUDA libraries the provider links against, in dependency order (each after its needs). */
  readonly libraries: readonly CudaLibraryEntry[];
  /**
   * Libraries the provider opens only when a model needs them (cuDNN, cuFFT, NVRTC) and theirs,
   * in dependency order after `libraries`: one that fails to load is a warning, not a failure.
   */
  readonly lazy: readonly CudaLibraryEntry[];
}

/** One CUDA device as the driver describes it. */
export interface CudaDevice {
  /** The device ordinal (`--ep cuda` worker r uses device r). */
  readonly index: number;
  /** The device name, e.g. `NVIDIA H200`. */
  readonly name: string;
  /** Total device memory in bytes (`cuDeviceTotalMem`). */
  readonly totalMemoryBytes: number;
  /** Compute capability, e.g. `9.0`. */
  readonly computeCapability: string;
}

/** What `info` reports about CUDA. */
export interface CudaInfo {
  /** The folder ORT loads the providers from (the library's folder). */
  readonly providerDir: string;
  /** The providers' ONNX Runtime version and source, from the setup file, if there is one. */
  readonly providers: string | undefined;
  /** The CUDA libraries the CUDA provider links against (its `DT_NEEDED`), when it is there. */
  readonly needs: readonly string[];
  /** The libraries opened from the setup file. */
  readonly libraries: readonly CudaLibraryEntry[];
  /** `cudaRuntimeGetVersion`, e.g. `13.0`, when the runtime loads. */
  readonly runtimeVersion: string | undefined;
  /** `cuDriverGetVersion` (the newest CUDA the driver supports), when the driver loads. */
  readonly driverVersion: string | undefined;
  /** The kernel module's version line from `/proc/driver/nvidia/version`, when present. */
  readonly driverRelease: string | undefined;
  /** The devices the driver sees. */
  readonly devices: readonly CudaDevice[];
  /** What stops CUDA from running, each naming the missing file and the fix. */
  readonly problems: readonly string[];
  /** What will fail later (libraries loaded lazily, e.g. cuDNN for convolutions). */
  readonly warnings: readonly string[];
}

/** The setup file is present but unusable. */
export class CudaSetupError extends Error {
  override name = "CudaSetupError";
}

/** Whether a `DT_NEEDED` name is one of CUDA's (not libc, libstdc++ and the like). */
export function isCudaLibrary(name: string): boolean {
  return /^lib(cu|nv)/i.test(name);
}

/** The folder ORT loads the provider libraries from: that of the loaded libonnxruntime. */
export function cudaProviderDir(): string {
  return dirname(ortLibrary().path);
}

/**
 * Reads `parastep-cuda.json` from `dir`; undefined when there is none (the
 * CUDA libraries may then be on the loader path).
 *
 * @throws {CudaSetupError} for a file that is not a setup this version wrote
 */
export function readCudaSetup(dir: string): CudaSetup | undefined {
  const path = `${dir}/${CUDA_SETUP_FILE}`;
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const fix = `run \`${CUDA_SETUP_COMMAND}\` again`;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CudaSetupError(`Cannot read ${path}: ${(e as Error).message} (${fix})`);
  }
  const r = raw as Partial<Record<keyof CudaSetup, unknown>>;
  const entries = (list: unknown) =>
    Array.isArray(list) && list.every((e) => {
      const l = e as Partial<CudaLibraryEntry> | null;
      return typeof l?.name === "string" && typeof l.path === "string" && l.path.startsWith("/");
    });
  const valid = r.format === 1 && typeof r.ortVersion === "string" &&
    typeof r.providerSource === "string" && entries(r.libraries) && entries(r.lazy);
  if (!valid) {
    throw new CudaSetupError(
      `Cannot read ${path}: it is not a format-1 CUDA setup (ortVersion, providerSource, libraries and lazy with absolute paths) (${fix})`,
    );
  }
  return raw as CudaSetup;
}

/** The loader's reason, without Deno's repeated prefix. */
function loaderReason(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/^(Could not open library: )+/, "");
}

/** Handles kept open for the realm's life: the providers need the libraries mapped. */
const opened: Deno.DynamicLibrary<Record<string, never>>[] = [];
interface LoadResult {
  problem: string | undefined;
  libraries: CudaLibraryEntry[];
  warnings: string[];
}
let loadResult: LoadResult | undefined;

/**
 * Opens the CUDA libraries the CUDA provider needs, once per realm: those the
 * setup file lists (by absolute path, in its order), then each CUDA library
 * in the provider's `DT_NEEDED` by soname (found among those just opened, or
 * on the loader path), the driver's last. Returns why CUDA cannot run, naming
 * the missing file and the fix, or undefined when everything loaded.
 */
export function loadCudaLibraries(): string | undefined {
  if (loadResult === undefined) loadResult = load();
  return loadResult.problem;
}

function load(): LoadResult {
  const lib = ortLibrary();
  const dir = dirname(lib.path);
  const libraries: CudaLibraryEntry[] = [];
  const warnings: string[] = [];
  const fail = (problem: string) => ({ problem, libraries, warnings });
  for (const file of CUDA_PROVIDER_FILES) {
    if (!isFile(`${dir}/${file}`)) {
      return fail(
        `${dir}/${file} is missing: run \`${CUDA_SETUP_COMMAND}\` (installs the CUDA providers ` +
          `of onnxruntime-gpu ${lib.version} there), or set ${CUDA_PROVIDERS_ENV} to a folder it prepared`,
      );
    }
  }
  let setup: CudaSetup | undefined;
  try {
    setup = readCudaSetup(dir);
  } catch (e) {
    if (e instanceof CudaSetupError) return fail(e.message);
    throw e;
  }
  if (setup !== undefined && setup.ortVersion !== lib.version) {
    return fail(
      `the CUDA providers in ${dir} are from ONNX Runtime ${setup.ortVersion} but ${lib.path} is ` +
        `${lib.version}: run \`${CUDA_SETUP_COMMAND}\` again`,
    );
  }
  for (const entry of setup?.libraries ?? []) {
    if (!isFile(entry.path)) {
      return fail(
        `${entry.path} (${entry.name}, recorded in ${dir}/${CUDA_SETUP_FILE}) is missing: ` +
          `run \`${CUDA_SETUP_COMMAND}\` again`,
      );
    }
    try {
      opened.push(Deno.dlopen(entry.path, {}));
    } catch (e) {
      return fail(`${entry.path} cannot be loaded: ${loaderReason(e)}`);
    }
    libraries.push(entry);
  }
  for (const entry of setup?.lazy ?? []) {
    try {
      opened.push(Deno.dlopen(entry.path, {}));
      libraries.push(entry);
    } catch (e) {
      warnings.push(`${entry.path} cannot be loaded: ${loaderReason(e)}`);
    }
  }
  const provider = `${dir}/${CUDA_PROVIDER_FILES[1]}`;
  let needed: string[];
  try {
    needed = readElfDynamic(provider).needed.filter(isCudaLibrary);
  } catch (e) {
    return fail(`${provider} cannot be read: ${(e as Error).message}`);
  }
  // The driver last: everything else can be checked on a machine without one.
  needed.sort((a, b) => Number(a === CUDA_DRIVER_LIBRARY) - Number(b === CUDA_DRIVER_LIBRARY));
  for (const name of needed) {
    try {
      opened.push(Deno.dlopen(name, {}));
    } catch (e) {
      if (name === CUDA_DRIVER_LIBRARY) return fail(driverMissing(e));
      const where = setup === undefined
        ? `no ${CUDA_SETUP_FILE} in ${dir} lists it and it is not on the loader path`
        : `${dir}/${CUDA_SETUP_FILE} does not list it and it is not on the loader path`;
      return fail(
        `${name}, which ${CUDA_PROVIDER_FILES[1]} needs, cannot be loaded (${where}): ` +
          `run \`${CUDA_SETUP_COMMAND}\``,
      );
    }
  }
  return { problem: undefined, libraries, warnings };
}

/** Why the driver library did not load, and the fix. */
function driverMissing(e: unknown): string {
  const reason = loaderReason(e);
  const fix = /No such file/.test(reason)
    ? "install the NVIDIA driver (none is installed here)"
    : "check the NVIDIA driver's installation";
  return `${CUDA_DRIVER_LIBRARY} (the NVIDIA driver's CUDA library) cannot be loaded: ${reason}; ${fix}`;
}

/** `13020` → `13.2`, as CUDA encodes versions (1000 major + 10 minor). */
export function cudaVersionString(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

const DRIVER_SYMBOLS = {
  cuInit: { parameters: ["u32"], result: "i32" },
  cuDriverGetVersion: { parameters: ["buffer"], result: "i32" },
  cuDeviceGetCount: { parameters: ["buffer"], result: "i32" },
  cuDeviceGet: { parameters: ["buffer", "i32"], result: "i32" },
  cuDeviceGetName: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  cuDeviceTotalMem_v2: { parameters: ["buffer", "i32"], result: "i32" },
  cuDeviceGetAttribute: { parameters: ["buffer", "i32", "i32"], result: "i32" },
} as const;

// CUdevice_attribute values (cuda.h): stable since CUDA 3.
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

/**
 * The driver's view through its plain-value calls (`cuDeviceGetName`,
 * `cuDeviceTotalMem_v2`, `cuDeviceGetAttribute`): no struct layouts involved.
 */
function queryDriver(): { version: number; devices: CudaDevice[] } | string {
  let driver;
  try {
    driver = Deno.dlopen(CUDA_DRIVER_LIBRARY, DRIVER_SYMBOLS);
  } catch (e) {
    return driverMissing(e);
  }
  try {
    const s = driver.symbols;
    const int = new Int32Array(1);
    const version = s.cuDriverGetVersion(int) === 0 ? int[0]! : 0;
    const rc = s.cuInit(0);
    // cuInit fails on a machine whose driver sees no device (CUDA_ERROR_NO_DEVICE = 100).
    if (rc !== 0) {
      return rc === 100 ? { version, devices: [] } : `cuInit failed with CUresult ${rc}`;
    }
    if (s.cuDeviceGetCount(int) !== 0) return "cuDeviceGetCount failed";
    const devices: CudaDevice[] = [];
    for (let i = 0; i < int[0]!; i++) {
      const dev = new Int32Array(1);
      if (s.cuDeviceGet(dev, i) !== 0) return `cuDeviceGet(${i}) failed`;
      const name = new Uint8Array(256);
      const mem = new BigUint64Array(1);
      const major = new Int32Array(1);
      const minor = new Int32Array(1);
      if (
        s.cuDeviceGetName(name, name.length, dev[0]!) !== 0 ||
        s.cuDeviceTotalMem_v2(mem, dev[0]!) !== 0 ||
        s.cuDeviceGetAttribute(major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev[0]!) !==
          0 ||
        s.cuDeviceGetAttribute(minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev[0]!) !== 0
      ) {
        return `querying CUDA device ${i} failed`;
      }
      const end = name.indexOf(0);
      devices.push({
        index: i,
        name: new TextDecoder().decode(name.subarray(0, end < 0 ? name.length : end)),
        totalMemoryBytes: Number(mem[0]),
        computeCapability: `${major[0]}.${minor[0]}`,
      });
    }
    return { version, devices };
  } finally {
    driver.close();
  }
}

function runtimeVersion(needs: readonly string[]): number | undefined {
  const name = needs.find((n) => n.startsWith("libcudart.so"));
  if (name === undefined) return undefined;
  try {
    const rt = Deno.dlopen(name, {
      cudaRuntimeGetVersion: { parameters: ["buffer"], result: "i32" },
    });
    try {
      const v = new Int32Array(1);
      return rt.symbols.cudaRuntimeGetVersion(v) === 0 ? v[0] : undefined;
    } finally {
      rt.close();
    }
  } catch {
    return undefined;
  }
}

function driverRelease(): string | undefined {
  try {
    const line = Deno.readTextFileSync("/proc/driver/nvidia/version").split("\n")[0] ?? "";
    return /Kernel Module\s+(\S+)/.exec(line)?.[1] ?? (line.trim() || undefined);
  } catch {
    return undefined;
  }
}

/** Libraries the CUDA provider opens only when a model needs them, and what fails without them. */
const LAZY: readonly { prefix: string; what: string }[] = [
  {
    prefix: "libcudnn.so",
    what: "cuDNN 9 (convolutions, so every UNet/VAE, fail on CUDA without it)",
  },
  { prefix: "libcufft.so", what: "cuFFT (FFT operators fail on CUDA without it)" },
];

/**
 * Everything `info` says about CUDA: never throws; what is missing goes to
 * `problems` with its fix. Needs an open ORT library (not an Env).
 */
export function cudaInfo(): CudaInfo {
  const dir = cudaProviderDir();
  const problems: string[] = [];
  let providers: string | undefined;
  try {
    const setup = readCudaSetup(dir);
    if (setup) providers = `${setup.providerSource} (ONNX Runtime ${setup.ortVersion})`;
  } catch (e) {
    if (!(e instanceof CudaSetupError)) throw e;
  }
  const provider = `${dir}/${CUDA_PROVIDER_FILES[1]}`;
  let needs: string[] = [];
  try {
    if (isFile(provider)) needs = readElfDynamic(provider).needed.filter(isCudaLibrary);
  } catch {
    // loadCudaLibraries names the unreadable file.
  }
  const problem = loadCudaLibraries();
  if (problem !== undefined) problems.push(problem);
  const libraries = loadResult?.libraries ?? [];
  // A lazy library that needs the driver says so once the driver is named as missing.
  const noDriver = problem?.startsWith(CUDA_DRIVER_LIBRARY) ?? false;
  const warnings = (loadResult?.warnings ?? []).filter((w) =>
    !(noDriver &&
      w.endsWith(
        `${CUDA_DRIVER_LIBRARY}: cannot open shared object file: No such file or directory`,
      ))
  );
  const rt = problem === undefined || needs.length > 0 ? runtimeVersion(needs) : undefined;
  const driver = queryDriver();
  if (typeof driver === "string" && !problems.some((p) => p.startsWith(CUDA_DRIVER_LIBRARY))) {
    problems.push(driver);
  }
  if (typeof driver !== "string" && driver.devices.length === 0) {
    problems.push("the NVIDIA driver sees no CUDA device");
  }
  if (problem === undefined) {
    for (const { prefix, what } of LAZY) {
      const listed = libraries.some((l) => l.name.startsWith(prefix));
      if (!listed && !loadable(`${prefix}.${prefix === "libcudnn.so" ? 9 : cufftMajor(needs)}`)) {
        warnings.push(`${prefix}* not found: ${what}; run \`${CUDA_SETUP_COMMAND}\``);
      }
    }
  }
  return {
    providerDir: dir,
    providers,
    needs,
    libraries,
    runtimeVersion: rt === undefined ? undefined : cudaVersionString(rt),
    driverVersion: typeof driver === "string" || driver.version === 0
      ? undefined
      : cudaVersionString(driver.version),
    driverRelease: driverRelease(),
    devices: typeof driver === "string" ? [] : driver.devices,
    problems,
    warnings,
  };
}

/** cuFFT's soname major for a CUDA major (CUDA 12 ships cuFFT 11, CUDA 13 cuFFT 12). */
function cufftMajor(needs: readonly string[]): number {
  const cuda = Number(/libcudart\.so\.(\d+)/.exec(needs.join(" "))?.[1] ?? 13);
  return cuda - 1;
}

function loadable(name: string): boolean {
  try {
    opened.push(Deno.dlopen(name, {}));
    return true;
  } catch {
    return false;
  }
}
