/**
 * Resolving `--model NAME|PATH` to a model folder and opening its components.
 *
 * @module
 */

import {
  type AsyncSessionOptions,
  autoCandidate,
  type Env,
  type ExecutionProvider,
  GraphCache,
  type ModelSource,
  Session,
  type SessionOptions,
} from "../../ffi/mod.ts";
import {
  checkComponent,
  type Manifest,
  manifestDtypes,
  ManifestError,
  missingDtype,
  type ModelDtype,
  parseManifest,
  withDtype,
} from "./manifest.ts";
import { isFile } from "../io/paths.ts";
import { OnnxFormatError, readGraphIo } from "./onnx_graph.ts";
import { modelsDir } from "./registry.ts";

/** Where the exporter builds models that are never committed (e.g. `--size bench`). */
export const CACHE_DIR: string = decodeURIComponent(
  new URL("../../.cache/models", import.meta.url).pathname,
);

/** The environment variable naming the folder of cached optimised graphs. */
export const GRAPH_CACHE_ENV = "PARASTEP_CACHE_DIR";

/**
 * Where optimised graphs are cached: `$PARASTEP_CACHE_DIR` if set, else
 * `.cache/ort` in the checkout, or for a `deno compile`d executable (whose
 * own files are read-only) `parastep/ort` in the user's cache folder
 * (`$XDG_CACHE_HOME`, else `~/.cache`).
 */
export function defaultGraphCacheDir(): string {
  const fromEnv = Deno.env.get(GRAPH_CACHE_ENV);
  if (fromEnv) return fromEnv;
  if (Deno.build.standalone) {
    const base = Deno.env.get("XDG_CACHE_HOME") || `${Deno.env.get("HOME") ?? "."}/.cache`;
    return `${base}/parastep/ort`;
  }
  return decodeURIComponent(new URL("../../.cache/ort", import.meta.url).pathname);
}

let defaultCache: GraphCache | undefined;

/** The graph cache in {@linkcode defaultGraphCacheDir} (one per realm). */
export function defaultGraphCache(): GraphCache {
  const dir = defaultGraphCacheDir();
  if (defaultCache?.dir !== dir.replace(/\/+$/, "")) defaultCache = new GraphCache(dir);
  return defaultCache;
}

/** A model folder with its validated manifest. */
export interface ModelFolder {
  /** The folder. */
  readonly dir: string;
  /** Its `manifest.json`. */
  readonly manifestFile: string;
  readonly manifest: Manifest;
}

/** `--model` names nothing that exists. */
export class ModelNotFoundError extends Error {
  override name = "ModelNotFoundError";
  /** What the user asked for. */
  readonly model: string;

  /** Says where it looked and how to export the model. */
  constructor(model: string, looked: string[]) {
    const name = model.replace(/\/+$/, "").split("/").pop()!;
    const hubId = KNOWN_CHECKPOINTS[name] ?? "<hub id or local diffusers folder>";
    const family = name.startsWith("audioldm2") ? "audioldm2" : "<family>";
    const exportCommand = name === "audioldm2-bench"
      ? "python -m models.export audioldm2 --size bench"
      : `python -m models.export ${family} --from ${hubId} --out models/${name}`;
    super(
      `Cannot find model '${model}': no manifest.json in ${looked.join(" or ")}. ` +
        `Export it first: ${exportCommand} ` +
        `(see README, "Exporting models"), or pass the path of an exported folder`,
    );
    this.model = model;
  }
}

/** Hub ids of the checkpoints a bare model name most likely means. */
const KNOWN_CHECKPOINTS: Readonly<Record<string, string>> = {
  "audioldm2": "cvssp/audioldm2",
  "audioldm2-large": "cvssp/audioldm2-large",
  "audioldm2-music": "cvssp/audioldm2-music",
};

/**
 * Finds the folder `model` names: a path to a folder holding `manifest.json`,
 * else a folder of that name under {@linkcode modelsDir}; then reads and
 * validates its manifest. With `dtype`, the manifest is that of the model in that float type
 * ({@linkcode withDtype}): the folder's own, or one of its variants.
 *
 * @throws {ModelNotFoundError} when neither exists
 * @throws {ManifestError} when the manifest is unreadable or invalid, or has no `dtype` graphs
 */
export function resolveModel(model: string, dtype?: ModelDtype): ModelFolder {
  const path = model.replace(/\/+$/, "") || model;
  // A path (absolute, or with a folder in it) names one place; a bare name may live in any.
  const candidates = path.includes("/")
    ? [path]
    : [path, `${modelsDir()}/${path}`, `${CACHE_DIR}/${path}`];
  const dir = candidates.find((c) => isFile(`${c}/manifest.json`));
  if (dir === undefined) throw new ModelNotFoundError(model, [...new Set(candidates)]);
  const manifestFile = `${dir}/manifest.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(Deno.readTextFileSync(manifestFile));
  } catch (e) {
    throw new ManifestError(manifestFile, `cannot be read as JSON: ${(e as Error).message}`);
  }
  const manifest = parseManifest(raw, manifestFile);
  return {
    dir,
    manifestFile,
    manifest: dtype === undefined ? manifest : withDtype(manifest, dtype, manifestFile),
  };
}

/** What `--dtype` may say: a float type, or `auto` ({@linkcode chooseDtype}). */
export type DtypeRequest = ModelDtype | "auto";

/** The values `--dtype` accepts. */
export const DTYPE_REQUESTS: readonly DtypeRequest[] = ["auto", "fp32", "fp16", "bf16"];

/**
 * The float type a run on `ep` uses: the one asked for, or for `auto` float16 on CUDA when the
 * folder holds float16 graphs (a real model exported with `--dtype fp32,fp16`; on a GPU with
 * tensor cores float16 halves the memory and the time of a step, as diffusers' users run it),
 * else the folder's own `dtype`. The CPU and WebGPU stay with the folder's own type under
 * `auto`: the CPU has no fast float16 kernels, and ORT 1.30's WebGPU float16 ConvTranspose is
 * wrong past ~2100 samples (see the README).
 *
 * @throws {ManifestError} when the type asked for is not in the folder, naming those it holds
 */
export function chooseDtype(
  model: ModelFolder,
  requested: DtypeRequest,
  ep: ExecutionProvider | "auto",
): ModelDtype {
  const held = manifestDtypes(model.manifest);
  if (requested !== "auto") {
    if (!held.includes(requested)) {
      throw missingDtype(model.manifest, requested, model.manifestFile);
    }
    return requested;
  }
  const provider = ep === "auto" ? autoCandidate() : ep;
  return provider === "cuda" && held.includes("fp16") ? "fp16" : model.manifest.dtype;
}

/**
 * The folder `model` names ({@linkcode resolveModel}) with the manifest of the float type a run
 * on `ep` uses ({@linkcode chooseDtype}).
 *
 * @throws as {@linkcode resolveModel} and {@linkcode chooseDtype}
 */
export function resolveModelFor(
  model: string,
  run: { readonly dtype: DtypeRequest; readonly ep: ExecutionProvider | "auto" },
): ModelFolder {
  const folder = resolveModel(model);
  const dtype = chooseDtype(folder, run.dtype, run.ep);
  return { ...folder, manifest: withDtype(folder.manifest, dtype, folder.manifestFile) };
}

/**
 * Checks that the manifest lists each of `components` and that its file is
 * there, so a broken folder is refused before any work starts.
 *
 * @throws {ManifestError} naming the first component missing
 */
export function checkComponentFiles(model: ModelFolder, components: readonly string[]): void {
  for (const component of components) componentPath(model, component);
}

/**
 * Checks that the manifest lists each of the `tokenizers` and that their
 * `tokenizer.json` and `tokenizer_config.json` are there.
 *
 * @throws {ManifestError} naming the first tokenizer or file missing
 */
export function checkTokenizerFiles(model: ModelFolder, tokenizers: readonly string[]): void {
  for (const name of tokenizers) {
    const spec = model.manifest.tokenizers[name];
    if (spec === undefined) {
      throw new ManifestError(
        model.manifestFile,
        `'tokenizers.${name}' is missing: the ${model.manifest.family} family needs it; re-export the model`,
      );
    }
    for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
      const path = `${model.dir}/${spec.dir}/${file}`;
      if (!isFile(path)) {
        throw new ManifestError(
          model.manifestFile,
          `tokenizer '${name}' file ${path} is missing; re-export the model`,
        );
      }
      checkInside(model, path, `tokenizer '${name}' file`);
    }
  }
}

function componentPath(model: ModelFolder, component: string): string {
  const spec = model.manifest.components[component];
  if (spec === undefined) {
    throw new ManifestError(
      model.manifestFile,
      `'components.${component}' is missing: the ${model.manifest.family} family needs it; re-export the model`,
    );
  }
  const path = `${model.dir}/${spec.file}`;
  if (!isFile(path)) {
    throw new ManifestError(
      model.manifestFile,
      `component '${component}' file ${path} is missing; re-export the model`,
    );
  }
  checkInside(model, path, `component '${component}' file`);
  return path;
}

/** A file reached through a symlink must still lie inside the model folder. */
function checkInside(model: ModelFolder, path: string, what: string): void {
  let real: string;
  let root: string;
  try {
    real = Deno.realPathSync(path);
    root = Deno.realPathSync(model.dir);
  } catch {
    return; // not resolvable (e.g. a file embedded in a compiled executable): nothing to escape
  }
  if (!real.startsWith(root.endsWith("/") ? root : `${root}/`)) {
    throw new ManifestError(
      model.manifestFile,
      `${what} ${path} lies outside the model folder (it resolves to ${real}); a model folder must hold its own files`,
    );
  }
}

/**
 * Checks, before any work, that each of `components` is listed, present, inside the folder,
 * and declares exactly the inputs and outputs the manifest says (read from the ONNX file itself,
 * without opening a session).
 *
 * @throws {ManifestError} naming the first component that is wrong
 */
export function checkComponentGraphs(model: ModelFolder, components: readonly string[]): void {
  for (const component of components) {
    const path = componentPath(model, component);
    const spec = model.manifest.components[component]!;
    let io;
    try {
      io = readGraphIo(path);
    } catch (e) {
      if (!(e instanceof OnnxFormatError)) throw e;
      throw new ManifestError(
        model.manifestFile,
        `component '${component}' (${spec.file}) is not a readable ONNX model: ${
          e.message.replace(/^Cannot read ONNX model [^:]*: /, "")
        }; re-export the model`,
      );
    }
    checkComponent(model.manifestFile, component, spec, io);
  }
}

/** Options for {@linkcode openComponent}: the session's, plus how the graph is loaded. */
export interface OpenComponentOptions extends SessionOptions {
  /**
   * Cache the graph as ORT optimised it and load that later (see
   * `GraphCache`): `true` uses {@linkcode defaultGraphCache}.
   * @default {false}
   */
  cache?: boolean | GraphCache;
  /**
   * How ORT gets the graph: `path` (ORT reads the file), `bytes` (read here;
   * works for files embedded in a `deno compile`d executable), `auto` (path
   * for graphs with external data, else bytes).
   * @default {"auto"}
   */
  source?: "auto" | "path" | "bytes";
}

/**
 * Opens one component's ONNX graph and checks it against the manifest.
 *
 * Graphs with external data (`<file>.data` beside them) load from their path
 * so ORT finds the data; others load from bytes, which also works inside a
 * `deno compile`d executable, whose embedded files ORT cannot open itself.
 *
 * @throws {ManifestError} for a component the manifest lacks, a missing file,
 * or a graph that disagrees with the manifest
 */
export function openComponent(
  env: Env,
  model: ModelFolder,
  component: string,
  options: OpenComponentOptions = {},
): Session {
  const open = prepareOpen(model, component, options);
  return open.checked(Session.create(env, open.source, open.options));
}

/**
 * {@linkcode openComponent} with the session loading off the calling thread
 * (`Session.createAsync`): the event loop runs meanwhile and `options.signal`
 * cancels the load. Settles only once ORT's session creation has returned.
 *
 * @throws {ManifestError} as {@linkcode openComponent}
 * @throws the signal's reason when it was aborted
 */
export async function openComponentAsync(
  env: Env,
  model: ModelFolder,
  component: string,
  options: OpenComponentOptions & Pick<AsyncSessionOptions, "signal"> = {},
): Promise<Session> {
  const open = prepareOpen(model, component, options);
  return open.checked(await Session.createAsync(env, open.source, open.options));
}

/** What opening `component` loads, with which session options, and the manifest check. */
function prepareOpen(
  model: ModelFolder,
  component: string,
  options: OpenComponentOptions & Pick<AsyncSessionOptions, "signal">,
): { source: ModelSource; options: AsyncSessionOptions; checked(session: Session): Session } {
  const path = componentPath(model, component);
  const spec = model.manifest.components[component]!;
  const { cache, source: how = "auto", ...sessionOptions } = options;
  const byPath = how === "path" || (how === "auto" && isFile(`${path}.data`));
  const graphCache = cache === true ? defaultGraphCache() : cache ? cache : undefined;
  if (graphCache !== undefined) {
    try {
      sessionOptions.modelHash = graphCache.modelHash(path);
      sessionOptions.graphCache = graphCache;
    } catch (e) {
      // A model the cache cannot hash (e.g. unreadable metadata) still opens, uncached.
      graphCache.warn(`cannot hash ${path} for the graph cache: ${(e as Error).message}`);
    }
  }
  return {
    source: byPath ? path : () => Deno.readFileSync(path),
    options: sessionOptions,
    checked(session) {
      try {
        checkComponent(model.manifestFile, component, spec, session);
      } catch (e) {
        session.close();
        throw e;
      }
      return session;
    },
  };
}
