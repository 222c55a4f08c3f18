/**
 * Where model folders live and which ones are there.
 *
 * @module
 */

/** The environment variable naming the folder that holds model folders. */
export const MODELS_ENV = "PARASTEP_MODELS";

/** The models folder: `$PARASTEP_MODELS`, else `models/` beside this checkout's `main.ts`. */
export function modelsDir(): string {
  const fromEnv = Deno.env.get(MODELS_ENV);
  if (fromEnv) return fromEnv.replace(/\/+$/, "");
  return decodeURIComponent(new URL("../../models", import.meta.url).pathname);
}

/** A model folder found under {@linkcode modelsDir}. */
export interface ModelEntry {
  /** The folder name, which `--model` accepts. */
  readonly name: string;
  /** The folder path. */
  readonly path: string;
  /** The pipeline family from the manifest, e.g. `audioldm2`. */
  readonly family: string;
  /** The float type of the weights, then those of its variants: e.g. `fp32+fp16`. */
  readonly dtype: string;
  /** Total size of the folder's files in bytes. */
  readonly bytes: number;
}

function folderBytes(path: string): number {
  let total = 0;
  for (const entry of Deno.readDirSync(path)) {
    const child = `${path}/${entry.name}`;
    if (entry.isDirectory) total += folderBytes(child);
    else if (entry.isFile) total += Deno.statSync(child).size;
  }
  return total;
}

/**
 * The folders under `dir` that hold a `manifest.json`, sorted by name. A
 * missing `dir` gives an empty list; an unreadable manifest is skipped.
 */
export function listModels(dir: string = modelsDir()): ModelEntry[] {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const models: ModelEntry[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory) continue;
    const path = `${dir}/${entry.name}`;
    let manifest: { family?: unknown; dtype?: unknown; variants?: unknown };
    try {
      manifest = JSON.parse(Deno.readTextFileSync(`${path}/manifest.json`));
    } catch {
      continue;
    }
    models.push({
      name: entry.name,
      path,
      family: typeof manifest.family === "string" ? manifest.family : "unknown",
      dtype: [
        typeof manifest.dtype === "string" ? manifest.dtype : "unknown",
        ...(typeof manifest.variants === "object" && manifest.variants !== null
          ? Object.keys(manifest.variants)
          : []),
      ].join("+"),
      bytes: folderBytes(path),
    });
  }
  return models.sort((a, b) => a.name.localeCompare(b.name));
}
