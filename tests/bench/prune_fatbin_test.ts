import assert from "node:assert/strict";

import { FatbinError, pruneFatbin, pruneFile } from "../../bench/gpu/prune_fatbin.ts";

const ZSTD = [0x28, 0xb5, 0x2f, 0xfd];

/** One fat binary entry: a 64-byte header, then the payload padded to 8 bytes. */
function entry(kind: number, arch: number, data: Uint8Array, unpacked: number): Uint8Array {
  const padded = Math.ceil(data.length / 8) * 8;
  const out = new Uint8Array(64 + padded);
  const v = new DataView(out.buffer);
  v.setUint16(0, kind, true);
  v.setUint16(2, 0x0101, true);
  v.setUint32(4, 64, true);
  v.setBigUint64(8, BigInt(padded), true);
  v.setUint32(16, data.length, true);
  v.setUint32(28, arch, true);
  v.setBigUint64(40, 0x8011n, true);
  v.setBigUint64(56, BigInt(unpacked), true);
  out.set(data, 64);
  return out;
}

function container(entries: Uint8Array[]): Uint8Array {
  const size = entries.reduce((n, e) => n + e.length, 0);
  const out = new Uint8Array(16 + size);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0xba55ed50, true);
  v.setUint16(4, 1, true);
  v.setUint16(6, 16, true);
  v.setBigUint64(8, BigInt(size), true);
  let at = 16;
  for (const e of entries) {
    out.set(e, at);
    at += e.length;
  }
  return out;
}

function frame(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  out.set(ZSTD);
  for (let i = 4; i < n; i++) out[i] = (i * 31 + seed * 17) % 251 + 1;
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("pruning keeps sm_90 and PTX, gives other cubins the smallest frame of their arch, moves nothing", () => {
  const small75 = entry(2, 75, frame(21, 1), 1000);
  const big75 = entry(2, 75, frame(45, 2), 2000);
  const keep90 = entry(2, 90, frame(30, 3), 3000);
  const ptx75 = entry(1, 75, frame(16, 4).fill(7, 0, 4), 16);
  const raw120 = entry(2, 120, frame(48, 5).fill(9, 0, 4), 48);
  const first = container([small75, big75, keep90, ptx75]);
  const prefix = new Uint8Array(8).fill(0xee);
  const pad = new Uint8Array((8 - (prefix.length + first.length) % 8) % 8 + 8);
  const second = container([raw120]);
  const before = concat([prefix, first, pad.fill(0), second, new Uint8Array(8).fill(0xee)]);
  const bytes = before.slice();
  const stats = pruneFatbin(bytes, prefix.length, before.length - prefix.length - 8, new Set([90]));

  assert.equal(stats.containers, 2);
  assert.deepEqual(stats.entries, { sm_75: 2, sm_90: 1, ptx_75: 1, sm_120: 1 });
  assert.equal(bytes.length, before.length);
  const at = (e: Uint8Array) => {
    const i = indexOf(before, e);
    assert.ok(i >= 0);
    return i;
  };
  const same = (e: Uint8Array) => assert.deepEqual(bytes.subarray(at(e), at(e) + e.length), e);
  same(small75); // the donor holds its own frame already
  same(keep90);
  same(ptx75);
  // The larger sm_75 cubin: the donor's frame, then zeros; its sizes are the donor's.
  const b = at(big75);
  const v = new DataView(bytes.buffer);
  assert.deepEqual(bytes.subarray(b + 64, b + 64 + 21), small75.subarray(64, 64 + 21));
  assert.ok(bytes.subarray(b + 64 + 21, b + big75.length).every((x) => x === 0));
  assert.equal(v.getUint32(b + 16, true), 21);
  assert.equal(v.getBigUint64(b + 56, true), 1000n);
  assert.deepEqual(bytes.subarray(b, b + 16), big75.subarray(0, 16));
  assert.deepEqual(bytes.subarray(b + 20, b + 56), big75.subarray(20, 56));
  // An uncompressed cubin has no frame to copy: zeros, header untouched.
  const r = at(raw120);
  assert.deepEqual(bytes.subarray(r, r + 64), raw120.subarray(0, 64));
  assert.ok(bytes.subarray(r + 64, r + raw120.length).every((x) => x === 0));
  // Nothing outside the pruned payloads and the two header fields changed.
  const changed = [...bytes.keys()].filter((i) => bytes[i] !== before[i]);
  const allowed = (i: number) =>
    (i >= b + 64 && i < b + big75.length) || (i >= r + 64 && i < r + raw120.length) ||
    (i >= b + 16 && i < b + 20) || (i >= b + 56 && i < b + 64);
  assert.deepEqual(changed.filter((i) => !allowed(i)), []);
  // Padded payloads 24 and 48 (sm_75, each left with the 21-byte frame) and 48 (sm_120).
  assert.equal(stats.zeroedBytes, (24 - 21) + (48 - 21) + 48);
});

Deno.test("bytes that are not fat binaries are refused, naming where", () => {
  const bytes = new Uint8Array(64).fill(0x55);
  assert.throws(
    () => pruneFatbin(bytes, 0, 64, new Set([90])),
    (e: unknown) =>
      e instanceof FatbinError &&
      e.message === "Cannot prune: no fat binary magic at file offset 0 (0x0)",
  );
});

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** The real CUDA provider, where `deno task setup:cuda` installed it into this checkout. */
function installed(name: string): string | undefined {
  const lib = decodeURIComponent(new URL("../../.cache/cuda/venv/lib", import.meta.url).pathname);
  try {
    for (const py of Deno.readDirSync(lib)) {
      const path = `${lib}/${py.name}/site-packages/${name}`;
      if (Deno.statSync(path).isFile) return path;
    }
  } catch {
    // not installed
  }
  return undefined;
}

const provider = installed("onnxruntime/capi/libonnxruntime_providers_cuda.so");
const cuobjdump = installed("nvidia/cu13/bin/cuobjdump");
if (provider === undefined) {
  console.log("pruning the real CUDA provider skipped: run `deno task setup:cuda` to install it");
}

Deno.test({
  name: "the real CUDA provider: cuobjdump lists the pruned file entry for entry as the original",
  ignore: provider === undefined,
  async fn(t) {
    const out = await Deno.makeTempFile({ suffix: ".so" });
    try {
      const stats = pruneFile(provider!, out, new Set([90]));
      assert.equal((await Deno.stat(out)).size, (await Deno.stat(provider!)).size);
      assert.ok(stats.entries["sm_90"]! > 0);
      assert.ok(stats.zeroedBytes > 0.4 * (await Deno.stat(provider!)).size);
      if (cuobjdump === undefined) {
        await t.step({
          name:
            "cuobjdump is not installed (pip install nvidia-cuda-cuobjdump into .cache/cuda/venv)",
          ignore: true,
          fn() {},
        });
        return;
      }
      const list = async (file: string) => {
        const r = await new Deno.Command(cuobjdump, { args: ["--list-elf", file], stdout: "piped" })
          .output();
        assert.ok(r.success, `cuobjdump --list-elf ${file}`);
        return new TextDecoder().decode(r.stdout).split("\n").filter(Boolean)
          .map((l) => l.replace(/: \S+?\.(\d+\.sm_\w+\.cubin)$/, ": $1"));
      };
      const original = await list(provider!);
      assert.deepEqual(await list(out), original);
      // cuobjdump's count per architecture is ours.
      const counts: Record<string, number> = {};
      for (const l of original) {
        const arch = /\.sm_(\d+)a?\.cubin$/.exec(l)?.[1];
        if (arch) counts[`sm_${arch}`] = (counts[`sm_${arch}`] ?? 0) + 1;
      }
      assert.deepEqual(counts, stats.entries);
    } finally {
      await Deno.remove(out);
    }
  },
});
