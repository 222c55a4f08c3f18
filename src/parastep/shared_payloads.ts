/**
 * Step payloads in shared memory, for ranks that are Workers of one process.
 *
 * Why: Deno 2.9's `BroadcastChannel` moves message bytes at about 30 MB/s
 * (measured: a 256 KiB Float32Array takes 8 ms one way, against 0.5 ms over a
 * `MessagePort`), which costs ParaStep more per round than a denoiser call is
 * worth saving on a GPU. So the channel carries each step's tagged message and
 * the payload floats go through a `SharedArrayBuffer` owned by the sender: one
 * copy in, one copy out, no serialisation.
 *
 * Each rank owns one arena with {@linkcode SLOTS} slots and writes its k-th
 * message into slot `k mod SLOTS`. Two slots suffice: a rank's message k + 2
 * is only sent after a reply that depends on message k (gather: eps ->
 * latents -> eps; all-gather: a rank's round k + 2 eps needs every peer's
 * round k + 1 eps, which each peer sends only after taking in round k's),
 * and receivers copy a payload out as soon as its message arrives, in
 * arrival order. The slot header records the sequence number; a reader
 * that finds another one refuses the payload instead of reading torn data.
 *
 * Slot layout (Int32 words, then floats): `[seq + 1, floats, 0, 0]`, data.
 * The header's sequence word is written with `Atomics.store` after the data
 * and read with `Atomics.load` before it, which orders the data for readers.
 *
 * @module
 */

/** Slots per rank. */
export const SLOTS = 2;
const HEADER_WORDS = 4;
const HEADER_BYTES = HEADER_WORDS * 4;
/** How long a reader waits for a slot whose message has arrived but whose header is not yet visible. */
const VISIBILITY_WAIT_MS = 1000;

/** Where a message's payload sits: the sender's sequence number and each array's length. */
export interface SharedPayloadRef {
  /** The sender's message count before this one (0, 1, ...). */
  readonly seq: number;
  /** Lengths, in floats, of the payload arrays laid end to end. */
  readonly lengths: readonly number[];
}

/**
 * Allocates one arena per rank, each holding {@linkcode SLOTS} slots of
 * `slotFloats` floats.
 *
 * @throws {RangeError} for a non-positive size
 */
export function createArenas(devices: number, slotFloats: number): SharedArrayBuffer[] {
  if (!Number.isInteger(slotFloats) || slotFloats < 1) {
    throw new RangeError(
      `Cannot allocate step arenas as 'slotFloats' must be an integer >= 1: current value is ${slotFloats}`,
    );
  }
  const slotBytes = HEADER_BYTES + slotFloats * 4;
  return Array.from({ length: devices }, () => new SharedArrayBuffer(SLOTS * slotBytes));
}

/** Reading and writing the slots of a set of arenas (one per rank). */
export class SharedPayloads {
  readonly #arenas: readonly SharedArrayBuffer[];
  readonly #slotFloats: number;

  /** Wraps arenas made by {@linkcode createArenas}. */
  constructor(arenas: readonly SharedArrayBuffer[]) {
    const first = arenas[0];
    if (first === undefined) throw new RangeError("Cannot use step arenas: none was given");
    this.#arenas = arenas;
    this.#slotFloats = (first.byteLength / SLOTS - HEADER_BYTES) / 4;
  }

  /** The most floats one message's payload may hold. */
  get capacity(): number {
    return this.#slotFloats;
  }

  #slot(rank: number, seq: number): { header: Int32Array; data: Float32Array } {
    const arena = this.#arenas[rank];
    if (arena === undefined) throw new RangeError(`No step arena for rank ${rank}`);
    const offset = (seq % SLOTS) * (HEADER_BYTES + this.#slotFloats * 4);
    return {
      header: new Int32Array(arena, offset, HEADER_WORDS),
      data: new Float32Array(arena, offset + HEADER_BYTES, this.#slotFloats),
    };
  }

  /**
   * Writes `arrays` end to end into `rank`'s slot for message `seq`, or
   * returns null when they do not fit (the caller then sends them inline).
   */
  write(rank: number, seq: number, arrays: readonly Float32Array[]): SharedPayloadRef | null {
    const total = arrays.reduce((n, a) => n + a.length, 0);
    if (total > this.#slotFloats) return null;
    const { header, data } = this.#slot(rank, seq);
    let offset = 0;
    for (const a of arrays) {
      data.set(a, offset);
      offset += a.length;
    }
    header[1] = total;
    Atomics.store(header, 0, seq + 1); // publishes the data written above
    Atomics.notify(header, 0);
    return { seq, lengths: arrays.map((a) => a.length) };
  }

  /**
   * Copies message `ref.seq` of `rank` out of its slot, one array per length.
   *
   * @throws {Error} when the slot holds another message (a protocol fault)
   */
  read(rank: number, ref: SharedPayloadRef): Float32Array[] {
    const { header, data } = this.#slot(rank, ref.seq);
    const want = ref.seq + 1;
    let seen = Atomics.load(header, 0);
    if (seen !== want && seen === (ref.seq >= SLOTS ? ref.seq - SLOTS + 1 : 0)) {
      // The message came before its data was visible here: wait for the store.
      Atomics.wait(header, 0, seen, VISIBILITY_WAIT_MS);
      seen = Atomics.load(header, 0);
    }
    const total = ref.lengths.reduce((n, l) => n + l, 0);
    if (seen !== want || header[1] !== total) {
      throw new Error(
        `rank ${rank}'s step slot holds message ${seen - 1} of ${header[1]} floats, ` +
          `not message ${ref.seq} of ${total}`,
      );
    }
    let offset = 0;
    return ref.lengths.map((length) => {
      const out = data.slice(offset, offset + length);
      offset += length;
      return out;
    });
  }
}
