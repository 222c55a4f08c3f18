/**
 * Shrinks a CUDA library for one GPU architecture by zeroing, in its
 * `.nv_fatbin` section, the payloads of the device code built for the other
 * architectures. Every offset stays where it was (the host code refers to the
 * fat binaries by address), every entry keeps its header, and only the bytes
 * of the cubins the target GPU never loads become zeros, which xz then
 * squeezes to almost nothing. ONNX Runtime 1.30.0's CUDA provider (272 MB)
 * holds cubins for sm_75, 80, 86, 89, 90a and 120a; an H100 or H200 (compute
 * capability 9.0) loads only sm_90a's.
 *
 * The fat binary layout read here, as `cuobjdump --list-elf` lists it:
 *
 * - a container: u32 magic 0xBA55ED50, u16 version, u16 header size,
 *   u64 size of the entries that follow; containers are 8-byte aligned,
 *   zero padding between them;
 * - an entry: u16 kind (1 PTX, 2 cubin), u16 version, u32 header size,
 *   u64 payload size (the payload follows the header, padded to 8 bytes),
 *   u32 at byte 16 the size of the compressed data within the payload, u32 at
 *   byte 28 the architecture (90 for sm_90 and sm_90a), u64 at byte 56 the
 *   uncompressed size. In this provider every cubin is a zstd frame.
 *
 * A zeroed zstd payload makes tools that decompress and parse every entry
 * fail (`cuobjdump --list-elf`: "Uncompress failed", then "Invalid ELF"), so
 * each pruned compressed entry instead gets a copy of the smallest compressed
 * cubin of its own architecture (a few KB; its compressed and uncompressed
 * sizes are copied into the entry's header) followed by zeros: the file stays
 * a valid fat binary that NVIDIA's tools list entry for entry as before.
 *
 * Usage: deno run --allow-read --allow-write bench/gpu/prune_fatbin.ts IN OUT [--keep 90]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readElfSections } from "../../ffi/elf.ts";

/** `0xBA55ED50`, the fat binary container magic. */
export const FATBIN_MAGIC = 0xba55ed50;
/** The entry kind of a cubin (ELF device code); 1 is PTX. */
export const KIND_CUBIN = 2;

const ZSTD_MAGIC = 0xfd2fb528;

/** What was found and zeroed, per architecture. */
export interface PruneStats {
  /** Fat binary containers walked. */
  readonly containers: number;
  /** Entries per `sm_XX` (cubins) or `ptx_XX` (PTX), e.g. `{ sm_90: 569 }`. */
  readonly entries: Record<string, number>;
  /** Payload bytes per `sm_XX` / `ptx_XX`. */
  readonly payloadBytes: Record<string, number>;
  /** Payload bytes set to zero. */
  readonly zeroedBytes: number;
}

/** The section does not hold fat binaries laid out as above. */
export class FatbinError extends Error {
  override name = "FatbinError";
}

/**
 * Zeroes, in place, the cubin payloads in `bytes[offset, offset + size)` whose
 * architecture is not in `keep`; PTX entries are kept (a driver may JIT them).
 *
 * @throws {FatbinError} where the bytes are not fat binaries
 */
export function pruneFatbin(
  bytes: Uint8Array,
  offset: number,
  size: number,
  keep: ReadonlySet<number>,
): PruneStats {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const found = walk(bytes, view, offset, size);
  const entries: Record<string, number> = {};
  const payloadBytes: Record<string, number> = {};
  /** The smallest compressed cubin of each architecture, copied into its pruned entries. */
  const donor = new Map<number, { frame: Uint8Array; packed: number; unpacked: bigint }>();
  for (const e of found.entries) {
    const key = `${e.kind === KIND_CUBIN ? "sm" : "ptx"}_${e.arch}`;
    entries[key] = (entries[key] ?? 0) + 1;
    payloadBytes[key] = (payloadBytes[key] ?? 0) + e.payload;
    if (e.compressed && e.packed < (donor.get(e.arch)?.packed ?? Infinity)) {
      donor.set(e.arch, {
        frame: bytes.slice(e.start, e.start + e.packed),
        packed: e.packed,
        unpacked: view.getBigUint64(e.at + 56, true),
      });
    }
  }
  let zeroed = 0;
  for (const e of found.entries) {
    if (e.kind !== KIND_CUBIN || keep.has(e.arch)) continue;
    bytes.fill(0, e.start, e.start + e.payload);
    zeroed += e.payload;
    const d = e.compressed ? donor.get(e.arch) : undefined;
    if (d === undefined) continue;
    bytes.set(d.frame, e.start);
    view.setUint32(e.at + 16, d.packed, true);
    view.setBigUint64(e.at + 56, d.unpacked, true);
    zeroed -= d.packed;
  }
  return { containers: found.containers, entries, payloadBytes, zeroedBytes: zeroed };
}

interface Entry {
  /** The entry header's offset. */
  at: number;
  /** The payload's offset. */
  start: number;
  kind: number;
  arch: number;
  /** The payload's size (padded). */
  payload: number;
  /** Bytes of compressed data in the payload (header byte 16). */
  packed: number;
  /** Whether the payload is a zstd frame. */
  compressed: boolean;
}

function walk(bytes: Uint8Array, view: DataView, offset: number, size: number) {
  const end = offset + size;
  const entries: Entry[] = [];
  let containers = 0;
  let at = offset;
  while (at < end) {
    if (at + 16 > end || view.getUint32(at, true) !== FATBIN_MAGIC) {
      // Zero padding lies between fat binaries (each is 8-byte aligned); anything else is not ours.
      if (bytes[at] === 0) {
        at++;
        continue;
      }
      throw new FatbinError(
        `Cannot prune: no fat binary magic at file offset ${at} (0x${at.toString(16)})`,
      );
    }
    containers++;
    const headerSize = view.getUint16(at + 6, true);
    const containerEnd = at + headerSize + Number(view.getBigUint64(at + 8, true));
    if (containerEnd > end) {
      throw new FatbinError(`Cannot prune: the fat binary at byte ${at} runs past its section`);
    }
    let e = at + headerSize;
    while (e < containerEnd) {
      const header = view.getUint32(e + 4, true);
      const payload = Number(view.getBigUint64(e + 8, true));
      const start = e + header;
      if (header < 64 || start + payload > containerEnd) {
        throw new FatbinError(`Cannot prune: the entry at byte ${e} runs past its fat binary`);
      }
      const packed = view.getUint32(e + 16, true);
      entries.push({
        at: e,
        start,
        kind: view.getUint16(e, true),
        arch: view.getUint32(e + 28, true),
        payload,
        packed: packed > 0 && packed <= payload ? packed : payload,
        compressed: payload >= 4 && view.getUint32(start, true) === ZSTD_MAGIC,
      });
      e = start + payload;
    }
    if (e !== containerEnd) {
      throw new FatbinError(`Cannot prune: the entries of the fat binary at byte ${at} overrun it`);
    }
    at = containerEnd;
  }
  return { containers, entries };
}

/**
 * Writes to `output` a copy of the ELF file `input` whose `.nv_fatbin` keeps
 * only the cubins for the architectures in `keep` (e.g. 90).
 *
 * @throws {FatbinError} for a file without a `.nv_fatbin` section
 */
export function pruneFile(input: string, output: string, keep: ReadonlySet<number>): PruneStats {
  const section = readElfSections(input).find((s) => s.name === ".nv_fatbin");
  if (section === undefined) {
    throw new FatbinError(`Cannot prune ${input}: it has no .nv_fatbin section`);
  }
  const bytes = Deno.readFileSync(input);
  const stats = pruneFatbin(bytes, section.offset, section.size, keep);
  const tmp = `${output}.ps-${crypto.randomUUID().slice(0, 8)}.tmp`;
  Deno.writeFileSync(tmp, bytes, { mode: Deno.statSync(input).mode ?? 0o755 });
  Deno.renameSync(tmp, output);
  return stats;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { keep: { type: "string", default: "90" } },
  });
  const keep = new Set(values.keep.split(",").map(Number));
  if (positionals.length !== 2 || [...keep].some((k) => !Number.isInteger(k) || k <= 0)) {
    console.error("usage: prune_fatbin.ts IN OUT [--keep 90[,89...]]");
    Deno.exit(2);
  }
  try {
    const [input, output] = positionals as [string, string];
    const s = pruneFile(input, output, keep);
    const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
    console.log(`${output}: ${s.containers} fat binaries; zeroed ${mb(s.zeroedBytes)}`);
    for (const [k, n] of Object.entries(s.entries).sort()) {
      const kept = !k.startsWith("sm_") || keep.has(Number(k.slice(3)));
      console.log(
        `  ${k.padEnd(7)} ${String(n).padStart(5)} entries ${mb(s.payloadBytes[k]!).padStart(9)} ${
          kept ? "kept" : "zeroed"
        }`,
      );
    }
  } catch (e) {
    if (!(e instanceof FatbinError)) throw e;
    console.error(`prune_fatbin: ${e.message}`);
    Deno.exit(1);
  }
}
