/**
 * The NATS engine (`gen --nats URL`): ParaStep with rank 0 (and optionally more ranks) in this
 * process's Workers and the other ranks on serving hosts (`parastep serve`), every rank
 * exchanging steps over NATS (docs/multihost.md).
 *
 * Opening it: discover the hosts (request/reply), assign ranks `L..N-1` to free devices (hosts in
 * `--hosts` order, else by name, each host's devices by ordinal), open a session on each host
 * (which checks the model's content hash; a refusal is one line naming the host, exit 2), then
 * open a {@link WorkerPool} whose remote ranks are {@link RemoteWorker}s.
 *
 * @module
 */

import { createInbox, Empty, type NatsConnection } from "@nats-io/nats-core";
import { manifestHash } from "../../models/hash.ts";
import { resolveModel } from "../../models/model.ts";
import { WorkerPool } from "../../parastep/coordinator.ts";
import { assignDevices } from "../../parastep/devices.ts";
import { connectNats } from "../../parastep/nats/connect.ts";
import {
  aliveSubject,
  CONTROL_VERSION,
  ControlDecoder,
  discoverSubject,
  encodeControl,
  HEARTBEAT_MS,
  type HostInfo,
  hostSubject,
  type ModelIdentity,
  type OpenReply,
  type OpenSession,
  publishControl,
} from "../../parastep/nats/control.ts";
import { RemoteWorker } from "../../parastep/nats/remote.ts";
import { NATS_PREFIX } from "../../parastep/nats/transport.ts";
import type { DenoiserOpen } from "../_denoiser.ts";
import {
  type DenoiseEngine,
  denoiseInProcess,
  type EngineSpec,
  type OpenedEngine,
  poolJob,
  workersReport,
} from "../denoise.ts";

/** The default `--rank-timeout`, in milliseconds. */
export const DEFAULT_RANK_TIMEOUT_MS = 10_000;
/** How long discovery waits for replies. */
export const DEFAULT_DISCOVER_MS = 1000;

/** Options of {@link natsEngine}. */
export interface NatsEngineOptions {
  /** The NATS URL (with credentials, if the server wants them). */
  readonly url: string;
  /** The text of a NATS credentials file. */
  readonly creds?: string;
  /** Only these hosts, in this order. @default {every host that answers, by name} */
  readonly hosts?: readonly string[];
  /** Ranks in this process (rank 0 always is). @default {1} */
  readonly localRanks?: number;
  /** A rank silent this long is lost. @default {10000} */
  readonly rankTimeoutMs?: number;
  /** How long discovery waits for hosts. @default {1000} */
  readonly discoverMs?: number;
  /** Subject prefix. @default {"parastep"} */
  readonly prefix?: string;
  /** A lost rank fails the run, or the ranks left finish it. @default {"fail"} */
  readonly onRankLoss?: "fail" | "continue";
}

/** A host refused the session (another model hash, no such model, busy): exit 2, one line. */
export class HostRefusedError extends RangeError {
  override name = "HostRefusedError";
}

/**
 * Ask every serving host for its {@link HostInfo}; resolves after `waitMs`, or as soon as every
 * host of `hosts` has answered.
 */
export async function discoverHosts(
  connection: NatsConnection,
  options: { waitMs?: number; hosts?: readonly string[]; prefix?: string } = {},
): Promise<HostInfo[]> {
  const decoder = new ControlDecoder();
  const replies = new Map<string, HostInfo>();
  const done = Promise.withResolvers<void>();
  const inbox = createInbox();
  const wanted = options.hosts;
  const subscription = connection.subscribe(inbox, {
    callback: (error, msg) => {
      if (error !== null) return;
      try {
        const info = decoder.decode(msg.data) as HostInfo | undefined;
        if (info === undefined || typeof info.name !== "string") return;
        replies.set(info.name, info);
        if (wanted !== undefined && wanted.every((h) => replies.has(h))) done.resolve();
      } catch {
        // Not a host's reply.
      }
    },
  });
  const timer = setTimeout(() => done.resolve(), options.waitMs ?? DEFAULT_DISCOVER_MS);
  try {
    await connection.flush();
    connection.publish(discoverSubject(options.prefix ?? NATS_PREFIX), Empty, { reply: inbox });
    await done.promise;
  } finally {
    clearTimeout(timer);
    subscription.unsubscribe();
  }
  return [...replies.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Ranks `first..N-1` on free devices of `hosts`, or a one-line reason there are too few. */
export function assignRanks(
  found: readonly HostInfo[],
  first: number,
  devices: number,
  hostOrder?: readonly string[],
): Map<string, { rank: number; device: number }[]> {
  const byName = new Map(found.map((h) => [h.name, h]));
  let hosts: HostInfo[];
  if (hostOrder !== undefined) {
    const missing = hostOrder.filter((h) => !byName.has(h));
    if (missing.length > 0) {
      throw new RangeError(
        `Cannot run ParaStep over NATS as host ${missing.join(", ")} did not answer discovery ` +
          `(found: ${found.map((h) => h.name).join(", ") || "none"}): start 'parastep serve' there`,
      );
    }
    hosts = hostOrder.map((h) => byName.get(h)!);
  } else hosts = [...found];
  const plan = new Map<string, { rank: number; device: number }[]>();
  let rank = first;
  for (const host of hosts) {
    for (const device of host.devices) {
      if (rank >= devices) break;
      if (device.busy) continue;
      const list = plan.get(host.name) ?? [];
      list.push({ rank, device: device.index });
      plan.set(host.name, list);
      rank += 1;
    }
  }
  if (rank < devices) {
    const free = hosts.map((h) =>
      `${h.name} (${h.devices.filter((d) => !d.busy).length} free of ${h.devices.length})`
    );
    throw new RangeError(
      `Cannot run ParaStep on ${devices} ranks over NATS as only ${rank - first} free remote ` +
        `devices were found for ranks ${first}..${devices - 1}: ` +
        `${
          free.join(", ") || "no host answered"
        }; start 'parastep serve' on more hosts or lower --gpus`,
    );
  }
  return plan;
}

/**
 * The NATS engine for `gen --nats`: see the module doc. Single-device modes (and `N = 1`) run in
 * process.
 */
export function natsEngine(options: NatsEngineOptions): DenoiseEngine {
  return async (spec: EngineSpec): Promise<OpenedEngine> => {
    if (spec.mode !== "parastep" || spec.devices === 1) return await denoiseInProcess(spec);
    return await openNatsEngine(spec, options);
  };
}

async function openNatsEngine(spec: EngineSpec, options: NatsEngineOptions): Promise<OpenedEngine> {
  const N = spec.devices;
  const localRanks = options.localRanks ?? 1;
  if (!Number.isInteger(localRanks) || localRanks < 1 || localRanks > N) {
    throw new RangeError(
      `Cannot run ParaStep over NATS as --local-ranks must be an integer in 1..${N}: ` +
        `current value is ${localRanks}`,
    );
  }
  const rankTimeoutMs = options.rankTimeoutMs ?? DEFAULT_RANK_TIMEOUT_MS;
  const prefix = options.prefix ?? NATS_PREFIX;
  const started = performance.now();
  const connection = await connectNats(options.url, {
    name: "parastep gen",
    ...(options.creds === undefined ? {} : { creds: options.creds }),
  });
  const session = crypto.randomUUID();
  const opened: string[] = [];
  let identity: ModelIdentity | null = null;
  let alive: ReturnType<typeof setInterval> | undefined;
  const endSessions = () => {
    clearInterval(alive);
    for (const host of opened) {
      try {
        publishControl(connection, hostSubject(host, prefix), { type: "end", session });
      } catch {
        // The connection is gone: the host ends the session when the keep-alive stops.
      }
    }
  };
  try {
    let plan = new Map<string, { rank: number; device: number }[]>();
    if (localRanks < N) {
      // Hosts get the model's name and content hash, never its path.
      const open = spec.open as DenoiserOpen;
      const model = resolveModel(open.modelDir);
      identity = {
        name: model.dir.replace(/\/+$/, "").split("/").pop()!,
        hash: manifestHash(model.manifestFile),
        family: model.manifest.family,
        component: open.component,
        dtype: open.dtype,
      };
      const found = await discoverHosts(connection, {
        prefix,
        ...(options.discoverMs === undefined ? {} : { waitMs: options.discoverMs }),
        ...(options.hosts === undefined ? {} : { hosts: options.hosts }),
      });
      plan = assignRanks(found, localRanks, N, options.hosts);
    }
    alive = setInterval(() => {
      if (!connection.isClosed()) connection.publish(aliveSubject(session, prefix), Empty);
    }, HEARTBEAT_MS);
    for (const [host, ranks] of plan) {
      const request: OpenSession = {
        type: "open",
        control: CONTROL_VERSION,
        session,
        devices: N,
        ranks,
        model: identity!,
        rankTimeoutMs,
      };
      const frame = encodeControl(request, connection.info?.max_payload ?? 1 << 20)[0]!;
      let reply: OpenReply;
      try {
        const msg = await connection.request(hostSubject(host, prefix), frame, {
          timeout: rankTimeoutMs,
        });
        reply = new ControlDecoder().decode(msg.data) as OpenReply;
      } catch (error) {
        throw new HostRefusedError(
          `Cannot run ParaStep over NATS as host ${host} did not answer the session request ` +
            `(${error instanceof Error ? error.message : String(error)})`,
        );
      }
      if (!reply.ok) throw new HostRefusedError(`Cannot run ParaStep over NATS as ${reply.reason}`);
      opened.push(host);
    }
    const hostOf = new Map<number, string>();
    for (const [host, ranks] of plan) for (const { rank } of ranks) hostOf.set(rank, host);
    const pool = await WorkerPool.open({ module: spec.module, open: spec.open, devices: N }, {
      devices: assignDevices(N, { ep: spec.ep }).map((d) => ({
        ...d,
        ...(spec.threads !== undefined ? { intraOpThreads: spec.threads } : {}),
      })),
      ...(spec.signal ? { signal: spec.signal } : {}),
      spawnWorker: (rank, workerUrl) => {
        const host = hostOf.get(rank);
        if (host === undefined) {
          return new Worker(workerUrl, { type: "module", name: `parastep rank ${rank}` });
        }
        return new RemoteWorker({ connection, session, rank, host, rankTimeoutMs, prefix });
      },
    });
    const loadMs = performance.now() - started;
    return {
      loadMs,
      // Sessions this process opened: one per local rank (remote ranks open theirs).
      denoiserSessions: localRanks,
      async run(job) {
        const { request, options: runOptions } = poolJob(job, N);
        const result = await pool.run(request, {
          ...runOptions,
          ...(options.onRankLoss === undefined ? {} : { onRankLoss: options.onRankLoss }),
          nats: {
            url: options.url,
            dims: [job.x0.length],
            ...(options.creds === undefined ? {} : { creds: options.creds }),
            ...(prefix === NATS_PREFIX ? {} : { prefix }),
          },
        });
        const report = workersReport(result, spec.ep);
        return result.losses === undefined ? report : { ...report, losses: result.losses };
      },
      async [Symbol.asyncDispose]() {
        try {
          await pool.close();
        } finally {
          endSessions();
          await connection.close();
        }
      },
    };
  } catch (error) {
    endSessions();
    await connection.close();
    throw error;
  }
}
