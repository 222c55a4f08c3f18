/**
 * The step exchange between ParaStep ranks: tagged messages, a transport interface that
 * {@link runRank} talks to, and an in-memory implementation for running every rank in one process.
 *
 * A transport moves three kinds of message (see docs/parastep.md):
 * - `"warmup"`: rank 0 -> all, once, after the warm-up; carries `x_W` and the last warm-up `eps`.
 * - `"eps"`: rank `r` -> rank 0, once per round for each position `r > 0`; carries its `eps`.
 *   With the all-gather exchange (see `Exchange` in rounds.ts) every rank broadcasts it instead.
 * - `"latents"`: rank 0 -> all, at the end of every full round; carries the true latents (not
 *   sent with all-gather, where every rank applies the round itself).
 *
 * Every `eps` travels guided, as `G(eps)`: the receiver only ever uses it through `G` (rank 0
 * steps with it, ranks r > 0 reuse it), `G` is a pure function of `eps`, so the sender applying it
 * gives the same numbers, and with classifier-free guidance `G(eps)` is half the size of `eps`.
 * So every payload has the latents' type `X`.
 *
 * Receivers always ask for one exact tag and get either that message or an {@link ExchangeError}:
 * correctness never rests on every rank calling send and receive in the same order.
 *
 * @module
 */

/** The kind of a step message. */
export type MessageKind = "eps" | "latents" | "warmup";

/** What identifies a step message; a receiver asks for one exact tag. */
export interface MessageTag {
  /** Generation id: messages of one generation never pair with another's. */
  readonly gen: string;
  /**
   * The step index `i` the payload belongs to: for `"eps"` the step it was computed at, for
   * `"latents"` the last step of the round (the payload is `x_{i+1}`), for `"warmup"` the last
   * warm-up step `W - 1` (the payload is `x_W`).
   */
  readonly step: number;
  /** What the payload is. */
  readonly kind: MessageKind;
  /** The sending rank. */
  readonly from: number;
}

/** Fields every step message carries besides its tag. */
export interface MessageClock {
  /**
   * The sender's logical clock when it sent: network calls on the longest chain of dependencies
   * behind this message (Lamport-style). Receivers take the max with their own.
   */
  readonly depth: number;
}

/** Rank `r` -> rank 0: the noise predicted on rank `r`'s extrapolated latents, guided. */
export interface EpsMessage<X> extends MessageTag, MessageClock {
  /** Always `"eps"`. */
  readonly kind: "eps";
  /** `G(eps(x^_i, t_i))`: the guided noise, shaped like the latents. */
  readonly eps: X;
}

/** Rank 0 -> all at the end of a full round: the true latents. */
export interface LatentsMessage<X> extends MessageTag, MessageClock {
  /** Always `"latents"`. */
  readonly kind: "latents";
  /** `x_{step+1}` on rank 0's true trajectory. */
  readonly x: X;
}

/** Rank 0 -> all after the warm-up: the latents and the cache every rank starts round 0 with. */
export interface WarmupMessage<X> extends MessageTag, MessageClock {
  /** Always `"warmup"`. */
  readonly kind: "warmup";
  /** `x_W`. */
  readonly x: X;
  /** `G` of the last warm-up `eps`: the first reuse source of every rank. */
  readonly cache: X;
}

/** Any step message, discriminated by `kind`. */
export type StepMessage<X> = EpsMessage<X> | LatentsMessage<X> | WarmupMessage<X>;

/** Exchange counters of one rank's transport endpoint. */
export interface TransportCounters {
  /** Messages this endpoint sent; a broadcast counts once. */
  messagesSent: number;
  /** Payload bytes this endpoint sent (see {@link payloadBytes}); a broadcast counts once. */
  bytesSent: number;
  /** Messages this endpoint received (handed to a caller of `receive`). */
  messagesReceived: number;
  /** Payload bytes this endpoint received. */
  bytesReceived: number;
  /** Milliseconds spent inside `receive`, waiting for a message to arrive. */
  waitMs: number;
}

/**
 * One rank's end of the step exchange. {@link runRank} needs nothing else from the outside world,
 * so a Worker-based engine (BroadcastChannel) or a multi-host one only implements this.
 *
 * Implementations must keep messages from one sender in the order sent; messages from different
 * senders may interleave arbitrarily. {@link Inbox} implements the receiving half.
 *
 * @typeParam X Latents (and guided noise).
 */
export interface Transport<X> {
  /** Send `message` to rank `to` only. */
  send(to: number, message: StepMessage<X>): void | Promise<void>;
  /** Send `message` to every other rank. */
  broadcast(message: StepMessage<X>): void | Promise<void>;
  /**
   * Resolve with the next message from rank `expected.from`.
   *
   * @param expected The exact tag wanted.
   * @param signal Aborting it rejects the pending receive with `signal.reason`.
   * @returns The message, whose tag equals `expected`.
   * @throws {ExchangeError} When the next message from that sender carries another tag.
   */
  receive(expected: MessageTag, signal?: AbortSignal): Promise<StepMessage<X>>;
  /** A snapshot of this endpoint's counters. */
  counters(): TransportCounters;
}

/** Format a tag for error messages, e.g. `{gen=g, step=7, kind=eps, from=1}`. */
export function formatTag(tag: MessageTag | null): string {
  if (tag === null) return "nothing";
  return `{gen=${tag.gen}, step=${tag.step}, kind=${tag.kind}, from=${tag.from}}`;
}

/** Copy only the tag fields, so errors and logs never hold on to payloads. */
export function tagOf(message: MessageTag): MessageTag {
  return { gen: message.gen, step: message.step, kind: message.kind, from: message.from };
}

/**
 * A step exchange received something other than the message asked for (or a message nobody asked
 * for). It carries both tags so the mismatch can be diagnosed without logs.
 */
export class ExchangeError extends Error {
  override name = "ExchangeError";
  /** The tag the receiver asked for; `null` for a message that no receive ever asked for. */
  readonly expected: MessageTag | null;
  /** The tag that arrived; `null` when nothing did. */
  readonly received: MessageTag | null;

  /**
   * @param expected The tag the receiver asked for, or `null` for an unsolicited message.
   * @param received The tag that arrived, or `null`.
   * @param detail Optional reason; the default says the tags do not match.
   */
  constructor(expected: MessageTag | null, received: MessageTag | null, detail?: string) {
    super(
      `Cannot exchange step data as ${detail ?? "the message does not match the expected tag"}: ` +
        `expected ${formatTag(expected)}, received ${formatTag(received)}`,
    );
    this.expected = expected === null ? null : tagOf(expected);
    this.received = received === null ? null : tagOf(received);
  }
}

/**
 * Throw an {@link ExchangeError} unless `received` carries exactly the tag `expected`.
 *
 * @param expected The tag asked for.
 * @param received The message (or tag) that arrived.
 * @throws {ExchangeError} On any difference in gen, step, kind or sender.
 */
export function checkTag(expected: MessageTag, received: MessageTag): void {
  if (
    received.gen !== expected.gen || received.step !== expected.step ||
    received.kind !== expected.kind || received.from !== expected.from
  ) {
    throw new ExchangeError(expected, received);
  }
}

/**
 * Bytes a payload occupies on the wire: a typed array's `byteLength`, 8 per number or bigint,
 * and the sum over arrays and plain objects' values. Anything else counts 0.
 *
 * @param value A payload (latents, eps or a tensor-like object holding typed arrays).
 * @returns The byte count.
 */
export function payloadBytes(value: unknown): number {
  if (typeof value === "number" || typeof value === "bigint") return 8;
  if (ArrayBuffer.isView(value)) return value.byteLength;
  if (value instanceof ArrayBuffer) return value.byteLength;
  if (Array.isArray(value)) {
    let bytes = 0;
    for (const item of value) bytes += payloadBytes(item);
    return bytes;
  }
  if (typeof value === "object" && value !== null) {
    let bytes = 0;
    for (const item of Object.values(value)) bytes += payloadBytes(item);
    return bytes;
  }
  return 0;
}

/** The payload of a step message, without tag and clock. */
export function payloadOf<X>(message: StepMessage<X>): unknown {
  switch (message.kind) {
    case "eps":
      return message.eps;
    case "latents":
      return message.x;
    case "warmup":
      return [message.x, message.cache];
  }
}

interface Waiter<X> {
  readonly expected: MessageTag;
  readonly started: number;
  resolve(message: StepMessage<X>): void;
  reject(reason: unknown): void;
}

/**
 * The receiving half of a transport: per-sender FIFO queues, at most one pending `receive`, tag
 * checks, abort, and receive-side counters. A transport feeds it with {@link Inbox.deliver} from its
 * message handler (e.g. `BroadcastChannel.onmessage`) and forwards `receive` to it.
 *
 * @typeParam X Latents (and guided noise).
 */
export class Inbox<X> {
  readonly #queues = new Map<number, StepMessage<X>[]>();
  #waiter: Waiter<X> | null = null;
  #failure: { reason: unknown } | null = null;
  #messagesReceived = 0;
  #bytesReceived = 0;
  #waitMs = 0;

  /**
   * Accept a message that arrived for this rank. If a receive is waiting for this sender, it is
   * settled now (with an {@link ExchangeError} when the tag differs); otherwise the message is queued.
   */
  deliver(message: StepMessage<X>): void {
    const waiter = this.#waiter;
    if (waiter !== null && waiter.expected.from === message.from) {
      this.#settle(waiter, message);
      return;
    }
    const queue = this.#queues.get(message.from);
    if (queue === undefined) this.#queues.set(message.from, [message]);
    else queue.push(message);
  }

  /**
   * Resolve with the next message from `expected.from`, checking its tag.
   *
   * @param expected The exact tag wanted.
   * @param signal Aborting it rejects with `signal.reason`.
   * @returns The message.
   * @throws {ExchangeError} When the next message from that sender carries another tag.
   */
  receive(expected: MessageTag, signal?: AbortSignal): Promise<StepMessage<X>> {
    if (this.#failure !== null) return Promise.reject(this.#failure.reason);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#waiter !== null) {
      return Promise.reject(
        new Error(
          `Cannot receive ${formatTag(expected)} as a receive of ` +
            `${formatTag(this.#waiter.expected)} is still pending`,
        ),
      );
    }
    const queued = this.#queues.get(expected.from)?.shift();
    if (queued !== undefined) {
      return new Promise((resolve, reject) => {
        this.#settle({ expected, started: performance.now(), resolve, reject }, queued);
      });
    }
    return new Promise((resolve, reject) => {
      // The listener must go whichever way the wait ends, or a long-lived signal would keep
      // every finished receive alive.
      const onAbort = (): void => {
        if (this.#waiter !== waiter) return;
        this.#waiter = null;
        this.#waitMs += performance.now() - waiter.started;
        reject(signal?.reason);
      };
      const waiter: Waiter<X> = {
        expected,
        started: performance.now(),
        resolve: (message) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(message);
        },
        reject: (reason) => {
          signal?.removeEventListener("abort", onAbort);
          reject(reason);
        },
      };
      this.#waiter = waiter;
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Reject the pending receive and every later one with `reason`, e.g. when the channel closed or a
   * peer reported a failure. Idempotent: the first reason wins.
   */
  fail(reason: unknown): void {
    if (this.#failure !== null) return;
    this.#failure = { reason };
    const waiter = this.#waiter;
    if (waiter !== null) {
      this.#waiter = null;
      this.#waitMs += performance.now() - waiter.started;
      waiter.reject(reason);
    }
  }

  /** Tags of messages delivered but never received, oldest first per sender. */
  undelivered(): MessageTag[] {
    const tags: MessageTag[] = [];
    for (const queue of this.#queues.values()) {
      for (const message of queue) tags.push(tagOf(message));
    }
    return tags;
  }

  /** Receive-side counters; the send side is the transport's. */
  counters(): Pick<TransportCounters, "messagesReceived" | "bytesReceived" | "waitMs"> {
    return {
      messagesReceived: this.#messagesReceived,
      bytesReceived: this.#bytesReceived,
      waitMs: this.#waitMs,
    };
  }

  #settle(waiter: Waiter<X>, message: StepMessage<X>): void {
    if (this.#waiter === waiter) this.#waiter = null;
    this.#waitMs += performance.now() - waiter.started;
    try {
      checkTag(waiter.expected, message);
    } catch (error) {
      waiter.reject(error);
      return;
    }
    this.#messagesReceived += 1;
    this.#bytesReceived += payloadBytes(payloadOf(message));
    waiter.resolve(message);
  }
}

/** One entry of an {@link InMemoryHub}'s log, in order of sending. */
export interface LoggedMessage extends MessageTag, MessageClock {
  /** The receiving rank, or `"all"` for a broadcast. */
  readonly to: number | "all";
  /** Payload bytes (see {@link payloadBytes}). */
  readonly bytes: number;
}

/** Options for {@link InMemoryHub}. */
export interface InMemoryHubOptions {
  /**
   * Deliver a `structuredClone` of each payload, as BroadcastChannel does, so a rank that mutates
   * a received value cannot corrupt its sender's. Turn off only for payloads that cannot be cloned.
   *
   * @default {true}
   */
  copy?: boolean;
}

/**
 * An in-process message hub for `N` ranks: {@link InMemoryHub.endpoint} gives each rank its
 * {@link Transport}. It logs every message sent and can list messages nobody received.
 *
 * @typeParam X Latents (and guided noise).
 * @example
 * ```ts
 * const hub = new InMemoryHub<number>(2);
 * const tag = { gen: "g", step: 0, kind: "eps", from: 1 } as const;
 * await hub.endpoint(1).send(0, { ...tag, depth: 1, eps: 0.5 });
 * const message = await hub.endpoint(0).receive(tag);
 * if (message.kind !== "eps" || message.eps !== 0.5) throw new Error("unexpected");
 * ```
 */
export class InMemoryHub<X> {
  /** Number of ranks. */
  readonly size: number;
  readonly #inboxes: Inbox<X>[] = [];
  readonly #endpoints: Transport<X>[] = [];
  readonly #log: LoggedMessage[] = [];
  readonly #copy: boolean;

  /**
   * @param size Number of ranks `N`, an integer >= 1.
   * @param options See {@link InMemoryHubOptions}.
   * @throws {RangeError} When `size` is not an integer >= 1.
   */
  constructor(size: number, options: InMemoryHubOptions = {}) {
    if (!Number.isInteger(size) || size < 1) {
      throw new RangeError(
        `Cannot create an in-memory hub as 'size' must be an integer >= 1: current value is ${size}`,
      );
    }
    this.size = size;
    this.#copy = options.copy ?? true;
    for (let r = 0; r < size; r++) {
      this.#inboxes.push(new Inbox<X>());
      this.#endpoints.push(this.#makeEndpoint(r));
    }
  }

  /**
   * The transport of rank `rank`.
   *
   * @throws {RangeError} When `rank` is not in `0..size-1`.
   */
  endpoint(rank: number): Transport<X> {
    const endpoint = this.#endpoints[rank];
    if (endpoint === undefined) {
      throw new RangeError(
        `Cannot get an endpoint as 'rank' must be an integer in 0..${this.size - 1}: ` +
          `current value is ${rank}`,
      );
    }
    return endpoint;
  }

  /** Every message sent so far, in order of sending. */
  log(): LoggedMessage[] {
    return this.#log.slice();
  }

  /** Messages that reached a rank but were never received, with the receiving rank. */
  undelivered(): { rank: number; tag: MessageTag }[] {
    return this.#inboxes.flatMap((inbox, rank) =>
      inbox.undelivered().map((tag) => ({ rank, tag }))
    );
  }

  /** Reject every pending and future receive on every rank with `reason`. */
  fail(reason: unknown): void {
    for (const inbox of this.#inboxes) inbox.fail(reason);
  }

  #makeEndpoint(rank: number): Transport<X> {
    const inbox = this.#inboxes[rank];
    if (inbox === undefined) throw new Error(`Missing inbox for rank ${rank}`);
    let messagesSent = 0;
    let bytesSent = 0;
    const record = (to: number | "all", message: StepMessage<X>): void => {
      if (message.from !== rank) {
        throw new RangeError(
          `Cannot send from rank ${rank} as the message says 'from' is ${message.from}`,
        );
      }
      const bytes = payloadBytes(payloadOf(message));
      messagesSent += 1;
      bytesSent += bytes;
      this.#log.push({ ...tagOf(message), depth: message.depth, to, bytes });
    };
    const copy = (message: StepMessage<X>): StepMessage<X> =>
      this.#copy ? structuredClone(message) : message;
    return {
      send: (to, message) => {
        const target = this.#inboxes[to];
        if (target === undefined || to === rank) {
          throw new RangeError(
            `Cannot send from rank ${rank} as 'to' must be another rank in 0..${this.size - 1}: ` +
              `current value is ${to}`,
          );
        }
        record(to, message);
        target.deliver(copy(message));
      },
      broadcast: (message) => {
        record("all", message);
        this.#inboxes.forEach((target, r) => {
          if (r !== rank) target.deliver(copy(message));
        });
      },
      receive: (expected, signal) => inbox.receive(expected, signal),
      counters: () => ({ messagesSent, bytesSent, ...inbox.counters() }),
    };
  }
}
