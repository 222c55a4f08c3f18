/**
 * `deno task setup:cuda`: installs what the CUDA execution provider needs and
 * records where it is (README, "GPU").
 *
 * 1. Installs `onnxruntime-gpu[cuda,cudnn]==<version of the loaded ONNX
 *    Runtime>` from PyPI into a venv (`.cache/cuda/venv`): the wheel is built
 *    from the same ONNX Runtime commit as onnxruntime-node's library, and its
 *    extras bring CUDA 13 (runtime, cuBLAS, cuRAND, cuFFT, NVRTC) and cuDNN 9
 *    as `nvidia/.../lib` folders.
 * 2. Copies `libonnxruntime_providers_shared.so` and
 *    `libonnxruntime_providers_cuda.so` beside the library parastep loads, or
 *    into `--dir` / `$PARASTEP_CUDA_PROVIDERS` together with a copy of that
 *    library (ORT loads its providers from its own folder).
 * 3. Writes `parastep-cuda.json` there: the CUDA libraries the provider needs
 *    and those it loads lazily, by absolute path in dependency order, which
 *    `ffi/cuda.ts` opens before appending the CUDA provider (no
 *    `LD_LIBRARY_PATH`).
 * 4. Runs `parastep info`, which says what still stops CUDA (a machine
 *    without an NVIDIA driver stops at `libcuda.so.1`).
 *
 * Usage: deno task setup:cuda [--dir DIR] [--cuda-libs DIR]... [--providers-from DIR]
 *   [--venv DIR] [--python PYTHON]
 *
 * `--cuda-libs` takes CUDA libraries from folders already there (e.g. a
 * torch install's `site-packages/nvidia`) and installs only the
 * `onnxruntime-gpu` wheel; with `--providers-from` too (a folder holding the two
 * provider libraries), nothing is installed, which is how an offline GPU host
 * is set up (docs/gpu-check.md).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  CUDA_DRIVER_LIBRARY,
  CUDA_PROVIDER_FILES,
  CUDA_PROVIDERS_ENV,
  CUDA_SETUP_FILE,
  type CudaLibraryEntry,
  type CudaSetup,
  isCudaLibrary,
  libraryFileName,
  ortLibrary,
  readElfDynamic,
} from "../ffi/mod.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");

/** The PyPI extras of onnxruntime-gpu that bring CUDA 13 and cuDNN 9 (its METADATA, 1.30.0). */
export const WHEEL_EXTRAS = "cuda,cudnn";

/** Libraries the CUDA provider opens at run time without naming them in `DT_NEEDED`. */
const LAZY_PREFIXES = ["libcudnn", "libcufft.so", "libnvrtc"];

/** A setup step that cannot go on: one line naming the problem and the fix. */
export class SetupError extends Error {
  override name = "SetupError";
}

/** A shared library found on disk, with what its dynamic section says. */
export interface FoundLibrary {
  /** Its soname (or its file name when it has none). */
  readonly name: string;
  /** Its path. */
  readonly path: string;
  /** Its `DT_NEEDED`. */
  readonly needed: readonly string[];
}

/**
 * The shared libraries under `roots` (searched `depth` folders down, symbolic
 * links followed), keyed by soname; the first one found wins.
 */
export function scanLibraries(roots: readonly string[], depth = 6): Map<string, FoundLibrary> {
  const found = new Map<string, FoundLibrary>();
  const walk = (dir: string, left: number) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name));
    } catch {
      return;
    }
    for (const e of entries) {
      const path = `${dir}/${e.name}`;
      let stat: Deno.FileInfo;
      try {
        stat = Deno.statSync(path);
      } catch {
        continue;
      }
      if (stat.isDirectory && left > 0) walk(path, left - 1);
      if (!stat.isFile || !/\.so(\.\d+)*$/.test(e.name)) continue;
      let dynamic;
      try {
        dynamic = readElfDynamic(path);
      } catch {
        continue; // a linker script or a foreign file
      }
      const name = dynamic.soname ?? e.name;
      if (!found.has(name)) found.set(name, { name, path, needed: dynamic.needed });
    }
  };
  for (const root of roots) walk(root.replace(/\/+$/, ""), depth);
  return found;
}

/**
 * Orders what the provider needs (`required`, its CUDA `DT_NEEDED` less the
 * driver) and the lazily loaded libraries found under the roots, each after
 * the found libraries it needs.
 *
 * @throws {SetupError} naming each required library that is not found
 */
export function orderLibraries(
  found: ReadonlyMap<string, FoundLibrary>,
  required: readonly string[],
  roots: readonly string[],
): { libraries: CudaLibraryEntry[]; lazy: CudaLibraryEntry[] } {
  const missing = required.filter((n) => !found.has(n));
  if (missing.length > 0) {
    throw new SetupError(
      `Cannot set up CUDA as ${missing.join(", ")} ${
        missing.length === 1 ? "is" : "are"
      } not under ${roots.join(", ")}: install the CUDA ${
        majorOf(required)
      } libraries there (pip install ` +
        `'onnxruntime-gpu[${WHEEL_EXTRAS}]' brings them) or leave out --cuda-libs`,
    );
  }
  const order: FoundLibrary[] = [];
  const seen = new Set<string>();
  const visit = (name: string) => {
    const lib = found.get(name);
    if (lib === undefined || seen.has(name)) return; // not ours to load: the system's, or the driver
    seen.add(name);
    for (const dep of lib.needed) if (dep !== CUDA_DRIVER_LIBRARY) visit(dep);
    order.push(lib);
  };
  for (const name of required) visit(name);
  const requiredCount = order.length;
  for (const name of [...found.keys()].sort()) {
    if (LAZY_PREFIXES.some((p) => name.startsWith(p))) visit(name);
  }
  const entry = (l: FoundLibrary) => ({ name: l.name, path: l.path });
  return {
    libraries: order.slice(0, requiredCount).map(entry),
    lazy: order.slice(requiredCount).map(entry),
  };
}

function majorOf(required: readonly string[]): string {
  return /libcudart\.so\.(\d+)/.exec(required.join(" "))?.[1] ?? "";
}

function run(cmd: string, args: string[], what: string): void {
  console.log(`$ ${cmd} ${args.join(" ")}`);
  let status;
  try {
    status = new Deno.Command(cmd, { args, stdout: "inherit", stderr: "inherit" }).outputSync();
  } catch (e) {
    throw new SetupError(`Cannot ${what} as ${cmd} cannot be started: ${(e as Error).message}`);
  }
  if (!status.success) {
    throw new SetupError(
      `Cannot ${what}: ${cmd} exited with code ${status.code} (its output is above)`,
    );
  }
}

/** Copies `from` to `to` through a temporary file beside it, so `to` is never half written. */
function copyAtomically(from: string, to: string): void {
  const tmp = `${to}.ps-${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    Deno.copyFileSync(from, tmp);
    Deno.renameSync(tmp, to);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // never created
    }
    throw e;
  }
}

function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.ps-${crypto.randomUUID().slice(0, 8)}.tmp`;
  Deno.writeTextFileSync(tmp, text);
  Deno.renameSync(tmp, path);
}

function sitePackages(venv: string): string {
  const lib = `${venv}/lib`;
  for (const e of Deno.readDirSync(lib)) {
    const site = `${lib}/${e.name}/site-packages`;
    if (e.name.startsWith("python") && Deno.statSync(site).isDirectory) return site;
  }
  throw new SetupError(`Cannot find site-packages under ${lib}: remove ${venv} and run again`);
}

function sameFile(a: string, b: string): boolean {
  try {
    return Deno.realPathSync(a) === Deno.realPathSync(b);
  } catch {
    return false;
  }
}

/** Options of {@linkcode setupCuda}, as the command line gives them. */
export interface SetupOptions {
  /** Where the providers go; default: beside the loaded library. */
  dir?: string;
  /** Folders holding the CUDA libraries already (no CUDA wheels installed). */
  cudaLibs?: string[];
  /** A folder holding the two provider libraries (no onnxruntime-gpu wheel installed). */
  providersFrom?: string;
  /** The venv for the wheels. @default {".cache/cuda/venv"} */
  venv?: string;
  /** The Python that creates the venv. @default {"python3"} */
  python?: string;
}

/** Runs the setup; returns the folder that now holds the providers and the setup file. */
export function setupCuda(options: SetupOptions): { dir: string; setup: CudaSetup } {
  const lib = ortLibrary();
  const version = lib.version;
  const libDir = lib.path.slice(0, lib.path.lastIndexOf("/"));
  const dir = (options.dir ?? Deno.env.get(CUDA_PROVIDERS_ENV) ?? libDir).replace(/\/+$/, "");
  const venv = options.venv ?? `${ROOT}/.cache/cuda/venv`;
  const cudaLibs = options.cudaLibs ?? [];
  let providersFrom = options.providersFrom;
  let source = `copied from ${providersFrom ?? ""}`;
  let roots = cudaLibs;
  if (providersFrom === undefined || cudaLibs.length === 0) {
    // 1. The wheel (and, without --cuda-libs, CUDA and cuDNN through its extras).
    const spec = cudaLibs.length > 0
      ? `onnxruntime-gpu==${version}`
      : `onnxruntime-gpu[${WHEEL_EXTRAS}]==${version}`;
    try {
      Deno.statSync(`${venv}/bin/python`);
    } catch {
      run(options.python ?? "python3", ["-m", "venv", venv], `create the venv ${venv}`);
    }
    run(
      `${venv}/bin/python`,
      [
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        ...(cudaLibs.length > 0 ? ["--no-deps"] : []),
        spec,
      ],
      `install ${spec} into ${venv}`,
    );
    const site = sitePackages(venv);
    const dist = `${site}/onnxruntime_gpu-${version}.dist-info`;
    try {
      Deno.statSync(dist);
    } catch {
      throw new SetupError(
        `Cannot find ${dist} after installing ${spec}: remove ${venv} and run again`,
      );
    }
    providersFrom ??= `${site}/onnxruntime/capi`;
    source = `onnxruntime-gpu ${version} from PyPI (${venv})`;
    if (roots.length === 0) roots = [`${site}/nvidia`];
  }
  // 2. The providers, beside a libonnxruntime.
  Deno.mkdirSync(dir, { recursive: true });
  for (const file of CUDA_PROVIDER_FILES) {
    const from = `${providersFrom}/${file}`;
    try {
      Deno.statSync(from);
    } catch {
      throw new SetupError(`Cannot set up CUDA as ${from} does not exist`);
    }
    if (!sameFile(from, `${dir}/${file}`)) copyAtomically(from, `${dir}/${file}`);
    console.log(`${dir}/${file}`);
  }
  const libHere = `${dir}/${libraryFileName()}`;
  if (!sameFile(lib.path, libHere)) {
    copyAtomically(lib.path, libHere);
    console.log(`${libHere} (a copy of ${lib.path}: ORT loads its providers from its own folder)`);
  }
  // 3. The CUDA libraries, in order.
  const provider = `${dir}/${CUDA_PROVIDER_FILES[1]}`;
  const required = readElfDynamic(provider).needed.filter((n) =>
    isCudaLibrary(n) && n !== CUDA_DRIVER_LIBRARY
  );
  const { libraries, lazy } = orderLibraries(scanLibraries(roots), required, roots);
  const setup: CudaSetup = {
    format: 1,
    ortVersion: version,
    providerSource: source,
    libraries,
    lazy,
  };
  writeAtomically(`${dir}/${CUDA_SETUP_FILE}`, JSON.stringify(setup, null, 2) + "\n");
  console.log(
    `${dir}/${CUDA_SETUP_FILE}: ${libraries.length} libraries the provider needs, ${lazy.length} loaded lazily`,
  );
  return { dir, setup };
}

if (import.meta.main) {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        dir: { type: "string" },
        "cuda-libs": { type: "string", multiple: true },
        "providers-from": { type: "string" },
        venv: { type: "string" },
        python: { type: "string", default: "python3" },
      },
    }));
  } catch (e) {
    console.error(`setup:cuda: ${(e as Error).message}`);
    Deno.exit(2);
  }
  try {
    const { dir } = setupCuda({
      ...(values.dir === undefined ? {} : { dir: values.dir }),
      ...(values["cuda-libs"] === undefined ? {} : { cudaLibs: values["cuda-libs"] }),
      ...(values["providers-from"] === undefined
        ? {}
        : { providersFrom: values["providers-from"] }),
      ...(values.venv === undefined ? {} : { venv: values.venv }),
      python: values.python,
    });
    // 4. What parastep now says about CUDA, from a fresh process loading the library from `dir`.
    const libDir = ortLibrary().path.replace(/\/[^/]*$/, "");
    const env = dir === libDir ? {} : { [CUDA_PROVIDERS_ENV]: dir };
    const info = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "--allow-read",
        "--allow-env",
        "--allow-sys",
        `${ROOT}/main.ts`,
        "info",
      ],
      env,
      stdout: "piped",
      stderr: "inherit",
    }).outputSync();
    const text = new TextDecoder().decode(info.stdout);
    const lines = text.split("\n");
    const cuda = lines.findIndex((l) => l.startsWith("CUDA:"));
    const end = lines.findIndex((l, i) => i > cuda && !l.startsWith("  "));
    console.log(lines.slice(cuda, end).join("\n"));
    if (dir !== libDir) console.log(`Use it with: export ${CUDA_PROVIDERS_ENV}=${dir}`);
  } catch (e) {
    if (!(e instanceof SetupError)) throw e;
    console.error(`setup:cuda: ${e.message}`);
    Deno.exit(1);
  }
}
