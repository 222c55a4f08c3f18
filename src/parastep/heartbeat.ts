/**
 * Per-rank heartbeats and the stall watchdog of {@link runWorkers}.
 *
 * Every rank writes a few `Int32` slots of one `SharedArrayBuffer` (its beat counter, the step it
 * works on, what it is doing, its slowest model call) with `Atomics` stores: a handful of
 * nanoseconds per model call and scheduler step, and no message. The coordinator polls the slots
 * on a timer ({@link StallWatch}) and calls a rank stalled when nothing has moved for the stall
 * timeout:
 * - a rank inside its model call (or a scheduler step) whose beat has not moved for the timeout:
 *   the call has not returned (a hung device or driver). This fires whatever the other ranks do.
 * - no rank that is still running has moved for the timeout, none of them busy: they all wait
 *   for each other (a lost message). The rank that has been still longest is named.
 *
 * A rank waiting for another rank's message is not stalled by itself (ranks > 0 wait during the
 * whole warm-up, for instance): only the rank it waits for can be.
 *
 * @module
 */

/** Int32 slots per rank. */
const SLOTS = 4;
/** Bumped on every change of phase: entering and leaving model calls and scheduler steps. */
const BEAT = 0;
/** The step index of the current or last model call or scheduler step; -1 before any. */
const STEP = 1;
/** A {@link RankPhase} code. */
const PHASE = 2;
/** The slowest model call so far, in whole milliseconds (rounded up). */
const SLOWEST_MS = 3;

/**
 * What a rank is doing, as its heartbeat says:
 * - `idle`: opening, or between calls (waiting for a message, sending one);
 * - `model`: inside a model call;
 * - `host`: inside guidance or a scheduler step (JavaScript on the rank's own thread);
 * - `done`: its run has ended (it is no longer watched).
 */
export type RankPhase = "idle" | "model" | "host" | "done";

const PHASES: readonly RankPhase[] = ["idle", "model", "host", "done"];

/** A new heartbeat buffer for `devices` ranks (every step -1, every phase idle). */
export function createHeartbeats(devices: number): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(devices * SLOTS * Int32Array.BYTES_PER_ELEMENT);
  const view = new Int32Array(buffer);
  for (let rank = 0; rank < devices; rank++) view[rank * SLOTS + STEP] = -1;
  return buffer;
}

/** One rank's writer of its heartbeat slots (used inside the rank's Worker). */
export class HeartbeatWriter {
  readonly #view: Int32Array;
  readonly #base: number;
  #callStarted = 0;

  /**
   * @param buffer The buffer from {@link createHeartbeats}.
   * @param rank This rank.
   */
  constructor(buffer: SharedArrayBuffer, rank: number) {
    this.#view = new Int32Array(buffer);
    this.#base = rank * SLOTS;
    if (this.#base + SLOTS > this.#view.length) {
      throw new RangeError(
        `Cannot write the heartbeat of rank ${rank} as the buffer holds ${
          this.#view.length / SLOTS
        } ranks`,
      );
    }
  }

  /** A model call for step `i` begins. */
  modelStart(i: number): void {
    this.#callStarted = performance.now();
    this.#enter("model", i);
  }

  /** The model call that began last has returned (or failed). */
  modelEnd(): void {
    const ms = Math.ceil(performance.now() - this.#callStarted);
    const slot = this.#base + SLOWEST_MS;
    if (ms > Atomics.load(this.#view, slot)) Atomics.store(this.#view, slot, ms);
    this.#enter("idle", null);
  }

  /** Guidance or a scheduler step (for step `i`, when known) begins. */
  hostStart(i: number | null): void {
    this.#enter("host", i);
  }

  /** Guidance or the scheduler step has returned. */
  hostEnd(): void {
    this.#enter("idle", null);
  }

  /** The rank's run has ended: it is no longer watched. */
  done(): void {
    this.#enter("done", null);
  }

  #enter(phase: RankPhase, step: number | null): void {
    if (step !== null) Atomics.store(this.#view, this.#base + STEP, step);
    Atomics.store(this.#view, this.#base + PHASE, PHASES.indexOf(phase));
    Atomics.add(this.#view, this.#base + BEAT, 1);
  }
}

/** One rank's heartbeat as read by the coordinator. */
export interface Heartbeat {
  /** The beat counter. */
  beat: number;
  /** The step of the current or last call; `null` before any. */
  step: number | null;
  /** What the rank is doing. */
  phase: RankPhase;
  /** Its slowest model call so far, in milliseconds. */
  slowestMs: number;
}

/** Read rank `rank`'s heartbeat from `buffer`. */
export function readHeartbeat(buffer: SharedArrayBuffer, rank: number): Heartbeat {
  const view = new Int32Array(buffer);
  const base = rank * SLOTS;
  const step = Atomics.load(view, base + STEP);
  return {
    beat: Atomics.load(view, base + BEAT),
    step: step < 0 ? null : step,
    phase: PHASES[Atomics.load(view, base + PHASE)] ?? "idle",
    slowestMs: Atomics.load(view, base + SLOWEST_MS),
  };
}

/** The default stall timeout's floor: nothing legitimate sits still this long. */
export const MIN_DEFAULT_STALL_MS = 60_000;
/** The default stall timeout is at least this many times the slowest model call seen. */
export const STALL_SLOWEST_FACTOR = 10;

/** The stall timeout in force: `explicit` when given, else max(60 s, 10 x the slowest call). */
export function stallTimeout(explicit: number | undefined, slowestMs: number): number {
  return explicit ?? Math.max(MIN_DEFAULT_STALL_MS, STALL_SLOWEST_FACTOR * slowestMs);
}

/** A rank the watchdog found stalled. */
export interface Stall {
  /** The rank. */
  rank: number;
  /** The step it was on (the current or last call), or `null` before any. */
  step: number | null;
  /** What it was doing: `model` or `host` for a call that has not returned, else `idle`. */
  phase: RankPhase;
  /** Milliseconds since its heartbeat last moved. */
  stillMs: number;
  /** The timeout that was exceeded. */
  timeoutMs: number;
}

/**
 * The watchdog's state and rules, apart from the timer, so that they can be tested with a clock
 * of their own: feed it readings with {@link StallDetector.check}.
 */
export class StallDetector {
  readonly #devices: number;
  readonly #explicit: number | undefined;
  readonly #lastBeat: number[];
  readonly #lastMoved: number[];

  /**
   * @param devices `N`.
   * @param explicitTimeoutMs A fixed timeout, or `undefined` for the adaptive default.
   * @param now The clock at the start of the run (milliseconds).
   */
  constructor(devices: number, explicitTimeoutMs: number | undefined, now: number) {
    this.#devices = devices;
    this.#explicit = explicitTimeoutMs;
    this.#lastBeat = new Array<number>(devices).fill(0); // createHeartbeats starts every beat at 0
    this.#lastMoved = new Array<number>(devices).fill(now);
  }

  /**
   * Take one reading of every rank's heartbeat at time `now`; return the stalled rank, if any.
   *
   * @param read Rank -> its heartbeat now.
   * @param now The clock (milliseconds, the same clock as the constructor's).
   */
  check(read: (rank: number) => Heartbeat, now: number): Stall | null {
    const beats = Array.from({ length: this.#devices }, (_, rank) => read(rank));
    const timeoutMs = stallTimeout(
      this.#explicit,
      Math.max(0, ...beats.map((b) => b.slowestMs)),
    );
    let stillest: number | null = null;
    let allStill = true;
    for (let rank = 0; rank < this.#devices; rank++) {
      const beat = beats[rank]!;
      if (beat.beat !== this.#lastBeat[rank]) {
        this.#lastBeat[rank] = beat.beat;
        this.#lastMoved[rank] = now;
      }
      if (beat.phase === "done") continue;
      const stillMs = now - this.#lastMoved[rank]!;
      const busy = beat.phase === "model" || beat.phase === "host";
      if (busy && stillMs >= timeoutMs) {
        return { rank, step: beat.step, phase: beat.phase, stillMs, timeoutMs };
      }
      if (stillMs < timeoutMs) allStill = false;
      if (stillest === null || this.#lastMoved[rank]! < this.#lastMoved[stillest]!) {
        stillest = rank;
      }
    }
    if (stillest === null || !allStill) return null;
    const beat = beats[stillest]!;
    return {
      rank: stillest,
      step: beat.step,
      phase: beat.phase,
      stillMs: now - this.#lastMoved[stillest]!,
      timeoutMs,
    };
  }
}

/**
 * Poll `buffer` every `pollMs` and call `onStall` once when a rank stalls (see the module doc).
 * {@link StallWatch.stop} ends the polling; it also ends after a stall.
 */
export class StallWatch {
  readonly #timer: ReturnType<typeof setInterval>;

  /**
   * @param buffer The heartbeat buffer of the run.
   * @param devices `N`.
   * @param explicitTimeoutMs A fixed timeout, or `undefined` for the adaptive default.
   * @param onStall Called once with the stalled rank.
   */
  constructor(
    buffer: SharedArrayBuffer,
    devices: number,
    explicitTimeoutMs: number | undefined,
    onStall: (stall: Stall) => void,
  ) {
    const detector = new StallDetector(devices, explicitTimeoutMs, performance.now());
    // Often enough that a stall is reported within an eighth of the timeout after it is due.
    const pollMs = Math.min(1000, Math.max(10, (explicitTimeoutMs ?? MIN_DEFAULT_STALL_MS) / 8));
    this.#timer = setInterval(() => {
      const stall = detector.check((rank) => readHeartbeat(buffer, rank), performance.now());
      if (stall === null) return;
      this.stop();
      onStall(stall);
    }, pollMs);
  }

  /** Stop polling. Idempotent. */
  stop(): void {
    clearInterval(this.#timer);
  }
}

/**
 * Copy a heartbeat read elsewhere (a rank on another host, relayed over NATS) into rank `rank`'s
 * slots of `buffer`, so that the coordinator's watchdog watches that rank like a local one.
 */
export function writeHeartbeat(buffer: SharedArrayBuffer, rank: number, beat: Heartbeat): void {
  const view = new Int32Array(buffer);
  const base = rank * SLOTS;
  Atomics.store(view, base + STEP, beat.step ?? -1);
  Atomics.store(view, base + PHASE, Math.max(0, PHASES.indexOf(beat.phase)));
  Atomics.store(view, base + SLOWEST_MS, beat.slowestMs);
  Atomics.store(view, base + BEAT, beat.beat);
}
