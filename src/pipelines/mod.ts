/**
 * The model families and the generic pipeline: the registry that maps a manifest's `family`
 * to its folder (one line per family), the family contract, the denoising engines and
 * {@linkcode generate}.
 *
 * @module
 */

import { ManifestError } from "../models/manifest.ts";
import type { ModelFolder } from "../models/model.ts";
import { audioldm2 } from "./audioldm2/mod.ts";
import { svd } from "./svd/mod.ts";
import { cogvideox } from "./cogvideox/mod.ts";
import type { FlagSpec, PipelineFamily } from "./family.ts";

export * from "./family.ts";
export * from "./denoise.ts";
export * from "./generate.ts";

/** Every family parastep runs, by the manifest's `family` value. */
export const FAMILIES: Readonly<Record<string, PipelineFamily>> = {
  audioldm2,
  svd,
  cogvideox,
};

/**
 * The family of `model`, after checking the manifest's family-specific fields.
 *
 * @throws {ManifestError} for an unknown family or a field the family refuses
 */
export function familyOf(model: ModelFolder): PipelineFamily {
  const family = FAMILIES[model.manifest.family];
  if (family === undefined) {
    throw new ManifestError(
      model.manifestFile,
      `'family' must be one of ${
        Object.keys(FAMILIES).join(", ")
      }: found "${model.manifest.family}" ` +
        "(a newer parastep may run it)",
    );
  }
  family.checkManifest(model);
  return family;
}

/**
 * Every family flag, each once, with the families that take it (a flag several families share,
 * like `--prompt`, must be declared alike by each).
 */
export function familyFlags(): Map<string, { spec: FlagSpec; families: string[] }> {
  const flags = new Map<string, { spec: FlagSpec; families: string[] }>();
  for (const family of Object.values(FAMILIES)) {
    for (const spec of family.flags) {
      const known = flags.get(spec.name);
      if (known === undefined) flags.set(spec.name, { spec, families: [family.name] });
      else known.families.push(family.name);
    }
  }
  return flags;
}
