/**
 * Copies of the committed tiny model that a test may break on purpose.
 *
 * @module
 */

/** The committed tiny AudioLDM2. */
export const TINY_AUDIOLDM2: string = new URL("../../models/audioldm2-tiny", import.meta.url)
  .pathname;

/** Copies the model folder `from` to `to` (its reference outputs left out). */
export async function copyModel(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.name === "reference") continue;
    const [src, dst] = [`${from}/${entry.name}`, `${to}/${entry.name}`];
    if (entry.isDirectory) await copyModel(src, dst);
    else await Deno.copyFile(src, dst);
  }
}

/** Rewrites `dir/manifest.json` with `edit` applied to its parsed JSON. */
export async function editManifest(
  dir: string,
  edit: (manifest: Record<string, unknown>) => void,
): Promise<void> {
  const file = `${dir}/manifest.json`;
  const manifest = JSON.parse(await Deno.readTextFile(file));
  edit(manifest);
  await Deno.writeTextFile(file, JSON.stringify(manifest, null, 2));
}
