/**
 * A rank on another host, as the coordinator's {@link WorkerPool} sees it: a {@link WorkerLike}
 * that relays the worker protocol over NATS to a serving host (`parastep serve`), and watches the
 * rank's heartbeats (docs/multihost.md §7).
 *
 * What it forwards carries no path, module URL, shared memory or NATS credentials: `init` goes
 * without its module and open payload (the host opens its own), `prepare` without heartbeat
 * slots and with only the step exchange's dims and prefix.
 *
 * A rank is **lost** when nothing (heartbeat, reply) has come from it for `rankTimeoutMs`, or its
 * host says it is gone: it then replies `error` with stage `lost`, naming the host and the step
 * its heartbeat last showed, and answers a later `abort` itself (nobody is left to).
 *
 * @module
 */

import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { WorkerLike } from "../coordinator.ts";
import { writeHeartbeat } from "../heartbeat.ts";
import type { DeviceAssignment } from "../devices.ts";
import type { FromWorker, ToWorker } from "../worker.ts";
import {
  ControlDecoder,
  type FromHost,
  hostSubject,
  publishControl,
  rankSubject,
  type ToHost,
} from "./control.ts";
import { NATS_PREFIX } from "./transport.ts";

/** Options for {@link RemoteWorker}. */
export interface RemoteWorkerOptions {
  /** The coordinator's control connection. */
  readonly connection: NatsConnection;
  /** The session (opened on the host). */
  readonly session: string;
  /** The global rank. */
  readonly rank: number;
  /** The host's name. */
  readonly host: string;
  /** Silence after which the rank counts as lost. */
  readonly rankTimeoutMs: number;
  /** Subject prefix. @default {"parastep"} */
  readonly prefix?: string;
}

/** A rank served by another host, standing in for its Worker. */
export class RemoteWorker implements WorkerLike {
  onmessage: ((event: MessageEvent<FromWorker>) => void) | null = null;
  onerror: ((event: ErrorEvent) => void) | null = null;
  onmessageerror: ((event: MessageEvent) => void) | null = null;
  readonly #options: RemoteWorkerOptions;
  readonly #prefix: string;
  readonly #subscription: Subscription;
  readonly #decoder = new ControlDecoder();
  readonly #watch: ReturnType<typeof setInterval>;
  #lastSeen = performance.now();
  #lastStep: number | null = null;
  #heartbeats: SharedArrayBuffer | null = null;
  #lost = false;
  #closed = false;
  #terminated = false;

  constructor(options: RemoteWorkerOptions) {
    this.#options = options;
    this.#prefix = options.prefix ?? NATS_PREFIX;
    this.#subscription = options.connection.subscribe(
      rankSubject(options.session, options.rank, this.#prefix),
      {
        callback: (error, msg) => {
          if (error === null) this.#receive(msg.data);
        },
      },
    );
    this.#watch = setInterval(() => {
      const silentMs = performance.now() - this.#lastSeen;
      if (silentMs > this.#options.rankTimeoutMs) {
        this.#lose(`no heartbeat for ${(silentMs / 1000).toFixed(1)} s`);
      }
    }, Math.min(250, Math.max(10, options.rankTimeoutMs / 4)));
  }

  /** Whether this rank has been counted lost. */
  get lost(): boolean {
    return this.#lost;
  }

  postMessage(message: ToWorker): void {
    if (this.#terminated) return;
    // Without its connection the coordinator can reach no host: nobody will answer an abort.
    if (this.#options.connection.isClosed()) this.#lose("the coordinator lost its NATS connection");
    if (this.#lost) {
      if (message.type === "abort") this.#closedByUs();
      return;
    }
    let forwarded: ToWorker;
    switch (message.type) {
      case "init":
        // The host opens its own model folder with its own module on its own device.
        forwarded = { ...message, module: "", open: null, device: stripDevice(message.device) };
        break;
      case "prepare": {
        const { heartbeats, nats, arenas: _arenas, ...rest } = message;
        this.#heartbeats = heartbeats ?? null;
        forwarded = {
          ...rest,
          ...(nats === undefined ? {} : {
            nats: { url: "", dims: nats.dims, ...(nats.prefix ? { prefix: nats.prefix } : {}) },
          }),
        };
        break;
      }
      default:
        forwarded = message;
    }
    this.#toHost({
      type: "post",
      session: this.#options.session,
      rank: this.#options.rank,
      message: forwarded,
    });
  }

  terminate(): void {
    if (this.#terminated) return;
    this.#terminated = true;
    clearInterval(this.#watch);
    try {
      this.#subscription.unsubscribe();
    } catch {
      // The connection is closed already.
    }
    if (!this.#lost) {
      this.#toHost({ type: "end", session: this.#options.session, rank: this.#options.rank });
    }
  }

  #toHost(message: ToHost): void {
    const connection = this.#options.connection;
    if (connection.isClosed()) return;
    try {
      publishControl(connection, hostSubject(this.#options.host, this.#prefix), message);
    } catch (error) {
      this.#lose(`the coordinator cannot reach it (${errorText(error)})`);
    }
  }

  #receive(data: Uint8Array): void {
    if (this.#terminated) return;
    let message: FromHost | undefined;
    try {
      message = this.#decoder.decode(data) as FromHost | undefined;
    } catch {
      this.onmessageerror?.(new MessageEvent("messageerror"));
      return;
    }
    if (message === undefined) return;
    this.#lastSeen = performance.now();
    if (this.#lost) return;
    switch (message.type) {
      case "hb":
        if (message.beat.step !== null) this.#lastStep = message.beat.step;
        if (this.#heartbeats !== null) {
          writeHeartbeat(this.#heartbeats, this.#options.rank, message.beat);
        }
        return;
      case "gone":
        this.#lose(message.reason);
        return;
      case "reply":
        if (message.message.type === "closed") this.#closed = true;
        this.onmessage?.(new MessageEvent("message", { data: message.message }));
        return;
    }
  }

  /** Count the rank lost (once) and report it as the rank's error. */
  #lose(why: string): void {
    if (this.#lost || this.#closed || this.#terminated) return;
    this.#lost = true;
    // A run already failed (an abort follows) learns nothing from this; a running one does.
    const { rank, host } = this.#options;
    this.onmessage?.(
      new MessageEvent("message", {
        data: {
          type: "error",
          rank,
          step: this.#lastStep,
          stage: "lost",
          cause: { name: "RankLostError", message: `host ${host} stopped answering (${why})` },
        } satisfies FromWorker,
      }),
    );
  }

  /** A lost rank's `closed`, given by the coordinator's side, as nobody else will. */
  #closedByUs(): void {
    if (this.#closed) return;
    this.#closed = true;
    const rank = this.#options.rank;
    queueMicrotask(() =>
      this.onmessage?.(
        new MessageEvent("message", {
          data: {
            type: "closed",
            rank,
            report: {
              rank,
              inFlightAtClose: 0,
              cancelledCalls: 0,
              disposeError: `rank ${rank} on host ${this.#options.host} was lost`,
              generations: 0,
            },
          } satisfies FromWorker,
        }),
      )
    );
  }
}

/** A device assignment without its shared memory (the host assigns its own device). */
function stripDevice(device: DeviceAssignment): DeviceAssignment {
  const { webgpuLock: _lock, ...rest } = device;
  return rest;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
