/**
 * A NATS client transport over Deno's own TCP (`Deno.connect`), plugged into `@nats-io/nats-core`
 * through its transport factory, the way each of nats.js's runtime transports plugs in.
 *
 * Why not `@nats-io/transport-node` (or `nats` 2.x), which otherwise work under Deno 2.9: both
 * drive `node:net`, and under Deno's implementation of it a socket that the client has already
 * destroyed (after its listeners were removed) can still emit `read ECONNRESET`, which then
 * crashes the process as an uncaught error. It happens on the paths that matter most here, e.g.
 * a server refusing credentials closes the connection while the client's PING is unread (seen
 * in about half of the attempts on Deno 2.9.6; Node 20 never). `Deno.connect` has no listeners
 * to lose, needs only `--allow-net`, and skips a compatibility layer on every message.
 *
 * Scope: plain TCP. A server that requires TLS is refused with a clear error (TLS through
 * `Deno.startTls` is phase-2 work, see docs/multihost.md).
 *
 * @module
 */

import {
  type ConnectionOptions,
  errors,
  type Server,
  type Transport,
} from "@nats-io/nats-core/internal";

/** Bytes asked for per read: larger than a bench message, so most arrive in one or two reads. */
const READ_BYTES = 64 * 1024;
/** The longest INFO line accepted before the connection is given up as not a NATS server. */
const MAX_INFO_BYTES = 64 * 1024;

/** What a NATS server announces first (the fields used here). */
interface ServerInfoLine {
  proto?: number;
  tls_required?: boolean;
  tls_available?: boolean;
}

/** One TCP connection to a NATS server, as nats-core's protocol handler drives it. */
export class DenoTcpTransport implements Transport {
  /** Reported to the server in CONNECT. */
  readonly lang = "parastep-deno";
  /** Reported to the server in CONNECT. */
  readonly version = "1";
  /** Why the connection ended, when it ended with an error. */
  closeError?: Error;
  #conn: Deno.TcpConn | null = null;
  #connected = false;
  #done = false;
  #frames: Uint8Array[] = [];
  #wake = Promise.withResolvers<void>();
  readonly #closed = Promise.withResolvers<void | Error>();
  #writes: Promise<void> = Promise.resolve();
  /** Cancels a `Deno.connect` still pending when the handler gives up (it would keep the process alive). */
  readonly #dialing = new AbortController();

  /** Whether the connection is over (closed, failed or discarded). */
  get isClosed(): boolean {
    return this.#done;
  }

  /** Always false: plain TCP only. */
  isEncrypted(): boolean {
    return false;
  }

  /**
   * Open the TCP connection and read the server's INFO line (it stays queued for the protocol
   * parser, which needs it too).
   */
  async connect(server: Server, options: ConnectionOptions): Promise<void> {
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({
        hostname: server.hostname,
        port: server.port,
        signal: this.#dialing.signal,
      });
    } catch (error) {
      if (this.#done) {
        throw new errors.ConnectionError("the connection was closed while connecting");
      }
      if (error instanceof Deno.errors.ConnectionRefused) {
        throw new errors.ConnectionError("connection refused", { cause: error });
      }
      throw new errors.ConnectionError(errorText(error), { cause: error });
    }
    this.#conn = conn;
    // The protocol handler gives up on a connect that outlives its timeout by closing us.
    if (this.#done) {
      closeQuietly(conn);
      throw new errors.ConnectionError("the connection was closed while connecting");
    }
    try {
      conn.setNoDelay(true);
      const info = await this.#readInfo(conn);
      if (this.#done) throw new errors.ConnectionError("closed while connecting");
      if ((info.proto === undefined || info.proto < 1) && options.noEcho) {
        throw new errors.ConnectionError("the server does not support 'noEcho'");
      }
      if (info.tls_required || (options.tls !== undefined && options.tls !== null)) {
        throw new errors.ConnectionError(
          "the server requires TLS, which parastep's NATS transport does not speak yet",
        );
      }
    } catch (error) {
      this.#done = true;
      this.#conn = null;
      closeQuietly(conn);
      throw error;
    }
    this.#connected = true;
    void this.#readLoop(conn);
  }

  /** Frames as they arrive, until the connection ends. */
  async *[Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    while (true) {
      if (this.#frames.length === 0) {
        if (this.#done) return;
        await this.#wake.promise;
        this.#wake = Promise.withResolvers<void>();
      }
      const frames = this.#frames;
      this.#frames = [];
      for (const frame of frames) yield frame;
      if (this.#done && this.#frames.length === 0) return;
    }
  }

  /**
   * Queue `frame` for writing, after every earlier one. Write errors are not reported here: the
   * read side sees the broken connection and the protocol handler takes it from there.
   */
  send(frame: Uint8Array): void {
    const conn = this.#conn;
    if (this.#done || conn === null) return;
    this.#writes = this.#writes.then(() => writeAll(conn, frame)).catch(() => {});
  }

  /** End the connection (after pending writes, unless it ends with an error). */
  async close(error?: Error): Promise<void> {
    if (this.#done) return;
    if (error === undefined) await this.#writes;
    this.#finish(error);
  }

  /** Drop the connection so that the protocol handler treats it as lost. */
  disconnect(): void {
    this.#finish(undefined);
  }

  /** Resolves when a connection that was established has ended (with the error, if any). */
  closed(): Promise<void | Error> {
    return this.#closed.promise;
  }

  /** Drop the connection without telling anyone (the handler is replacing it). */
  discard(): void {
    this.#done = true;
    if (!this.#connected) this.#dialing.abort();
    if (this.#conn !== null) closeQuietly(this.#conn);
    this.#conn = null;
    this.#wake.resolve();
  }

  async #readInfo(conn: Deno.TcpConn): Promise<ServerInfoLine> {
    let seen = new Uint8Array(0);
    while (true) {
      const buffer = new Uint8Array(READ_BYTES);
      const n = await conn.read(buffer);
      if (n === null) {
        throw new errors.ConnectionError("the server closed the connection before its INFO");
      }
      const chunk = buffer.subarray(0, n);
      this.#frames.push(chunk);
      const joined = new Uint8Array(seen.length + n);
      joined.set(seen);
      joined.set(chunk, seen.length);
      seen = joined;
      const end = seen.indexOf(0x0a);
      if (end >= 0) {
        const line = new TextDecoder().decode(seen.subarray(0, end)).trim();
        const match = /^INFO\s+(.+)$/i.exec(line);
        if (match === null) {
          throw new errors.ConnectionError("the server's first line is not INFO: not NATS");
        }
        return JSON.parse(match[1]!) as ServerInfoLine;
      }
      if (seen.length > MAX_INFO_BYTES) {
        throw new errors.ConnectionError("the server sent no INFO line: not NATS");
      }
    }
  }

  async #readLoop(conn: Deno.TcpConn): Promise<void> {
    let failure: Error | undefined;
    try {
      while (!this.#done) {
        const buffer = new Uint8Array(READ_BYTES);
        const n = await conn.read(buffer);
        if (n === null) break;
        this.#frames.push(buffer.subarray(0, n));
        this.#wake.resolve();
      }
    } catch (error) {
      // A read cut short by our own close is not a failure.
      if (!this.#done) failure = error instanceof Error ? error : new Error(String(error));
    }
    this.#finish(failure);
  }

  #finish(error: Error | undefined): void {
    if (this.#done) {
      if (this.#conn !== null) closeQuietly(this.#conn);
      this.#conn = null;
      return;
    }
    this.#done = true;
    if (error !== undefined) this.closeError = error;
    if (!this.#connected) this.#dialing.abort();
    if (this.#conn !== null) closeQuietly(this.#conn);
    this.#conn = null;
    this.#wake.resolve();
    if (this.#connected) this.#closed.resolve(error);
  }
}

async function writeAll(conn: Deno.TcpConn, frame: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < frame.length) offset += await conn.write(frame.subarray(offset));
}

function closeQuietly(conn: Deno.TcpConn): void {
  try {
    conn.close();
  } catch {
    // Already closed: the only failure close() has.
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
