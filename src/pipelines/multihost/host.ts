/**
 * `parastep serve`: a long-lived host that offers its devices as ParaStep ranks to coordinators
 * (`gen --nats`) over NATS (docs/multihost.md §2-§7). For each session a coordinator opens it
 * starts one Worker per assigned device (the same worker.ts as local runs), relays the worker
 * protocol between the coordinator and its Workers, and sends each rank's heartbeat.
 *
 * What a coordinator sends never names a path or a module: the host opens the model folder of
 * that name under its own models directory, after checking the manifest's content hash, with its
 * own family's sampler module. Its Workers connect to NATS with the host's own URL and
 * credentials.
 *
 * @module
 */

import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { manifestHash, servedModel } from "../../models/hash.ts";
import { MODEL_DTYPES, type ModelDtype } from "../../models/manifest.ts";
import { listModels } from "../../models/registry.ts";
import { assignDevices, type DeviceEp } from "../../parastep/devices.ts";
import { createHeartbeats, readHeartbeat } from "../../parastep/heartbeat.ts";
import { connectNats } from "../../parastep/nats/connect.ts";
import { STEP_CODEC_VERSION } from "../../parastep/nats/codec.ts";
import {
  aliveSubject,
  CONTROL_VERSION,
  ControlDecoder,
  discoverSubject,
  encodeControl,
  type FromHost,
  HEARTBEAT_MS,
  type HostInfo,
  hostSubject,
  type OpenReply,
  type OpenSession,
  publishControl,
  rankSubject,
  type ServedModel,
  type ToHost,
} from "../../parastep/nats/control.ts";
import { NATS_PREFIX } from "../../parastep/nats/transport.ts";
import type { FromWorker, ToWorker } from "../../parastep/worker.ts";
import { FAMILIES } from "../mod.ts";

/** Options for {@link ServeHost.start}. */
export interface ServeOptions {
  /** The NATS URL (with credentials, if the server wants them). */
  readonly url: string;
  /** The text of a NATS credentials file. */
  readonly creds?: string;
  /** This host's name (one subject token). */
  readonly name: string;
  /** Devices offered. */
  readonly devices: number;
  /** The execution provider of every device. */
  readonly ep: DeviceEp;
  /** The only folder models are opened from. */
  readonly modelsDir: string;
  /** parastep's version, for discovery. */
  readonly version: string;
  /** Subject prefix. @default {"parastep"} */
  readonly prefix?: string;
  /** Log lines (sessions, ranks, steps with `verbose`). */
  readonly log?: (line: string) => void;
  /** Log every rank's step as its heartbeat moves. */
  readonly verbose?: boolean;
  /** The Worker script. @default {src/parastep/worker.ts} */
  readonly workerUrl?: URL;
}

interface RankState {
  readonly rank: number;
  readonly device: number;
  worker: Worker | null;
  closed: PromiseWithResolvers<void>;
  ended: boolean;
  lastStep: number | null;
}

interface Session {
  readonly id: string;
  readonly devices: number;
  readonly ranks: Map<number, RankState>;
  readonly modelDir: string;
  readonly module: string;
  readonly component: string;
  readonly dtype: ModelDtype;
  readonly heartbeats: SharedArrayBuffer;
  readonly rankTimeoutMs: number;
  lastAlive: number;
  readonly alive: Subscription;
  readonly timer: ReturnType<typeof setInterval>;
  ending: Promise<void> | null;
}

/** How long a rank's worker gets to reply `closed` when the host ends a session itself. */
const CLOSE_TIMEOUT_MS = 10_000;

/** A running `serve`. */
export class ServeHost {
  readonly #options: ServeOptions;
  readonly #connection: NatsConnection;
  readonly #prefix: string;
  readonly #models: ServedModel[];
  readonly #busy = new Set<number>();
  readonly #sessions = new Map<string, Session>();
  readonly #decoder = new ControlDecoder();
  readonly #workerUrl: URL;
  #stopping: Promise<void> | null = null;

  private constructor(options: ServeOptions, connection: NatsConnection) {
    this.#options = options;
    this.#connection = connection;
    this.#prefix = options.prefix ?? NATS_PREFIX;
    this.#models = scanModels(options.modelsDir);
    this.#workerUrl = options.workerUrl ?? new URL("../../parastep/worker.ts", import.meta.url);
  }

  /**
   * Connect, answer discovery and serve sessions until {@link ServeHost.stop}.
   *
   * @throws {NatsConnectError} When the server cannot be reached or refuses the credentials.
   */
  static async start(options: ServeOptions): Promise<ServeHost> {
    const connection = await connectNats(options.url, {
      name: `parastep serve ${options.name}`,
      reconnect: true,
      ...(options.creds === undefined ? {} : { creds: options.creds }),
    });
    const host = new ServeHost(options, connection);
    connection.subscribe(discoverSubject(host.#prefix), {
      callback: (error, msg) => {
        if (error !== null) return;
        const frames = encodeControl(host.info(), connection.info?.max_payload ?? 1 << 20);
        msg.respond(frames[0]!);
      },
    });
    connection.subscribe(hostSubject(options.name, host.#prefix), {
      callback: (error, msg) => {
        if (error !== null) return;
        let message: ToHost | undefined;
        try {
          message = host.#decoder.decode(msg.data) as ToHost | undefined;
        } catch (e) {
          host.#log(`dropped a control message: ${e instanceof Error ? e.message : String(e)}`);
          return;
        }
        if (message === undefined) return;
        if (message.type === "open") {
          const reply = host.#open(message);
          if (msg.reply) msg.respond(encodeControl(reply, 1 << 20)[0]!);
        } else if (message.type === "post") {
          host.#post(message.session, message.rank, message.message);
        } else if (message.type === "end") host.#end(message.session, message.rank);
      },
    });
    await connection.flush();
    return host;
  }

  /** What discovery replies. */
  info(): HostInfo {
    const ep = this.#options.ep;
    return {
      name: this.#options.name,
      version: this.#options.version,
      control: CONTROL_VERSION,
      codec: STEP_CODEC_VERSION,
      cores: navigator.hardwareConcurrency,
      devices: Array.from({ length: this.#options.devices }, (_, index) => ({
        index,
        ep,
        busy: this.#busy.has(index),
      })),
      models: this.#models,
    };
  }

  /** Resolves when the connection closes for good. */
  closed(): Promise<void> {
    return this.#connection.closed().then(() => {});
  }

  /**
   * Stop: every session's ranks are told the host is going, their Workers aborted (model runs
   * cancelled) and terminated, then the connection closes. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await Promise.all(
        [...this.#sessions.values()].map((s) =>
          this.#endSession(s, `host ${this.#options.name} is stopping`)
        ),
      );
      try {
        await this.#connection.drain();
      } catch {
        if (!this.#connection.isClosed()) await this.#connection.close();
      }
    })();
    return this.#stopping;
  }

  #log(line: string): void {
    this.#options.log?.(`serve ${this.#options.name}: ${line}`);
  }

  #open(request: OpenSession): OpenReply {
    const name = this.#options.name;
    const refuse = (why: string): OpenReply => {
      this.#log(`refused session ${request.session}: ${why}`);
      return { ok: false, reason: `host ${name}: ${why}` };
    };
    if (this.#stopping !== null) return refuse("it is stopping");
    if (request.control !== CONTROL_VERSION) {
      return refuse(
        `it speaks control protocol ${CONTROL_VERSION}, the coordinator ${request.control}: ` +
          `run the same parastep version on every host`,
      );
    }
    if (this.#sessions.has(request.session)) return refuse("the session is already open");
    const { model } = request;
    const family = FAMILIES[model.family];
    if (family === undefined) return refuse(`it runs no model family '${model.family}'`);
    if (!MODEL_DTYPES.includes(model.dtype as ModelDtype)) {
      return refuse(`it knows no float type ${JSON.stringify(model.dtype)}`);
    }
    const dtype = model.dtype as ModelDtype;
    let modelDir: string;
    let hash: string;
    try {
      const folder = servedModel(
        this.#options.modelsDir,
        model.name,
        [model.component],
        dtype,
      );
      if (folder.manifest.family !== model.family) {
        return refuse(
          `model ${model.name} is of family ${folder.manifest.family}, not ${model.family}`,
        );
      }
      modelDir = folder.dir;
      hash = manifestHash(folder.manifestFile);
    } catch (error) {
      const why = error instanceof Error ? error.message.split("\n")[0]! : String(error);
      return refuse(`model ${model.name} cannot be served (${why})`);
    }
    if (hash !== model.hash) {
      return refuse(
        `model ${model.name} has content hash ${hash.slice(0, 12)}…, the coordinator's is ` +
          `${model.hash.slice(0, 12)}…: export or copy the same folder to ${name}'s --models`,
      );
    }
    for (const { device } of request.ranks) {
      if (!Number.isInteger(device) || device < 0 || device >= this.#options.devices) {
        return refuse(`it has no device ${device} (it offers ${this.#options.devices})`);
      }
      if (this.#busy.has(device)) return refuse(`device ${device} is busy`);
    }
    for (const { device } of request.ranks) this.#busy.add(device);
    const ranks = new Map<number, RankState>();
    for (const { rank, device } of request.ranks) {
      ranks.set(rank, {
        rank,
        device,
        worker: null,
        closed: Promise.withResolvers<void>(),
        ended: false,
        lastStep: null,
      });
    }
    const id = request.session;
    const alive = this.#connection.subscribe(aliveSubject(id, this.#prefix), {
      callback: () => {
        const session = this.#sessions.get(id);
        if (session) session.lastAlive = performance.now();
      },
    });
    const session: Session = {
      id,
      devices: request.devices,
      ranks,
      modelDir,
      module: family.samplerModule.href,
      component: model.component,
      dtype,
      heartbeats: createHeartbeats(request.devices),
      rankTimeoutMs: request.rankTimeoutMs,
      lastAlive: performance.now(),
      alive,
      timer: setInterval(() => this.#beat(id), HEARTBEAT_MS),
      ending: null,
    };
    this.#sessions.set(id, session);
    this.#log(
      `session ${id}: ranks ${
        request.ranks.map((r) => `${r.rank} (device ${r.device})`).join(", ")
      } ` +
        `of ${request.devices}, model ${model.name}`,
    );
    return { ok: true, ep: this.#options.ep };
  }

  /** Every rank's heartbeat, and the coordinator's silence checked. */
  #beat(id: string): void {
    const session = this.#sessions.get(id);
    if (session === undefined || session.ending !== null) return;
    if (performance.now() - session.lastAlive > session.rankTimeoutMs) {
      void this.#endSession(session, "the coordinator stopped answering");
      return;
    }
    for (const state of session.ranks.values()) {
      if (state.ended) continue;
      const beat = readHeartbeat(session.heartbeats, state.rank);
      if (this.#options.verbose && beat.step !== null && beat.step !== state.lastStep) {
        this.#log(`session ${id}: rank ${state.rank} at step ${beat.step}`);
      }
      state.lastStep = beat.step;
      this.#send(session, state.rank, { type: "hb", beat });
    }
  }

  #send(session: Session, rank: number, message: FromHost): void {
    if (this.#connection.isClosed()) return;
    try {
      publishControl(this.#connection, rankSubject(session.id, rank, this.#prefix), message);
    } catch (error) {
      this.#log(`cannot reach the coordinator: ${error instanceof Error ? error.message : error}`);
    }
  }

  #post(id: string, rank: number, message: ToWorker): void {
    const session = this.#sessions.get(id);
    const state = session?.ranks.get(rank);
    if (session === undefined || state === undefined || state.ended) return;
    switch (message.type) {
      case "init": {
        if (state.worker !== null) return;
        const worker = new Worker(this.#workerUrl, {
          type: "module",
          name: `parastep rank ${rank} (session ${id})`,
        });
        state.worker = worker;
        worker.onmessage = (event: MessageEvent<FromWorker>) => {
          const reply = event.data;
          if (reply.type === "closed") state.closed.resolve();
          if (reply.type === "ready" || reply.type === "closed" || reply.type === "error") {
            this.#log(`session ${id}: rank ${rank} ${reply.type}`);
          }
          this.#send(session, rank, { type: "reply", message: reply });
        };
        worker.onerror = (event) => {
          event.preventDefault();
          state.closed.resolve();
          this.#send(session, rank, {
            type: "gone",
            reason:
              `the worker of rank ${rank} on host ${this.#options.name} died: ${event.message}`,
          });
        };
        const assigned = assignDevices(session.devices, { ep: this.#options.ep })[rank]!;
        worker.postMessage(
          {
            type: "init",
            rank,
            module: session.module,
            open: {
              modelDir: session.modelDir,
              component: session.component,
              dtype: session.dtype,
            },
            device: { ...assigned, deviceId: state.device },
            progressIntervalMs: message.progressIntervalMs,
          } satisfies ToWorker,
        );
        return;
      }
      case "prepare": {
        if (message.nats === undefined) return;
        state.worker?.postMessage(
          {
            ...message,
            heartbeats: session.heartbeats,
            nats: {
              ...message.nats,
              url: this.#options.url,
              ...(this.#options.creds === undefined ? {} : { creds: this.#options.creds }),
            },
          } satisfies ToWorker,
        );
        return;
      }
      case "run":
      case "replan":
      case "resume":
        state.worker?.postMessage(message);
        return;
      case "abort":
        this.#log(`session ${id}: rank ${rank} told to abort`);
        if (state.worker === null) {
          this.#send(session, rank, {
            type: "reply",
            message: {
              type: "closed",
              rank,
              report: {
                rank,
                inFlightAtClose: 0,
                cancelledCalls: 0,
                disposeError: null,
                generations: 0,
              },
            },
          });
          return;
        }
        state.worker.postMessage(message);
        return;
    }
  }

  /** Terminate a rank's worker (or every rank's), and close the session once none is left. */
  #end(id: string, rank: number | undefined): void {
    const session = this.#sessions.get(id);
    if (session === undefined) return;
    for (const state of session.ranks.values()) {
      if (rank !== undefined && state.rank !== rank) continue;
      this.#release(state);
    }
    if ([...session.ranks.values()].every((s) => s.ended)) this.#closeSession(session);
  }

  #release(state: RankState): void {
    if (state.ended) return;
    state.ended = true;
    state.worker?.terminate();
    state.worker = null;
    this.#busy.delete(state.device);
  }

  #closeSession(session: Session): void {
    if (!this.#sessions.has(session.id)) return;
    clearInterval(session.timer);
    try {
      session.alive.unsubscribe();
    } catch {
      // The connection is closed already.
    }
    this.#sessions.delete(session.id);
    this.#log(`session ${session.id} ended`);
  }

  /** End a session on the host's own account: abort every rank, wait (bounded), terminate. */
  #endSession(session: Session, reason: string): Promise<void> {
    session.ending ??= (async () => {
      this.#log(`ending session ${session.id}: ${reason}`);
      const states = [...session.ranks.values()].filter((s) => !s.ended);
      for (const state of states) {
        this.#send(session, state.rank, { type: "gone", reason });
        state.worker?.postMessage({ type: "abort" } satisfies ToWorker);
      }
      await Promise.all(states.map(async (state) => {
        if (state.worker === null) return;
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          state.closed.promise,
          new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_TIMEOUT_MS)),
        ]);
        clearTimeout(timer);
      }));
      for (const state of states) this.#release(state);
      this.#closeSession(session);
    })();
    return session.ending;
  }
}

/** The model folders under `dir` with their content hashes (folders that do not read are left out). */
function scanModels(dir: string): ServedModel[] {
  const models: ServedModel[] = [];
  for (const entry of listModels(dir)) {
    try {
      models.push({
        name: entry.name,
        family: entry.family,
        dtype: entry.dtype,
        hash: manifestHash(`${entry.path}/manifest.json`),
      });
    } catch {
      // Not a readable model folder: not offered.
    }
  }
  return models.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
