/**
 * A lock shared by every realm (the main thread and its Workers) of this
 * process, and the one that serialises WebGPU.
 *
 * Why WebGPU needs it: ORT 1.30's WebGPU provider gives every session of the
 * process the same default WebGPU context (one Dawn device, one command
 * encoder, one count of pending dispatches, one buffer cache). Its code
 * assumes one thread at a time: two Workers running sessions at once crashed
 * on every try ("exceeds maxNumPendingDispatches", "compute_pipeline.has_value()
 * was false", `free(): invalid pointer`, segfaults). A context of one's own
 * needs a WebGPU instance and device created outside ORT (the provider option
 * `ep.webgpuexecutionprovider.deviceId` > 0 requires `webgpuInstance` and
 * `webgpuDevice` handles), and the library exports no Dawn function to create
 * them with. So every WebGPU session of the process opens, runs and closes
 * under this one lock.
 *
 * The lock is one `Int32` in a `SharedArrayBuffer`: 0 free, 1 held. A Worker
 * adopts its parent's buffer ({@linkcode shareWebGpuLock}) before opening any
 * WebGPU session; the ParaStep coordinator sends it with each rank's device.
 *
 * @module
 */

/** How often a waiter re-checks whether it was cancelled. */
const POLL_MS = 50;

/** A mutual-exclusion lock over a `SharedArrayBuffer`, usable from any realm it is shared with. */
export class ProcessLock {
  /** The shared word; post it to another realm and build a lock over it there. */
  readonly buffer: SharedArrayBuffer;
  readonly #word: Int32Array;
  #heldHere = false;

  /** A lock over `buffer` (a new one when absent). */
  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(4)) {
    if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < 4) {
      throw new TypeError("Cannot create a process lock as its buffer must be a SharedArrayBuffer");
    }
    this.buffer = buffer;
    this.#word = new Int32Array(buffer, 0, 1);
  }

  /** Whether this realm holds the lock now. */
  get heldHere(): boolean {
    return this.#heldHere;
  }

  /** Takes the lock if it is free. */
  tryAcquire(): boolean {
    if (Atomics.compareExchange(this.#word, 0, 0, 1) !== 0) return false;
    this.#heldHere = true;
    return true;
  }

  /**
   * Takes the lock, blocking this thread until it is free.
   *
   * @param what what the caller is about to do, for the error below
   * @throws {Error} when this realm already holds it: waiting would block the
   * very thread that has to release it
   */
  acquireSync(what: string): void {
    if (this.#heldHere) {
      throw new Error(
        `Cannot ${what} while another WebGPU call of this thread is in flight ` +
          "(WebGPU calls of one process run one at a time): await it first",
      );
    }
    while (!this.tryAcquire()) Atomics.wait(this.#word, 0, 1, 1000);
  }

  /**
   * Takes the lock without blocking the thread.
   *
   * @param cancelled checked while waiting: when it returns a value, the wait
   * ends by throwing that value
   */
  async acquire(cancelled?: () => unknown): Promise<void> {
    while (!this.tryAcquire()) {
      const reason = cancelled?.();
      if (reason !== undefined) throw reason;
      const wait = Atomics.waitAsync(this.#word, 0, 1, POLL_MS);
      if (!wait.async) continue;
      // Deno does not count a pending waitAsync as work: a timer keeps the realm alive meanwhile.
      const alive = setTimeout(() => {}, POLL_MS * 2);
      try {
        await wait.value;
      } finally {
        clearTimeout(alive);
      }
    }
  }

  /** Frees the lock and wakes its waiters in every realm. */
  release(): void {
    if (!this.#heldHere) throw new Error("Cannot release a process lock this realm does not hold");
    this.#heldHere = false;
    Atomics.store(this.#word, 0, 0);
    Atomics.notify(this.#word, 0);
  }
}

let webgpu: ProcessLock | undefined;

/** The lock every WebGPU session of this process opens, runs and closes under. */
export function webGpuLock(): ProcessLock {
  return webgpu ??= new ProcessLock();
}

/**
 * Makes this realm use `buffer` (another realm's {@linkcode webGpuLock}) as its
 * WebGPU lock. Call it in a Worker before it opens a WebGPU session.
 *
 * @throws {Error} when this realm holds its current lock
 */
export function shareWebGpuLock(buffer: SharedArrayBuffer): void {
  if (webgpu?.buffer === buffer) return;
  if (webgpu?.heldHere) {
    throw new Error("Cannot share a WebGPU lock while this realm holds its own");
  }
  webgpu = new ProcessLock(buffer);
}
