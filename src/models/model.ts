/**
 * Resolving `--model NAME|PATH` to a model folder and opening its components.
 *
 * @module
 */

import {
  type Env,
  GraphCache,
  PrepackedWeights,
  Session,
  type SessionOptions,
  SharedWeights,
  type SharedWeightsData,
  shareWeights,
} from "../../ffi/mod.ts";
import { checkComponent, type Manifest, ManifestError, parseManifest } from "./manifest.ts";
import { isFile } from "../io/paths.ts";
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
 * validates its manifest.
 *
 * @throws {ModelNotFoundError} when neither exists
 * @throws {ManifestError} when the manifest is unreadable or invalid
 */
export function resolveModel(model: string): ModelFolder {
  const candidates = [
    model.replace(/\/+$/, ""),
    `${modelsDir()}/${model}`,
    `${CACHE_DIR}/${model}`,
  ];
  const dir = candidates.find((c) => isFile(`${c}/manifest.json`));
  if (dir === undefined) throw new ModelNotFoundError(model, [...new Set(candidates)]);
  const manifestFile = `${dir}/manifest.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(Deno.readTextFileSync(manifestFile));
  } catch (e) {
    throw new ManifestError(manifestFile, `cannot be read as JSON: ${(e as Error).message}`);
  }
  return { dir, manifestFile, manifest: parseManifest(raw, manifestFile) };
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
        `'tokenizers.${name}' is missing: a ${model.manifest.family} model needs it; re-export the model`,
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
    }
  }
}

function componentPath(model: ModelFolder, component: string): string {
  const spec = model.manifest.components[component];
  if (spec === undefined) {
    throw new ManifestError(
      model.manifestFile,
      `'components.${component}' is missing: a ${model.manifest.family} model needs it; re-export the model`,
    );
  }
  const path = `${model.dir}/${spec.file}`;
  if (!isFile(path)) {
    throw new ManifestError(
      model.manifestFile,
      `component '${component}' file ${path} is missing; re-export the model`,
    );
  }
  return path;
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
   * The component's weights in shared memory ({@linkcode shareComponentWeights},
   * made once and posted to every Worker): the session uses them instead of
   * its own copy.
   */
  weights?: SharedWeightsData;
  /**
   * A pre-packed weights container, or the address of one another Worker of
   * this process owns (`PrepackedWeights.address`): sessions sharing it keep
   * one pre-packed copy of the shared `weights`. Only with `weights`.
   */
  prepacked?: PrepackedWeights | bigint;
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
  const path = componentPath(model, component);
  const spec = model.manifest.components[component]!;
  const { cache, weights, prepacked, source: how = "auto", ...sessionOptions } = options;
  if (prepacked !== undefined && weights === undefined) {
    throw new RangeError(
      `Cannot open ${component} with a prepacked weights container but no shared weights: ` +
        "ORT shares pre-packed copies of shared weights only; pass 'weights' as well",
    );
  }
  const byPath = how === "path" || (how === "auto" && isFile(`${path}.data`));
  const source = byPath ? path : () => Deno.readFileSync(path);
  const graphCache = cache === true ? defaultGraphCache() : cache ? cache : undefined;
  const opened: { close(): void }[] = [];
  let session: Session;
  try {
    if (graphCache !== undefined) {
      try {
        sessionOptions.modelHash = graphCache.modelHash(path);
        sessionOptions.graphCache = graphCache;
      } catch (e) {
        // A model the cache cannot hash (e.g. unreadable metadata) still opens, uncached.
        graphCache.warn(`cannot hash ${path} for the graph cache: ${(e as Error).message}`);
      }
    }
    if (weights !== undefined) {
      const shared = SharedWeights.open(weights);
      opened.push(shared);
      sessionOptions.sharedWeights = shared;
    }
    if (prepacked !== undefined) {
      const container = typeof prepacked === "bigint"
        ? PrepackedWeights.borrow(prepacked)
        : prepacked;
      if (typeof prepacked === "bigint") opened.push(container);
      sessionOptions.prepackedWeights = container;
    }
    session = Session.create(env, source, sessionOptions);
  } finally {
    // The session holds what it uses; these handles are released with it.
    for (const o of opened) o.close();
  }
  try {
    checkComponent(model.manifestFile, component, spec, session);
  } catch (e) {
    session.close();
    throw e;
  }
  return session;
}

/**
 * The weights of `component` copied once into shared memory, to post to the
 * Workers that open it (`openComponent(..., { weights })`), so they share
 * one copy instead of holding one each.
 *
 * @throws {ManifestError} for a component the manifest lacks or a missing file
 */
export function shareComponentWeights(model: ModelFolder, component: string): SharedWeightsData {
  const path = componentPath(model, component);
  // External data locations are relative to the graph's own folder.
  return shareWeights(Deno.readFileSync(path), { dir: path.slice(0, path.lastIndexOf("/")) });
}
