/**
 * The step exchange over NATS, for ranks on several hosts: one rank's end, a
 * `Transport<Float32Array>` for {@link runRank}, over one NATS connection.
 *
 * Subjects (per generation, so two generations on one server never share one):
 * - `<prefix>.gen.<gen>.rank.<r>`: point-to-point, everything addressed to rank `r` alone;
 * - `<prefix>.gen.<gen>.all`: broadcasts, heard by every rank of the generation.
 *
 * Every message is a binary step message (codec.ts): a 128-byte header with the generation id,
 * step, kind, sender, depth, dtype and dims, then the float32 payload. A rank drops, counts and
 * never applies a message that does not decode, belongs to another generation, comes from a rank
 * outside `0..N-1` (or claims to be this one), or whose dtype or dims differ from the
 * generation's ({@link NatsCounters.dropped}). A well-formed message of this generation with an
 * unexpected step or kind goes to the {@link Inbox}, where the waiting receive rejects with an
 * {@link ExchangeError}, as with {@link ChannelTransport}.
 *
 * Order: NATS delivers one connection's messages to a subscribing connection in the order they
 * were published, across subjects, so one sender's messages arrive in order (the Transport rule).
 * Were a message lost or reordered, the receiver would get another step and fail with an
 * {@link ExchangeError}, never a wrong output; a lost last message is caught by the connection
 * loss that lost it (below) or, in phase 2, by the rank timeout.
 *
 * Loss: core NATS keeps no messages for a client that is away. So a rank whose connection drops
 * (the server stopped, the link died, pings went unanswered) fails its pending and later receives
 * at once with an {@link ExchangeError} naming the server, instead of waiting for a message that
 * may never come.
 *
 * Transit times: each message carries its sender's wall clock. On one host (or with synchronised
 * clocks) receive time minus that is the one-way time; across hosts it is off by the clocks'
 * offset, which {@link pairOneWayMs} cancels for a pair of ranks that message each other (rank 0
 * and every other rank do, every round).
 *
 * @module
 */

import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { ChannelCounters, Float32StepMessage } from "../channel.ts";
import {
  ExchangeError,
  Inbox,
  type MessageKind,
  type MessageTag,
  payloadBytes,
  payloadOf,
  type Transport,
} from "../transport.ts";
import {
  checkDims,
  checkGen,
  decodeStepMessage,
  elementsOf,
  encodeStepMessage,
  STEP_HEADER_BYTES,
  StepCodecError,
  stepMessageBytes,
} from "./codec.ts";

/** The default subject prefix. */
export const NATS_PREFIX = "parastep";

/** Why a message was dropped. */
export type DropReason = "malformed" | "foreignGen" | "unknownSender" | "wrongShape";

/** Counters of one {@link NatsTransport}. */
export interface NatsCounters extends ChannelCounters {
  /** Messages dropped, by reason; their sum is {@link ChannelCounters.strayMessages}. */
  dropped: Record<DropReason, number>;
  /** Why the last message was dropped (one line), or `null`. */
  lastDropped: string | null;
  /** Transit times in ms of the messages received from each rank, indexed by sender. */
  transitMsBySender: number[][];
  /** Bytes this endpoint published on the wire, headers included (a broadcast counts once). */
  wireBytesSent: number;
}

/** Options for {@link NatsTransport.open}. */
export interface NatsTransportOptions {
  /**
   * The latents' dims (e.g. `[1, 8, 64, 16]`): every payload sent and received has this shape.
   */
  dims: readonly number[];
  /**
   * `T`: sizes the per-step tables of {@link NatsTransport.waitMsByStep} and
   * {@link NatsTransport.sendMsByStep}.
   *
   * @default {0 (no per-step table)}
   */
  steps?: number;
  /**
   * The subject prefix, one or more dot-separated tokens of `[A-Za-z0-9_-]`.
   *
   * @default {"parastep"}
   */
  prefix?: string;
  /**
   * Close the connection when the transport closes (for a connection opened for it alone).
   *
   * @default {false}
   */
  ownsConnection?: boolean;
  /**
   * This rank's wall clock in ms since the epoch, stamped on sent messages and read on arrival.
   *
   * @default {() => performance.timeOrigin + performance.now()}
   */
  clock?: () => number;
}

/**
 * The subject of generation `gen`'s broadcasts, or of rank `to`'s point-to-point messages.
 *
 * @example
 * ```ts
 * if (natsSubject("g1") !== "parastep.gen.g1.all") throw new Error();
 * if (natsSubject("g1", 2) !== "parastep.gen.g1.rank.2") throw new Error();
 * ```
 */
export function natsSubject(gen: string, to?: number, prefix: string = NATS_PREFIX): string {
  return to === undefined ? `${prefix}.gen.${gen}.all` : `${prefix}.gen.${gen}.rank.${to}`;
}

/**
 * The mean one-way time between two ranks whose clocks may differ by an unknown constant, from
 * the raw transit times of messages each got from the other: the offset adds to one direction
 * what it takes from the other, so the mean of the two means is offset-free (assuming both
 * directions take as long on average).
 *
 * @param aFromB Raw transit times (ms) on rank A of messages from rank B.
 * @param bFromA Raw transit times (ms) on rank B of messages from rank A.
 * @returns The estimate in ms, or `NaN` when either list is empty.
 * @example
 * ```ts
 * // B's clock is 1000 ms ahead of A's, and a message takes 2 ms either way.
 * if (pairOneWayMs([2 - 1000], [2 + 1000]) !== 2) throw new Error();
 * ```
 */
export function pairOneWayMs(aFromB: readonly number[], bFromA: readonly number[]): number {
  if (aFromB.length === 0 || bFromA.length === 0) return NaN;
  const mean = (values: readonly number[]) => values.reduce((s, v) => s + v, 0) / values.length;
  return (mean(aFromB) + mean(bFromA)) / 2;
}

const PREFIX_PATTERN = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/**
 * One rank's end of the step exchange over NATS.
 *
 * Open every rank's transport before any rank sends: NATS delivers only to subscriptions that
 * exist when a message is published, and {@link NatsTransport.open} resolves once the server has
 * registered this rank's.
 *
 * @example
 * ```ts ignore
 * const connection = await connectNats("nats://gpu0:4222");
 * const transport = await NatsTransport.open(connection, gen, rank, devices, {
 *   dims: [1, 8, 256, 16],
 *   ownsConnection: true,
 * });
 * try {
 *   await runRank(rank, plan, sampler, x0, transport, { gen });
 * } finally {
 *   await transport.close();
 * }
 * ```
 */
export class NatsTransport implements Transport<Float32Array>, AsyncDisposable {
  /** The generation id every message must carry. */
  readonly gen: string;
  /** This rank. */
  readonly rank: number;
  /** `N`: ranks in the generation. */
  readonly devices: number;
  /** The payload shape of every message. */
  readonly dims: readonly number[];
  readonly #connection: NatsConnection;
  readonly #ownsConnection: boolean;
  readonly #prefix: string;
  readonly #clock: () => number;
  readonly #server: string;
  readonly #inbox = new Inbox<Float32Array>();
  readonly #subscriptions: Subscription[] = [];
  readonly #waitByStep: Float64Array;
  readonly #sendByStep: Float64Array;
  #status: { stop(): void } | null = null;
  #closing: Promise<void> | null = null;
  /** Why the connection can no longer carry this generation, once it cannot. */
  #lost: ExchangeError | null = null;
  #messagesSent = 0;
  #bytesSent = 0;
  #wireBytesSent = 0;
  #sendMs = 0;
  #lastDropped: string | null = null;
  readonly #dropped: Record<DropReason, number> = {
    malformed: 0,
    foreignGen: 0,
    unknownSender: 0,
    wrongShape: 0,
  };
  readonly #transitMs: ChannelCounters["transitMs"] = { eps: [], latents: [], warmup: [] };
  readonly #transitBySender: number[][];

  private constructor(
    connection: NatsConnection,
    gen: string,
    rank: number,
    devices: number,
    options: NatsTransportOptions,
  ) {
    this.#connection = connection;
    this.gen = gen;
    this.rank = rank;
    this.devices = devices;
    this.dims = [...options.dims];
    this.#ownsConnection = options.ownsConnection ?? false;
    this.#prefix = options.prefix ?? NATS_PREFIX;
    this.#clock = options.clock ?? (() => performance.timeOrigin + performance.now());
    this.#waitByStep = new Float64Array(options.steps ?? 0);
    this.#sendByStep = new Float64Array(options.steps ?? 0);
    this.#transitBySender = Array.from({ length: devices }, () => []);
    this.#server = connection.getServer();
  }

  /**
   * Subscribe rank `rank` of generation `gen` on `connection`, and resolve once the server has
   * registered the subscriptions.
   *
   * @param connection An open NATS connection (see {@link connectNats}).
   * @param gen The generation id (also in the subjects): 1..64 of `[A-Za-z0-9_-]`.
   * @param rank This rank, an integer in `0..devices-1`.
   * @param devices `N`, an integer >= 1.
   * @param options The payload dims and the rest of {@link NatsTransportOptions}.
   * @returns The open transport.
   * @throws {RangeError} For a bad gen, rank, devices, steps, dims or prefix, or a warm-up message
   *   larger than the server's `max_payload` (the message names both sizes).
   * @throws {ExchangeError} When the connection is closed. On any failure an owned connection
   *   is left open for the caller to close.
   */
  static async open(
    connection: NatsConnection,
    gen: string,
    rank: number,
    devices: number,
    options: NatsTransportOptions,
  ): Promise<NatsTransport> {
    checkGen(gen, "open a NATS step exchange");
    if (!Number.isInteger(devices) || devices < 1) {
      throw new RangeError(
        `Cannot open a NATS step exchange as 'devices' must be an integer >= 1: ` +
          `current value is ${devices}`,
      );
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= devices) {
      throw new RangeError(
        `Cannot open a NATS step exchange as 'rank' must be an integer in 0..${devices - 1}: ` +
          `current value is ${rank}`,
      );
    }
    const steps = options.steps ?? 0;
    if (!Number.isInteger(steps) || steps < 0) {
      throw new RangeError(
        `Cannot open a NATS step exchange as 'steps' must be an integer >= 0: ` +
          `current value is ${steps}`,
      );
    }
    checkDims(options.dims, "a NATS step exchange");
    if (connection.isClosed()) {
      throw new ExchangeError(
        null,
        null,
        `rank ${rank} cannot open a NATS step exchange on a closed connection`,
      );
    }
    const prefix = options.prefix ?? NATS_PREFIX;
    if (!PREFIX_PATTERN.test(prefix)) {
      throw new RangeError(
        `Cannot open a NATS step exchange as 'prefix' must be dot-separated tokens of ` +
          `A-Z, a-z, 0-9, '_' or '-': current value is ${JSON.stringify(prefix)}`,
      );
    }
    // The warm-up message (latents and cache) is the largest this generation sends; refuse now
    // rather than at the end of the warm-up.
    const largest = stepMessageBytes("warmup", elementsOf(options.dims));
    const maxPayload = connection.info?.max_payload;
    if (maxPayload !== undefined && largest > maxPayload) {
      throw new RangeError(
        `Cannot open a NATS step exchange as a warm-up message (2 float32 arrays of dims ` +
          `${JSON.stringify(options.dims)} plus a ${STEP_HEADER_BYTES}-byte header: ` +
          `${largest} bytes) is larger than the server's max_payload (${maxPayload} bytes): ` +
          `set max_payload to at least ${largest} in the nats-server configuration`,
      );
    }
    const transport = new NatsTransport(connection, gen, rank, devices, options);
    try {
      await transport.#subscribe();
    } catch (error) {
      await transport.#shutdown(false);
      throw error;
    }
    return transport;
  }

  /** Send `message` to rank `to` only, on that rank's subject. */
  send(to: number, message: Float32StepMessage): void {
    if (!Number.isInteger(to) || to < 0 || to >= this.devices || to === this.rank) {
      throw new RangeError(
        `Cannot send from rank ${this.rank} as 'to' must be another rank in ` +
          `0..${this.devices - 1}: current value is ${to}`,
      );
    }
    this.#publish(natsSubject(this.gen, to, this.#prefix), message);
  }

  /** Send `message` to every other rank, on the generation's broadcast subject. */
  broadcast(message: Float32StepMessage): void {
    this.#publish(natsSubject(this.gen, undefined, this.#prefix), message);
  }

  /**
   * Resolve with the next message from rank `expected.from`, checking its tag (see
   * {@link Inbox.receive}); the wait is added to step `expected.step`'s entry of
   * {@link NatsTransport.waitMsByStep}.
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

  /** Reject the pending receive and every later one with `reason`. Idempotent. */
  fail(reason: unknown): void {
    this.#inbox.fail(reason);
  }

  /** A snapshot of this rank's counters. */
  counters(): NatsCounters {
    const dropped = { ...this.#dropped };
    return {
      messagesSent: this.#messagesSent,
      bytesSent: this.#bytesSent,
      ...this.#inbox.counters(),
      sendMs: this.#sendMs,
      strayMessages: Object.values(dropped).reduce((s, n) => s + n, 0),
      transitMs: structuredClone(this.#transitMs),
      dropped,
      lastDropped: this.#lastDropped,
      transitMsBySender: this.#transitBySender.map((list) => list.slice()),
      wireBytesSent: this.#wireBytesSent,
    };
  }

  /** A copy of the milliseconds spent waiting in `receive`, per step index (length `T`). */
  waitMsByStep(): Float64Array {
    return this.#waitByStep.slice();
  }

  /** A copy of the milliseconds spent sending (encoding and publishing), per step index. */
  sendMsByStep(): Float64Array {
    return this.#sendByStep.slice();
  }

  /** Tags of messages that arrived for this rank but were never received. */
  undelivered(): MessageTag[] {
    return this.#inbox.undelivered();
  }

  /** Whether {@link NatsTransport.close} was called. */
  get closed(): boolean {
    return this.#closing !== null;
  }

  /**
   * Fail pending receives, unsubscribe, stop watching the connection, and close the connection
   * if the transport owns it. Idempotent; later sends throw.
   */
  close(): Promise<void> {
    return this.#shutdown(this.#ownsConnection);
  }

  #shutdown(closeConnection: boolean): Promise<void> {
    this.#closing ??= (async () => {
      this.#inbox.fail(
        new ExchangeError(null, null, `the NATS step exchange of rank ${this.rank} is closed`),
      );
      for (const subscription of this.#subscriptions) {
        try {
          subscription.unsubscribe();
        } catch {
          // The connection is already closed, which ended the subscription too.
        }
      }
      this.#subscriptions.length = 0;
      this.#status?.stop();
      this.#status = null;
      if (closeConnection && !this.#connection.isClosed()) await this.#connection.close();
    })();
    return this.#closing;
  }

  /** Same as {@link NatsTransport.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #subscribe(): Promise<void> {
    const connection = this.#connection;
    for (
      const subject of [natsSubject(this.gen, this.rank, this.#prefix), this.#broadcastSubject]
    ) {
      this.#subscriptions.push(
        connection.subscribe(subject, {
          callback: (error, msg) => {
            if (error === null) this.#accept(msg.data);
            else {
              this.#broken(
                `rank ${this.rank}'s subscription to ${subject} failed (${error.message})`,
              );
            }
          },
        }),
      );
    }
    const status = connection.status() as
      & AsyncIterable<{ type: string; error?: Error }>
      & { stop(): void };
    this.#status = status;
    void (async () => {
      for await (const event of status) {
        if (event.type === "disconnect") this.#connectionLost("disconnected");
        else if (event.type === "staleConnection") this.#connectionLost("no answer to pings");
        else if (event.type === "error") {
          // E.g. a permissions violation: the server drops what it refused, so the run cannot
          // count on its messages any more.
          const detail = event.error?.message ?? "unknown";
          this.#broken(`the NATS server reported an error to rank ${this.rank} (${detail})`);
        }
      }
    })();
    void connection.closed().then((error) => {
      this.#connectionLost(error ?? "closed");
    });
    // A round trip to the server: once it answers, it has registered both subscriptions.
    await connection.flush();
  }

  get #broadcastSubject(): string {
    return natsSubject(this.gen, undefined, this.#prefix);
  }

  #connectionLost(cause: unknown): void {
    const detail = cause instanceof Error ? cause.message : String(cause);
    this.#broken(
      `rank ${this.rank} lost its connection to the NATS server at ${this.#server} ` +
        `(${detail}), so step messages may have been lost`,
    );
  }

  /** The exchange can no longer be trusted: fail every receive, refuse every send. */
  #broken(why: string): void {
    if (this.#lost !== null || this.#closing !== null) return;
    this.#lost = new ExchangeError(null, null, why);
    this.#inbox.fail(this.#lost);
  }

  #publish(subject: string, message: Float32StepMessage): void {
    if (this.#closing !== null) {
      throw new ExchangeError(
        null,
        null,
        `rank ${this.rank} cannot send on a closed NATS step exchange`,
      );
    }
    if (this.#lost !== null) throw this.#lost;
    if (message.from !== this.rank) {
      throw new RangeError(
        `Cannot send from rank ${this.rank} as the message says 'from' is ${message.from}`,
      );
    }
    if (message.gen !== this.gen) {
      throw new RangeError(
        `Cannot send on the NATS step exchange of generation ${this.gen} as the message says ` +
          `'gen' is ${message.gen}`,
      );
    }
    const started = performance.now();
    const bytes = encodeStepMessage(message, this.dims, this.#clock());
    this.#connection.publish(subject, bytes);
    const elapsed = performance.now() - started;
    this.#sendMs += elapsed;
    if (message.step >= 0 && message.step < this.#sendByStep.length) {
      this.#sendByStep[message.step]! += elapsed;
    }
    this.#messagesSent += 1;
    this.#bytesSent += payloadBytes(payloadOf(message));
    this.#wireBytesSent += bytes.byteLength;
  }

  /** Decode, check and deliver one received message, or drop and count it. */
  #accept(data: Uint8Array): void {
    const arrived = this.#clock();
    let decoded;
    try {
      decoded = decodeStepMessage(data);
    } catch (error) {
      // A dtype this build does not read is a well-formed message of the wrong type.
      const reason = error instanceof StepCodecError && error.field === "dtype"
        ? "wrongShape"
        : "malformed";
      this.#drop(reason, error instanceof Error ? error.message : String(error));
      return;
    }
    const { message, dims, sentAt } = decoded;
    if (message.gen !== this.gen) {
      this.#drop("foreignGen", `a message of generation ${message.gen}, not ${this.gen}`);
      return;
    }
    if (message.from === this.rank) {
      // Our own broadcast, on a connection opened without noEcho: not a fault.
      return;
    }
    if (message.from >= this.devices) {
      this.#drop(
        "unknownSender",
        `a message from rank ${message.from}, outside 0..${this.devices - 1}`,
      );
      return;
    }
    if (
      dims.length !== this.dims.length || dims.some((d, j) => d !== this.dims[j])
    ) {
      this.#drop(
        "wrongShape",
        `a ${message.kind} message from rank ${message.from} with dims ${JSON.stringify(dims)}, ` +
          `not ${JSON.stringify(this.dims)}`,
      );
      return;
    }
    const transit = arrived - sentAt;
    this.#transitMs[message.kind as MessageKind].push(transit);
    this.#transitBySender[message.from]!.push(transit);
    this.#inbox.deliver(message);
  }

  #drop(reason: DropReason, detail: string): void {
    this.#dropped[reason] += 1;
    this.#lastDropped = `rank ${this.rank} dropped ${detail}`;
  }
}
