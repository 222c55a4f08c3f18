/**
 * Just enough of ELF64 (little-endian, as on Linux x86-64 and aarch64) to read
 * a shared library's dynamic section (`DT_SONAME`, `DT_NEEDED`, `DT_RUNPATH`)
 * and its section table, reading only the bytes involved: a 1 GB cuDNN
 * library costs a few kilobytes of reads.
 *
 * The CUDA setup uses it to load the CUDA libraries in dependency order and
 * to name exactly which file the CUDA provider needs; the GPU-check tooling
 * uses the section table to find `.nv_fatbin`.
 *
 * @module
 */

/** What the dynamic section of a shared library says about linking. */
export interface ElfDynamic {
  /** `DT_SONAME`, the name other libraries ask for, if set. */
  readonly soname: string | undefined;
  /** `DT_NEEDED`, in file order. */
  readonly needed: readonly string[];
  /** `DT_RUNPATH` (or the older `DT_RPATH`), if set. */
  readonly runpath: string | undefined;
}

/** One entry of the section header table. */
export interface ElfSection {
  /** The section's name, e.g. `.nv_fatbin`. */
  readonly name: string;
  /** Its offset in the file. */
  readonly offset: number;
  /** Its size in bytes (in the file; 0 for `SHT_NOBITS`). */
  readonly size: number;
}

/** A file that is not a 64-bit little-endian ELF, or whose tables do not add up. */
export class ElfError extends Error {
  override name = "ElfError";
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const DT_NULL = 0n;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;
const DT_STRSZ = 10n;
const DT_SONAME = 14n;
const DT_RPATH = 15n;
const DT_RUNPATH = 29n;
const SHT_NOBITS = 8;

/** Reads `length` bytes at `offset`, or fails naming the file. */
function readAt(file: Deno.FsFile, path: string, offset: number, length: number): DataView {
  const buf = new Uint8Array(length);
  file.seekSync(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < length) {
    const n = file.readSync(buf.subarray(got));
    if (n === null) {
      throw new ElfError(
        `Cannot read ${path} as an ELF file: it ends at byte ${
          offset + got
        }, inside a table that runs to ${offset + length}`,
      );
    }
    got += n;
  }
  return new DataView(buf.buffer);
}

interface Header {
  phoff: number;
  phentsize: number;
  phnum: number;
  shoff: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

function header(file: Deno.FsFile, path: string): Header {
  const h = readAt(file, path, 0, 64);
  if (h.getUint32(0, false) !== 0x7f454c46) {
    throw new ElfError(`Cannot read ${path} as an ELF file: it does not start with \\x7fELF`);
  }
  if (h.getUint8(4) !== 2 || h.getUint8(5) !== 1) {
    throw new ElfError(`Cannot read ${path}: only 64-bit little-endian ELF files are supported`);
  }
  return {
    phoff: Number(h.getBigUint64(0x20, true)),
    phentsize: h.getUint16(0x36, true),
    phnum: h.getUint16(0x38, true),
    shoff: Number(h.getBigUint64(0x28, true)),
    shentsize: h.getUint16(0x3a, true),
    shnum: h.getUint16(0x3c, true),
    shstrndx: h.getUint16(0x3e, true),
  };
}

function cStringAt(bytes: Uint8Array, offset: number): string {
  let end = offset;
  while (end < bytes.length && bytes[end] !== 0) end++;
  return new TextDecoder().decode(bytes.subarray(offset, end));
}

/**
 * Reads the dynamic section of the ELF shared library at `path`.
 *
 * @throws {ElfError} for a file that is not a 64-bit little-endian ELF
 * @throws {Deno.errors.NotFound} for a missing file
 */
export function readElfDynamic(path: string): ElfDynamic {
  using file = Deno.openSync(path);
  const h = header(file, path);
  const ph = readAt(file, path, h.phoff, h.phentsize * h.phnum);
  const loads: { vaddr: bigint; offset: bigint; filesz: bigint }[] = [];
  let dynamic: { offset: number; size: number } | undefined;
  for (let i = 0; i < h.phnum; i++) {
    const at = i * h.phentsize;
    const type = ph.getUint32(at, true);
    const offset = ph.getBigUint64(at + 8, true);
    const vaddr = ph.getBigUint64(at + 16, true);
    const filesz = ph.getBigUint64(at + 32, true);
    if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
    if (type === PT_DYNAMIC) dynamic = { offset: Number(offset), size: Number(filesz) };
  }
  if (dynamic === undefined) return { soname: undefined, needed: [], runpath: undefined };
  const dyn = readAt(file, path, dynamic.offset, dynamic.size);
  const entries: [bigint, bigint][] = [];
  for (let at = 0; at + 16 <= dynamic.size; at += 16) {
    const tag = dyn.getBigInt64(at, true);
    if (tag === DT_NULL) break;
    entries.push([tag, dyn.getBigUint64(at + 8, true)]);
  }
  const value = (tag: bigint) => entries.find(([t]) => t === tag)?.[1];
  const strtab = value(DT_STRTAB);
  const strsz = value(DT_STRSZ);
  if (strtab === undefined || strsz === undefined) {
    throw new ElfError(`Cannot read ${path}: its dynamic section has no string table`);
  }
  // DT_STRTAB is a virtual address: find the loaded segment that holds it.
  const segment = loads.find((l) => strtab >= l.vaddr && strtab < l.vaddr + l.filesz);
  if (segment === undefined) {
    throw new ElfError(`Cannot read ${path}: its dynamic string table lies in no loaded segment`);
  }
  const strings = new Uint8Array(
    readAt(file, path, Number(strtab - segment.vaddr + segment.offset), Number(strsz)).buffer,
  );
  const str = (v: bigint) => cStringAt(strings, Number(v));
  const soname = value(DT_SONAME);
  const runpath = value(DT_RUNPATH) ?? value(DT_RPATH);
  return {
    soname: soname === undefined ? undefined : str(soname),
    needed: entries.filter(([t]) => t === DT_NEEDED).map(([, v]) => str(v)),
    runpath: runpath === undefined ? undefined : str(runpath),
  };
}

/**
 * Reads the section header table of the ELF file at `path`.
 *
 * @throws {ElfError} for a file that is not a 64-bit little-endian ELF
 */
export function readElfSections(path: string): ElfSection[] {
  using file = Deno.openSync(path);
  const h = header(file, path);
  if (h.shnum === 0) return [];
  const sh = readAt(file, path, h.shoff, h.shentsize * h.shnum);
  const raw = Array.from({ length: h.shnum }, (_, i) => {
    const at = i * h.shentsize;
    return {
      nameOffset: sh.getUint32(at, true),
      type: sh.getUint32(at + 4, true),
      offset: Number(sh.getBigUint64(at + 24, true)),
      size: Number(sh.getBigUint64(at + 32, true)),
    };
  });
  const names = raw[h.shstrndx];
  if (names === undefined) throw new ElfError(`Cannot read ${path}: no section name table`);
  const strings = new Uint8Array(readAt(file, path, names.offset, names.size).buffer);
  return raw.map((s) => ({
    name: cStringAt(strings, s.nameOffset),
    offset: s.offset,
    size: s.type === SHT_NOBITS ? 0 : s.size,
  }));
}
