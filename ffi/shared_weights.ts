/**
 * Sharing one model's weights between the sessions of one process, e.g. the
 * denoiser of every ParaStep Worker: the weights sit once in a
 * `SharedArrayBuffer` ({@linkcode shareWeights}) that every Worker receives
 * (structured clone shares its memory), each session takes them from there
 * (`AddInitializer`, {@linkcode SharedWeights}) instead of keeping its own
 * copy, and a {@linkcode PrepackedWeights} container keeps one pre-packed
 * copy of them (e.g. MLAS-packed MatMul weights) for all sessions.
 *
 * ORT shares pre-packed weights only for initializers added this way, and
 * only for nodes on the CPU execution provider. Each session still runs
 * its kernels' `PrePack` (ORT compares the result with the cached copy
 * before it drops its own), so the container saves memory, not load time.
 *
 * @module
 */

import { ELEMENT_TYPE, ORT_ARENA_ALLOCATOR, ORT_MEM_TYPE_DEFAULT } from "./_defs.ts";
import { ClosedError } from "./errors.ts";
import { check, cString, ortLibrary, pointerOut, readPointer } from "./library.ts";
import { type InitializerInfo, readInitializers } from "./onnx_initializers.ts";
import { BYTES_PER_ELEMENT, type DataType, elementCount } from "./tensor.ts";
import { dataTypeOf } from "./value.ts";

/** One tensor of a {@linkcode SharedWeightsData}. */
export interface SharedTensor {
  readonly name: string;
  readonly type: DataType;
  readonly dims: readonly number[];
  /** Byte offset in the buffer (64-byte aligned). */
  readonly offset: number;
  readonly byteLength: number;
}

/**
 * A model's weights in one shared buffer: plain data, so it can be posted to
 * Workers, which then see the same memory.
 */
export interface SharedWeightsData {
  readonly buffer: SharedArrayBuffer;
  readonly tensors: readonly SharedTensor[];
}

/** Options for {@linkcode shareWeights}. */
export interface ShareWeightsOptions {
  /**
   * The model's folder, where external data files are found; external data is
   * skipped (left to ORT) without it.
   */
  dir?: string;
  /** Initializers smaller than this stay with ORT (not worth a native value each). @default {1024} */
  minBytes?: number;
}

const ALIGN = 64;

/**
 * Copies the weights of the ONNX model in `model` (at least `minBytes` each,
 * of a type parastep handles) into one new `SharedArrayBuffer`.
 *
 * @throws {OnnxFormatError} when `model` is not a well-formed ONNX protobuf
 */
export function shareWeights(
  model: Uint8Array,
  options: ShareWeightsOptions = {},
): SharedWeightsData {
  const minBytes = options.minBytes ?? 1024;
  const picked: { info: InitializerInfo; type: DataType; bytes: number }[] = [];
  for (const info of readInitializers(model)) {
    const type = dataTypeOf(info.dataType);
    if (type === undefined || info.data.kind === "typed") continue;
    if (info.data.kind === "external" && options.dir === undefined) continue;
    const bytes = elementCount(info.dims) * BYTES_PER_ELEMENT[type];
    if (bytes < minBytes) continue;
    if (info.data.kind === "raw" && info.data.byteLength !== bytes) continue; // malformed: ORT will say so
    picked.push({ info, type, bytes });
  }
  let total = 0;
  const offsets = picked.map(({ bytes }) => {
    const at = total;
    total += Math.ceil(bytes / ALIGN) * ALIGN;
    return at;
  });
  const buffer = new SharedArrayBuffer(total);
  const target = new Uint8Array(buffer);
  const files = new Map<string, Deno.FsFile>();
  try {
    picked.forEach(({ info, bytes }, k) => {
      const at = offsets[k]!;
      if (info.data.kind === "raw") {
        target.set(model.subarray(info.data.offset, info.data.offset + bytes), at);
        return;
      }
      if (info.data.kind !== "external") return;
      const path = `${options.dir}/${info.data.location}`;
      let file = files.get(path);
      if (file === undefined) {
        file = Deno.openSync(path, { read: true });
        files.set(path, file);
      }
      file.seekSync(info.data.offset, Deno.SeekMode.Start);
      const view = target.subarray(at, at + bytes);
      for (let read = 0; read < bytes;) {
        const n = file.readSync(view.subarray(read));
        if (n === null || n === 0) {
          throw new RangeError(
            `Cannot share the weights as ${path} ends before initializer '${info.name}' does; re-export the model`,
          );
        }
        read += n;
      }
    });
  } finally {
    for (const file of files.values()) file.close();
  }
  return {
    buffer,
    tensors: picked.map(({ info, type, bytes }, k) => ({
      name: info.name,
      type,
      dims: info.dims,
      offset: offsets[k]!,
      byteLength: bytes,
    })),
  };
}

/**
 * Native tensors over a {@linkcode SharedWeightsData}, in this realm, to give
 * to sessions (`SessionOptions.sharedWeights`): ORT then uses that memory as
 * the model's weights instead of its own copy.
 *
 * Sessions retain it; {@linkcode SharedWeights.close} releases the native
 * values once every session created with it is closed. The buffer stays
 * referenced meanwhile.
 */
export class SharedWeights implements Disposable {
  #values: { name: Uint8Array; ptr: Deno.PointerObject }[] = [];
  #memoryInfo: Deno.PointerObject | null;
  #users = 0;
  #closing = false;
  /** The shared data (kept referenced while ORT reads it). */
  readonly data: SharedWeightsData;

  private constructor(data: SharedWeightsData, memoryInfo: Deno.PointerObject) {
    this.data = data;
    this.#memoryInfo = memoryInfo;
  }

  /** Wraps `data`'s tensors in native values (no copy). */
  static open(data: SharedWeightsData): SharedWeights {
    const { api } = ortLibrary();
    const mi = pointerOut();
    check(
      api.CreateCpuMemoryInfo.call(ORT_ARENA_ALLOCATOR, ORT_MEM_TYPE_DEFAULT, mi),
      "CreateCpuMemoryInfo",
    );
    const weights = new SharedWeights(data, readPointer(mi, "CreateCpuMemoryInfo"));
    try {
      const out = pointerOut();
      for (const t of data.tensors) {
        const shape = BigInt64Array.from(t.dims, (d) => BigInt(d));
        check(
          api.CreateTensorWithDataAsOrtValue.call(
            weights.#memoryInfo,
            new Uint8Array(data.buffer, t.offset, t.byteLength),
            BigInt(t.byteLength),
            shape,
            BigInt(t.dims.length),
            ELEMENT_TYPE[t.type],
            out,
          ),
          "CreateTensorWithDataAsOrtValue",
          () => `Sharing initializer '${t.name}'`,
        );
        weights.#values.push({
          name: cString(t.name),
          ptr: readPointer(out, "CreateTensorWithDataAsOrtValue"),
        });
      }
    } catch (e) {
      weights.close();
      throw e;
    }
    return weights;
  }

  /** Number of shared tensors. */
  get count(): number {
    return this.#values.length;
  }

  /** Adds every tensor to native session options (`AddInitializer`). */
  addTo(sessionOptions: Deno.PointerObject): void {
    if (this.#closing) throw new ClosedError("shared weights", "add them to a session");
    const { api } = ortLibrary();
    for (const v of this.#values) {
      check(api.AddInitializer.call(sessionOptions, v.name, v.ptr), "AddInitializer");
    }
  }

  /** Registers a session that uses these values. */
  retain(): void {
    if (this.#closing) throw new ClosedError("shared weights", "create a session");
    this.#users++;
  }

  /** Drops a reference taken by {@linkcode SharedWeights.retain}. */
  release(): void {
    this.#users--;
    this.#releaseIfUnused();
  }

  /** Releases the native values once no session uses them. Idempotent. */
  close(): void {
    this.#closing = true;
    this.#releaseIfUnused();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #releaseIfUnused(): void {
    if (!this.#closing || this.#users > 0 || this.#memoryInfo === null) return;
    const { api } = ortLibrary();
    for (const v of this.#values) api.ReleaseValue.call(v.ptr);
    this.#values = [];
    api.ReleaseMemoryInfo.call(this.#memoryInfo);
    this.#memoryInfo = null;
  }
}

/**
 * An `OrtPrepackedWeightsContainer`: sessions created with the same container
 * keep one pre-packed copy of each shared weight ({@linkcode SharedWeights})
 * instead of one each. ORT serialises access to it, so sessions in several
 * Workers may be created at once.
 *
 * In one realm, sessions retain the container and {@linkcode
 * PrepackedWeights.close} releases it after the last one closes. Across the
 * Workers of one process, post {@linkcode PrepackedWeights.address} and call
 * {@linkcode PrepackedWeights.borrow} there: the owner must then keep the
 * container open until every Worker's sessions are closed.
 *
 * @example
 * ```ts ignore
 * using prepacked = PrepackedWeights.create();          // coordinator
 * worker.postMessage({ prepacked: prepacked.address });  // one per Worker
 * // in the Worker:
 * const borrowed = PrepackedWeights.borrow(message.prepacked);
 * Session.create(env, path, { sharedWeights, prepackedWeights: borrowed });
 * ```
 */
export class PrepackedWeights implements Disposable {
  #ptr: Deno.PointerObject | null;
  readonly #owned: boolean;
  #users = 0;
  #closing = false;

  private constructor(ptr: Deno.PointerObject, owned: boolean) {
    this.#ptr = ptr;
    this.#owned = owned;
  }

  /** A new, empty container owned by this object. */
  static create(): PrepackedWeights {
    const { api } = ortLibrary();
    const out = pointerOut();
    check(api.CreatePrepackedWeightsContainer.call(out), "CreatePrepackedWeightsContainer");
    return new PrepackedWeights(readPointer(out, "CreatePrepackedWeightsContainer"), true);
  }

  /**
   * The container at `address` (another realm's {@linkcode
   * PrepackedWeights.address}), not owned: closing it releases nothing.
   */
  static borrow(address: bigint): PrepackedWeights {
    const ptr = Deno.UnsafePointer.create(address);
    if (ptr === null) {
      throw new RangeError("Cannot borrow a prepacked weights container at address 0");
    }
    return new PrepackedWeights(ptr, false);
  }

  /** The native address, to post to a Worker of the same process. */
  get address(): bigint {
    return BigInt(Deno.UnsafePointer.value(this.pointer));
  }

  /** The native `OrtPrepackedWeightsContainer*`. */
  get pointer(): Deno.PointerObject {
    if (this.#ptr === null || this.#closing) {
      throw new ClosedError("prepacked weights container", "use it");
    }
    return this.#ptr;
  }

  /** Whether this object releases the container. */
  get owned(): boolean {
    return this.#owned;
  }

  /** Registers a session that uses the container. */
  retain(): void {
    this.pointer;
    this.#users++;
  }

  /** Drops a reference taken by {@linkcode PrepackedWeights.retain}. */
  release(): void {
    this.#users--;
    this.#releaseIfUnused();
  }

  /** Releases the container (when owned) once no session of this realm uses it. Idempotent. */
  close(): void {
    this.#closing = true;
    this.#releaseIfUnused();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #releaseIfUnused(): void {
    if (!this.#closing || this.#users > 0 || this.#ptr === null) return;
    if (this.#owned) ortLibrary().api.ReleasePrepackedWeightsContainer.call(this.#ptr);
    this.#ptr = null;
  }
}
