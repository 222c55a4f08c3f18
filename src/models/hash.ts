/**
 * A model folder's identity across hosts (docs/multihost.md §4): the content hash of its
 * manifest, and resolving a folder by name strictly inside a models directory (a serving host
 * never opens a path a coordinator sent).
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { ModelDtype } from "./manifest.ts";
import { type ModelFolder, resolveModel } from "./model.ts";

/** The JSON of `value` with every object's keys sorted (the hash's canonical form). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The content hash of a model folder: SHA-256 (hex) of its `manifest.json` in canonical JSON
 * (keys sorted, whitespace dropped), so two copies of one export agree however they were copied.
 *
 * @example
 * ```ts ignore
 * const hash = manifestHash("models/audioldm2-tiny/manifest.json");
 * ```
 */
export function manifestHash(manifestFile: string): string {
  const raw: unknown = JSON.parse(Deno.readTextFileSync(manifestFile));
  return createHash("sha256").update(canonicalJson(raw)).digest("hex");
}

/** A model name a host accepts: one folder name, no path. */
export const MODEL_NAME = /^[A-Za-z0-9._-]+$/;

/**
 * The model folder `name` under `modelsDir`, refusing (one line) a name that is not a plain
 * folder name, a folder whose real path leaves `modelsDir` (a symlink out), and a component file
 * of `components` whose real path leaves the folder. With `dtype`, the components are those of
 * the model in that float type (`resolveModel`).
 *
 * @throws {RangeError} For a name or folder that would leave `modelsDir`.
 * @throws {ModelNotFoundError} When there is no such folder.
 */
export function servedModel(
  modelsDir: string,
  name: string,
  components: readonly string[] = [],
  dtype?: ModelDtype,
): ModelFolder {
  if (!MODEL_NAME.test(name) || name === "." || name === "..") {
    throw new RangeError(
      `Cannot serve model ${JSON.stringify(name)} as a model is named by its folder name ` +
        `(letters, digits, '.', '_' and '-'), never by a path`,
    );
  }
  const root = Deno.realPathSync(modelsDir);
  const inside = (path: string, dir: string) => path === dir || path.startsWith(`${dir}/`);
  let folder: string;
  try {
    folder = Deno.realPathSync(`${root}/${name}`);
  } catch {
    folder = `${root}/${name}`;
  }
  if (!inside(folder, root)) {
    throw new RangeError(
      `Cannot serve model ${name} as its folder leads outside the models directory ${root}`,
    );
  }
  const model = resolveModel(`${root}/${name}`, dtype);
  for (const component of components) {
    const spec = model.manifest.components[component];
    if (spec === undefined) {
      throw new RangeError(`Cannot serve model ${name} as its manifest has no '${component}'`);
    }
    const file = Deno.realPathSync(`${model.dir}/${spec.file}`);
    if (!inside(file, folder)) {
      throw new RangeError(
        `Cannot serve model ${name} as component '${component}' leads outside its folder`,
      );
    }
  }
  return model;
}
