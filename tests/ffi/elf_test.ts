import assert from "node:assert/strict";

import { ElfError, libraryCandidates, readElfDynamic, readElfSections } from "../../ffi/mod.ts";

const library = libraryCandidates().find((c) => {
  try {
    return c.foundBy === "npm-package" && Deno.statSync(c.path).isFile;
  } catch {
    return false;
  }
})?.path;

/** `readelf` (binutils) as the reference, when it is installed. */
async function readelf(args: string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("readelf", { args, stdout: "piped" }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : undefined;
  } catch {
    return undefined;
  }
}

Deno.test("the dynamic section of libonnxruntime reads as readelf reads it", async (t) => {
  assert.ok(library, "npm ci first");
  const ours = readElfDynamic(library);
  const reference = await readelf(["-dW", library]);
  if (reference === undefined) {
    await t.step({
      name: "readelf is not installed: compared with nothing",
      ignore: true,
      fn() {},
    });
    return;
  }
  const all = (tag: string) =>
    [...reference.matchAll(new RegExp(`\\(${tag}\\)\\s+.*?\\[(.*)\\]`, "g"))].map((m) => m[1]);
  assert.deepEqual(ours.needed, all("NEEDED"));
  assert.equal(ours.soname, all("SONAME")[0]);
  assert.equal(ours.runpath, all("RUNPATH")[0] ?? all("RPATH")[0]);
  assert.ok(ours.needed.length > 3);
});

Deno.test("the section table of libonnxruntime reads as readelf reads it", async () => {
  assert.ok(library, "npm ci first");
  const reference = await readelf(["-SW", library]);
  if (reference === undefined) return;
  const ours = readElfSections(library);
  const rows = [...reference.matchAll(/\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)/g)]
    .map((m) => ({ name: m[1], offset: parseInt(m[2]!, 16), size: parseInt(m[3]!, 16) }));
  const named = ours.filter((s) => s.name !== "");
  assert.ok(named.length > 10);
  for (const s of named) {
    const r = rows.find((r) => r.name === s.name);
    assert.ok(r, s.name);
    assert.equal(s.offset, r.offset, s.name);
    if (s.name !== ".bss" && s.name !== ".tbss") assert.equal(s.size, r.size, s.name);
  }
});

Deno.test("a file that is not ELF is named with the reason", async () => {
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeFile(file, new Uint8Array(64).fill(7));
    assert.throws(() => readElfDynamic(file), (e: unknown) => {
      assert.ok(e instanceof ElfError);
      assert.equal(
        e.message,
        `Cannot read ${file} as an ELF file: it does not start with \\x7fELF`,
      );
      return true;
    });
    await Deno.writeFile(file, new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1]));
    assert.throws(() => readElfDynamic(file), /it ends at byte 6, inside a table that runs to 64/);
  } finally {
    await Deno.remove(file);
  }
});
