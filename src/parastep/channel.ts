/**
 * The step exchange over `BroadcastChannel`, for ranks that run in separate Workers of one process.
 *
 * Channel names (all per generation, so two generations never share a channel):
 * - `parastep:<gen>`: broadcasts (rank 0 -> all: warm-up and end-of-round latents; with the
 *   all-gather exchange, every rank's eps too, but for the last round's, which go to rank 0 on
 *   the pair channel);
 * - `parastep:<gen>/<from>-><to>`: point-to-point (rank `r` -> rank 0: eps).
 *
 * Why a channel per sender-receiver pair: a `BroadcastChannel` message is deserialized by every
 * object of that name in every Worker, whether or not it wants it. Sending eps on the shared
 * channel would make each of the `N - 2` bystander ranks copy every eps; a pair channel has exactly
 * one listener.
 *
 * With all-gather a sender reaches rank 0 on two channels (the broadcast one, then the pair one
 * in the last round), so the `Transport` rule that one sender's messages arrive in order rests on
 * Deno delivering every `BroadcastChannel` message of a Worker through one queue, in post order
 * (true of Deno 2.9: one process-wide channel, dispatched by name). Were it ever broken, the
 * receive would get a message with another step and fail with an {@link ExchangeError}: a clear
 * error, never a wrong output.
 *
 * `BroadcastChannel` structured-clones payloads (the receiver gets its own copy; the sender keeps
 * its array, so ORT-backed memory is never detached) and never delivers a message to the object
 * that posted it. Given shared arenas ({@link ChannelTransportOptions.arenas}), the payload floats
 * travel through shared memory instead and the channel carries the tagged message with a
 * reference to them (see shared_payloads.ts for why and how).
 *
 * Messages that are not a well-formed step message of this generation addressed to this rank
 * (another generation's id, an unknown kind, a sender out of range, a payload that is not a
 * `Float32Array`) are dropped and counted in {@link ChannelCounters.strayMessages}. They cannot
 * belong to this generation (its channels are named after it), so they are evidence of a foreign
 * or faulty poster, not of a fault in this run. A well-formed message of this generation with an
 * unexpected step or kind is handed to the {@link Inbox}, where the waiting receive rejects with an
 * {@link ExchangeError}.
 *
 * @module
 */

import { type SharedPayloadRef, SharedPayloads } from "./shared_payloads.ts";
import {
  ExchangeError,
  Inbox,
  type MessageKind,
  type MessageTag,
  payloadBytes,
  payloadOf,
  type StepMessage,
  type Transport,
  type TransportCounters,
} from "./transport.ts";

/** Latents and guided eps on the channel: float32 arrays of the latents' size. */
export type Float32StepMessage = StepMessage<Float32Array>;

/** Counters of one {@link ChannelTransport}. */
export interface ChannelCounters extends TransportCounters {
  /** Milliseconds spent sending: copying payloads into the arena and `postMessage`. */
  sendMs: number;
  /** Messages dropped as not belonging to this generation or rank (see the module doc). */
  strayMessages: number;
  /**
   * Per kind of message received: each one's transit time in ms, in arrival order, from the
   * sender's post to this rank holding the payload (serialising, delivery, copying out).
   */
  transitMs: Record<MessageKind, number[]>;
}

/** Options for {@link ChannelTransport}. */
export interface ChannelTransportOptions {
  /**
   * `T`, the generation's step count: sizes the per-step tables of
   * {@link ChannelTransport.waitMsByStep} and {@link ChannelTransport.sendMsByStep} up front, so
   * sends and receives never allocate for them.
   *
   * @default {0 (no per-step table)}
   */
  steps?: number;
  /**
   * The channel name prefix; channels are `<prefix>:<gen>` and `<prefix>:<gen>/<from>-><to>`.
   *
   * @default {"parastep"}
   */
  prefix?: string;
  /**
   * One `SharedArrayBuffer` per rank (from `createArenas`), the same on every rank: payloads that
   * fit go through the sender's arena and only their tag and reference cross the channel.
   *
   * @default {none: payloads are structured-cloned onto the channel}
   */
  arenas?: readonly SharedArrayBuffer[];
}

/** The default channel name prefix. */
export const CHANNEL_PREFIX = "parastep";

/**
 * The name of the broadcast channel of generation `gen`, or of the pair channel `from -> to`.
 *
 * @param gen The generation id.
 * @param pair Sender and receiver of a point-to-point channel.
 * @param prefix See {@link ChannelTransportOptions.prefix}.
 * @returns The channel name.
 * @example
 * ```ts
 * if (channelName("g") !== "parastep:g") throw new Error();
 * if (channelName("g", { from: 2, to: 0 }) !== "parastep:g/2->0") throw new Error();
 * ```
 */
export function channelName(
  gen: string,
  pair?: { from: number; to: number },
  prefix: string = CHANNEL_PREFIX,
): string {
  return pair === undefined ? `${prefix}:${gen}` : `${prefix}:${gen}/${pair.from}->${pair.to}`;
}

const KINDS: readonly MessageKind[] = ["eps", "latents", "warmup"];

/**
 * One rank's end of the step exchange over `BroadcastChannel`: a `Transport<Float32Array>` for
 * {@link runRank}.
 *
 * Create every rank's transport before any rank sends (a `BroadcastChannel` only delivers to
 * objects that exist when the message is posted): the coordinator waits for every Worker's "ready",
 * which comes after its transport is open, before starting the run.
 *
 * @example
 * ```ts
 * using a = new ChannelTransport("doc", 0, 2);
 * using b = new ChannelTransport("doc", 1, 2);
 * const tag = { gen: "doc", step: 3, kind: "eps", from: 1 } as const;
 * b.send(0, { ...tag, depth: 1, eps: new Float32Array([1, 2]) });
 * const message = await a.receive(tag);
 * if (message.kind !== "eps" || message.eps[1] !== 2) throw new Error();
 * ```
 */
export class ChannelTransport implements Transport<Float32Array>, Disposable {
  /** The generation id every message must carry. */
  readonly gen: string;
  /** This rank. */
  readonly rank: number;
  /** `N`: ranks in the generation. */
  readonly devices: number;
  readonly #prefix: string;
  readonly #inbox = new Inbox<Float32Array>();
  /** `parastep:<gen>`: this rank posts its broadcasts here and hears the others'. */
  readonly #broadcast: BroadcastChannel;
  /** `parastep:<gen>/<p>-><rank>` for every peer `p`, indexed by `p` (undefined at `rank`). */
  readonly #incoming: (BroadcastChannel | undefined)[] = [];
  /** `parastep:<gen>/<rank>-><to>`, opened on the first send to `to`. */
  readonly #outgoing: (BroadcastChannel | undefined)[] = [];
  readonly #waitByStep: Float64Array;
  #closed = false;
  #messagesSent = 0;
  #bytesSent = 0;
  #sendMs = 0;
  #stray = 0;
  readonly #transitMs: ChannelCounters["transitMs"] = { eps: [], latents: [], warmup: [] };
  readonly #sendByStep: Float64Array;
  readonly #shared: SharedPayloads | null;
  /** Messages this rank has written to its arena. */
  #sharedSeq = 0;

  /**
   * Open this rank's channels.
   *
   * @param gen The generation id (also names the channels).
   * @param rank This rank, an integer in `0..devices-1`.
   * @param devices `N`, an integer >= 1.
   * @param options See {@link ChannelTransportOptions}.
   * @throws {RangeError} For a bad rank, devices or steps.
   */
  constructor(gen: string, rank: number, devices: number, options: ChannelTransportOptions = {}) {
    if (!Number.isInteger(devices) || devices < 1) {
      throw new RangeError(
        `Cannot open a step channel as 'devices' must be an integer >= 1: current value is ${devices}`,
      );
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= devices) {
      throw new RangeError(
        `Cannot open a step channel as 'rank' must be an integer in 0..${devices - 1}: ` +
          `current value is ${rank}`,
      );
    }
    const steps = options.steps ?? 0;
    if (!Number.isInteger(steps) || steps < 0) {
      throw new RangeError(
        `Cannot open a step channel as 'steps' must be an integer >= 0: current value is ${steps}`,
      );
    }
    this.gen = gen;
    this.rank = rank;
    this.devices = devices;
    this.#prefix = options.prefix ?? CHANNEL_PREFIX;
    this.#waitByStep = new Float64Array(steps);
    this.#sendByStep = new Float64Array(steps);
    if (options.arenas !== undefined && options.arenas.length !== devices) {
      throw new RangeError(
        `Cannot open a step channel as 'arenas' must hold one arena per rank (${devices}): ` +
          `current length is ${options.arenas.length}`,
      );
    }
    this.#shared = options.arenas ? new SharedPayloads(options.arenas) : null;
    this.#broadcast = new BroadcastChannel(channelName(gen, undefined, this.#prefix));
    this.#broadcast.onmessage = (event) => this.#accept(event.data, null);
    this.#broadcast.onmessageerror = () => this.#undecodable(this.#broadcast.name);
    for (let peer = 0; peer < devices; peer++) {
      if (peer === rank) {
        this.#incoming.push(undefined);
        continue;
      }
      const channel = new BroadcastChannel(
        channelName(gen, { from: peer, to: rank }, this.#prefix),
      );
      channel.onmessage = (event) => this.#accept(event.data, peer);
      channel.onmessageerror = () => this.#undecodable(channel.name);
      this.#incoming.push(channel);
    }
  }

  /** Send `message` to rank `to` only, on the pair channel `rank -> to`. */
  send(to: number, message: Float32StepMessage): void {
    if (!Number.isInteger(to) || to < 0 || to >= this.devices || to === this.rank) {
      throw new RangeError(
        `Cannot send from rank ${this.rank} as 'to' must be another rank in ` +
          `0..${this.devices - 1}: current value is ${to}`,
      );
    }
    let channel = this.#outgoing[to];
    if (channel === undefined) {
      this.#checkOpen("send");
      channel = new BroadcastChannel(
        channelName(this.gen, { from: this.rank, to }, this.#prefix),
      );
      this.#outgoing[to] = channel;
    }
    this.#post(channel, message);
  }

  /** Send `message` to every other rank, on the generation's broadcast channel. */
  broadcast(message: Float32StepMessage): void {
    this.#post(this.#broadcast, message);
  }

  /**
   * Resolve with the next message from rank `expected.from`, checking its tag (see
   * {@link Inbox.receive}); the time spent waiting is added to step `expected.step`'s entry of
   * {@link ChannelTransport.waitMsByStep}.
   */
  async receive(expected: MessageTag, signal?: AbortSignal): Promise<Float32StepMessage> {
    const started = performance.now();
    try {
      return await this.#inbox.receive(expected, signal);
    } finally {
      if (expected.step >= 0 && expected.step < this.#waitByStep.length) {
        this.#waitByStep[expected.step]! += performance.now() - started;
      }
    }
  }

  /**
   * Reject the pending receive and every later one with `reason` (a peer failed, or the run is
   * being shut down). Idempotent: the first reason wins.
   */
  fail(reason: unknown): void {
    this.#inbox.fail(reason);
  }

  /** A snapshot of this rank's counters. */
  counters(): ChannelCounters {
    return {
      messagesSent: this.#messagesSent,
      bytesSent: this.#bytesSent,
      ...this.#inbox.counters(),
      sendMs: this.#sendMs,
      strayMessages: this.#stray,
      transitMs: structuredClone(this.#transitMs),
    };
  }

  /** A copy of the milliseconds spent waiting in `receive`, per step index (length `T`). */
  waitMsByStep(): Float64Array {
    return this.#waitByStep.slice();
  }

  /** A copy of the milliseconds spent sending (arena copy and `postMessage`), per step index. */
  sendMsByStep(): Float64Array {
    return this.#sendByStep.slice();
  }

  /** Tags of messages that arrived for this rank but were never received. */
  undelivered(): MessageTag[] {
    return this.#inbox.undelivered();
  }

  /** Whether {@link ChannelTransport.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Close every channel (later messages are not heard) and fail pending receives. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#inbox.fail(
      new ExchangeError(null, null, `the step channel of rank ${this.rank} is closed`),
    );
    this.#broadcast.close();
    for (const channel of this.#incoming) channel?.close();
    for (const channel of this.#outgoing) channel?.close();
  }

  /** Same as {@link ChannelTransport.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #checkOpen(action: string): void {
    if (this.#closed) {
      throw new ExchangeError(
        null,
        null,
        `rank ${this.rank} cannot ${action} on a closed step channel`,
      );
    }
  }

  #post(channel: BroadcastChannel, message: Float32StepMessage): void {
    this.#checkOpen("send");
    if (message.from !== this.rank) {
      throw new RangeError(
        `Cannot send from rank ${this.rank} as the message says 'from' is ${message.from}`,
      );
    }
    if (message.gen !== this.gen) {
      throw new RangeError(
        `Cannot send on the channel of generation ${this.gen} as the message says 'gen' is ` +
          message.gen,
      );
    }
    const started = performance.now();
    // Wall-clock milliseconds: comparable across the Workers of one process.
    const sentAt = performance.timeOrigin + started;
    const ref = this.#shared?.write(this.rank, this.#sharedSeq, payloadArrays(message));
    if (ref) {
      this.#sharedSeq += 1;
      const { gen, step, kind, from, depth } = message;
      channel.postMessage({ gen, step, kind, from, depth, sentAt, shared: ref });
    } else {
      channel.postMessage({ ...compact(message), sentAt });
    }
    const elapsed = performance.now() - started;
    this.#sendMs += elapsed;
    if (message.step >= 0 && message.step < this.#sendByStep.length) {
      this.#sendByStep[message.step]! += elapsed;
    }
    this.#messagesSent += 1;
    this.#bytesSent += payloadBytes(payloadOf(message));
  }

  /**
   * Hand `data` to the inbox if it is a well-formed message of this generation for this rank;
   * count it as stray otherwise. `pairFrom` is the sender a pair channel admits (`null`: the
   * broadcast channel, any peer).
   */
  #accept(data: unknown, pairFrom: number | null): void {
    const message = this.#parse(data, pairFrom);
    if (message === null) {
      this.#stray += 1;
      return;
    }
    const sentAt = (data as { sentAt?: unknown }).sentAt;
    if (typeof sentAt === "number") {
      this.#transitMs[message.kind].push(performance.timeOrigin + performance.now() - sentAt);
    }
    this.#inbox.deliver(message);
  }

  /**
   * A message on one of this generation's channels could not be deserialized. It may well have
   * been one this rank waits for, so waiting on would hang: fail every receive instead.
   */
  #undecodable(name: string): void {
    this.#inbox.fail(
      new ExchangeError(null, null, `a message on ${name} could not be deserialized`),
    );
  }

  #parse(data: unknown, pairFrom: number | null): Float32StepMessage | null {
    if (typeof data !== "object" || data === null) return null;
    let m = data as Record<string, unknown>;
    if (m.gen !== this.gen) return null;
    const { step, from, depth, kind } = m;
    if (typeof step !== "number" || !Number.isInteger(step) || step < 0) return null;
    if (typeof from !== "number" || !Number.isInteger(from)) return null;
    if (from < 0 || from >= this.devices || from === this.rank) return null;
    if (pairFrom !== null && from !== pairFrom) return null;
    if (typeof depth !== "number" || !Number.isInteger(depth) || depth < 0) return null;
    if (typeof kind !== "string" || !KINDS.includes(kind as MessageKind)) return null;
    if (m.shared !== undefined) {
      const ref = m.shared as SharedPayloadRef;
      if (
        this.#shared === null || typeof ref !== "object" || ref === null ||
        !Number.isInteger(ref.seq) || !Array.isArray(ref.lengths) ||
        !ref.lengths.every((l) => Number.isInteger(l) && l >= 0)
      ) {
        return null;
      }
      // Copy out now, in arrival order: the sender reuses the slot two messages later.
      let arrays: Float32Array[];
      try {
        arrays = this.#shared.read(from, ref);
      } catch (error) {
        const tag = { gen: this.gen, step, kind: kind as MessageKind, from };
        this.#inbox.fail(new ExchangeError(null, tag, (error as Error).message));
        return null;
      }
      m = { gen: m.gen, step, from, depth, kind, ...withPayload(kind as MessageKind, arrays) };
      data = m;
    }
    switch (kind as MessageKind) {
      case "eps":
        return m.eps instanceof Float32Array ? data as Float32StepMessage : null;
      case "latents":
        return m.x instanceof Float32Array ? data as Float32StepMessage : null;
      case "warmup":
        return m.x instanceof Float32Array && m.cache instanceof Float32Array
          ? data as Float32StepMessage
          : null;
    }
  }
}

/** The payload arrays of `message`, in wire order. */
function payloadArrays(message: Float32StepMessage): Float32Array[] {
  switch (message.kind) {
    case "eps":
      return [message.eps];
    case "latents":
      return [message.x];
    case "warmup":
      return [message.x, message.cache];
  }
}

/** The payload fields of a `kind` message from arrays in wire order (see {@link payloadArrays}). */
function withPayload(kind: MessageKind, arrays: Float32Array[]): Record<string, Float32Array> {
  switch (kind) {
    case "eps":
      return { eps: arrays[0]! };
    case "latents":
      return { x: arrays[0]! };
    case "warmup":
      return { x: arrays[0]!, cache: arrays[1]! };
  }
}

/**
 * The message as it should go on the wire. Structured clone copies a typed array's whole
 * `ArrayBuffer`, so a payload that views part of a larger buffer is sliced to its own bytes first
 * (the only case that allocates here); whole-buffer payloads go as they are.
 */
function compact(message: Float32StepMessage): Float32StepMessage {
  switch (message.kind) {
    case "eps":
      return isPartialView(message.eps) ? { ...message, eps: message.eps.slice() } : message;
    case "latents":
      return isPartialView(message.x) ? { ...message, x: message.x.slice() } : message;
    case "warmup":
      return isPartialView(message.x) || isPartialView(message.cache)
        ? { ...message, x: message.x.slice(), cache: message.cache.slice() }
        : message;
  }
}

function isPartialView(array: Float32Array): boolean {
  return array.byteOffset !== 0 || array.byteLength !== array.buffer.byteLength;
}
