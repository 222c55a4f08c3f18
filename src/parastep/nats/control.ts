/**
 * The control protocol between a coordinator (`gen --nats`) and serving hosts (`serve`):
 * subjects, message types, and their framing (docs/multihost.md §3).
 *
 * Control messages are `node:v8`-serialized objects (typed arrays travel as raw bytes, never as
 * JSON arrays), framed with a one-byte kind. A message larger than the server's `max_payload`
 * is split into chunks, each carrying the message id, its index and the count; a receiver joins
 * them by id, so messages of two coordinators interleaved on one subject never mix.
 *
 * Subjects (`<p>` is the prefix, `parastep` by default):
 * - `<p>.ctl.discover`: request; every host replies with its {@link HostInfo};
 * - `<p>.host.<host>.ctl`: {@link ToHost} messages for one host (`open` is a request);
 * - `<p>.gen.<session>.ctl.<rank>`: {@link FromHost} messages of one rank, to the coordinator;
 * - `<p>.gen.<session>.alive`: the coordinator's keep-alive, once a second.
 *
 * @module
 */

import { deserialize, serialize } from "node:v8";
import type { NatsConnection } from "@nats-io/nats-core";
import type { Heartbeat } from "../heartbeat.ts";
import type { FromWorker, ToWorker } from "../worker.ts";
import { NATS_PREFIX } from "./transport.ts";

/** The version of this control protocol; a host refuses a coordinator of another. */
export const CONTROL_VERSION = 2;

/** A model as a host serves it. */
export interface ServedModel {
  /** The folder name under the host's `--models`. */
  readonly name: string;
  /** The manifest's family. */
  readonly family: string;
  /** The manifest's dtype. */
  readonly dtype: string;
  /** The manifest's content hash (see models.ts). */
  readonly hash: string;
}

/** One device a host offers. */
export interface HostDevice {
  /** The local ordinal. */
  readonly index: number;
  /** The execution provider the host runs it with. */
  readonly ep: string;
  /** Serving a generation now. */
  readonly busy: boolean;
}

/** What a host says about itself in reply to discovery. */
export interface HostInfo {
  /** The host's name (`--name`, default the hostname). */
  readonly name: string;
  /** parastep's version. */
  readonly version: string;
  /** {@link CONTROL_VERSION}. */
  readonly control: number;
  /** The step codec's version. */
  readonly codec: number;
  /** CPU cores. */
  readonly cores: number;
  /** Its devices. */
  readonly devices: readonly HostDevice[];
  /** The model folders under its `--models`. */
  readonly models: readonly ServedModel[];
}

/** Which model a session runs: never a path. */
export interface ModelIdentity {
  /** The folder name. */
  readonly name: string;
  /** The manifest's content hash the coordinator has. */
  readonly hash: string;
  /** The family (the host uses its own sampler module for it). */
  readonly family: string;
  /** The denoiser component in the manifest, e.g. `unet`. */
  readonly component: string;
  /** The float type of the graphs to open (`fp32`, `fp16`...): the folder's own, or a variant. */
  readonly dtype: string;
}

/** Coordinator -> host: reserve devices for a session (a request; the reply is {@link OpenReply}). */
export interface OpenSession {
  readonly type: "open";
  readonly control: number;
  /** The session id (reply subjects). */
  readonly session: string;
  /** `N`: ranks in the session. */
  readonly devices: number;
  /** This host's ranks and the local device of each. */
  readonly ranks: readonly { readonly rank: number; readonly device: number }[];
  readonly model: ModelIdentity;
  /** The host ends the session when the coordinator's keep-alive is silent this long. */
  readonly rankTimeoutMs: number;
}

/** Host -> coordinator: the answer to {@link OpenSession}. */
export type OpenReply =
  | { readonly ok: true; readonly ep: string }
  | { readonly ok: false; readonly reason: string };

/** Coordinator -> host: a worker-protocol message for one rank (paths and secrets left out). */
export interface PostToRank {
  readonly type: "post";
  readonly session: string;
  readonly rank: number;
  readonly message: ToWorker;
}

/** Coordinator -> host: terminate a rank's worker (after it replied `closed`), or the session. */
export interface EndRank {
  readonly type: "end";
  readonly session: string;
  /** The rank, or every rank of the session when absent. */
  readonly rank?: number;
}

/** Any coordinator -> host message on the host's subject. */
export type ToHost = OpenSession | PostToRank | EndRank;

/** Host -> coordinator, per rank. */
export type FromHost =
  /** A worker reply, as the worker posted it. */
  | { readonly type: "reply"; readonly message: FromWorker }
  /** The rank's heartbeat (sent every {@link HEARTBEAT_MS}). */
  | { readonly type: "hb"; readonly beat: Heartbeat }
  /** The rank is gone (its worker died, or the host is stopping). */
  | { readonly type: "gone"; readonly reason: string };

/** How often a host sends each rank's heartbeat and a coordinator its keep-alive. */
export const HEARTBEAT_MS = 500;

/** The discovery subject. */
export function discoverSubject(prefix = NATS_PREFIX): string {
  return `${prefix}.ctl.discover`;
}

/** A host's control subject. */
export function hostSubject(host: string, prefix = NATS_PREFIX): string {
  return `${prefix}.host.${host}.ctl`;
}

/** The subject of one rank's messages to the coordinator. */
export function rankSubject(session: string, rank: number, prefix = NATS_PREFIX): string {
  return `${prefix}.gen.${session}.ctl.${rank}`;
}

/** The coordinator's keep-alive subject of a session. */
export function aliveSubject(session: string, prefix = NATS_PREFIX): string {
  return `${prefix}.gen.${session}.alive`;
}

/** Host names: one subject token. */
export const HOST_NAME = /^[A-Za-z0-9_-]{1,64}$/;

const WHOLE = 0;
const CHUNK = 1;
/** Frame header of a chunk: kind, 16-byte id, index and count (u32 each). */
const CHUNK_HEADER = 1 + 16 + 8;

/** Encode `message` as one frame, or several chunks when it exceeds `maxPayload`. */
export function encodeControl(message: unknown, maxPayload: number): Uint8Array[] {
  const body = serialize(message);
  if (body.byteLength + 1 <= maxPayload) {
    const frame = new Uint8Array(body.byteLength + 1);
    frame[0] = WHOLE;
    frame.set(body, 1);
    return [frame];
  }
  const per = Math.max(1, maxPayload - CHUNK_HEADER - 64);
  const count = Math.ceil(body.byteLength / per);
  const id = crypto.getRandomValues(new Uint8Array(16));
  const frames: Uint8Array[] = [];
  for (let index = 0; index < count; index++) {
    const part = body.subarray(index * per, Math.min(body.byteLength, (index + 1) * per));
    const frame = new Uint8Array(CHUNK_HEADER + part.byteLength);
    const view = new DataView(frame.buffer);
    frame[0] = CHUNK;
    frame.set(id, 1);
    view.setUint32(17, index, true);
    view.setUint32(21, count, true);
    frame.set(part, CHUNK_HEADER);
    frames.push(frame);
  }
  return frames;
}

/** Joins chunked control frames; whole frames pass straight through. */
export class ControlDecoder {
  readonly #partial = new Map<string, { parts: Uint8Array[]; got: number; count: number }>();

  /**
   * The message `frame` completes, or `undefined` while chunks are missing.
   *
   * @throws {RangeError} For a frame that is not a control frame.
   */
  decode(frame: Uint8Array): unknown {
    if (frame.byteLength >= 1 && frame[0] === WHOLE) return deserialize(frame.subarray(1));
    if (frame.byteLength < CHUNK_HEADER || frame[0] !== CHUNK) {
      throw new RangeError("Cannot read a control message as its frame kind is unknown");
    }
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    const id = Array.from(frame.subarray(1, 17), (b) => b.toString(16).padStart(2, "0")).join("");
    const index = view.getUint32(17, true);
    const count = view.getUint32(21, true);
    let entry = this.#partial.get(id);
    if (entry === undefined) {
      entry = { parts: new Array<Uint8Array>(count), got: 0, count };
      this.#partial.set(id, entry);
    }
    if (index >= entry.count || entry.count !== count) {
      throw new RangeError("Cannot read a control message as a chunk's index or count is wrong");
    }
    if (entry.parts[index] === undefined) entry.got += 1;
    entry.parts[index] = frame.slice(CHUNK_HEADER);
    if (entry.got < entry.count) return undefined;
    this.#partial.delete(id);
    const total = entry.parts.reduce((sum, p) => sum + p.byteLength, 0);
    const body = new Uint8Array(total);
    let offset = 0;
    for (const part of entry.parts) {
      body.set(part, offset);
      offset += part.byteLength;
    }
    return deserialize(body);
  }
}

/** Publish `message` on `subject`, chunked to the server's `max_payload`. */
export function publishControl(
  connection: NatsConnection,
  subject: string,
  message: unknown,
): void {
  const maxPayload = connection.info?.max_payload ?? 1024 * 1024;
  for (const frame of encodeControl(message, maxPayload)) connection.publish(subject, frame);
}
