/**
 * Connecting to a NATS server for the step exchange: `--nats` URLs with their credentials, the
 * connection settings a generation needs, and one-line errors that say what to do.
 *
 * @module
 */

import {
  credsAuthenticator,
  errors,
  type NatsConnection,
  NatsConnectionImpl,
  setTransportFactory,
} from "@nats-io/nats-core/internal";
import { DenoTcpTransport } from "./_deno_tcp.ts";

/** The port of a `nats://` URL that names none. */
export const NATS_DEFAULT_PORT = 4222;

/** A parsed `--nats` URL. */
export interface NatsAddress {
  /** Host name or IP address. */
  host: string;
  /** TCP port. */
  port: number;
  /** User name (with {@link NatsAddress.pass}), from `nats://user:pass@host`. */
  user?: string;
  /** Password, from `nats://user:pass@host`. */
  pass?: string;
  /** Token, from `nats://token@host` (a user part without a password). */
  token?: string;
  /** The URL without its credentials, for messages and logs. */
  display: string;
}

/**
 * Parse a `--nats` URL: `nats://[user:pass@|token@]host[:port]`, or `host[:port]`.
 *
 * @param url The URL.
 * @returns Host, port, credentials, and the URL with its credentials left out.
 * @throws {RangeError} For another scheme, a missing host or a bad port.
 * @example
 * ```ts
 * const a = parseNatsUrl("nats://alice:s3cret@10.0.0.5:4333");
 * if (a.user !== "alice" || a.pass !== "s3cret" || a.display !== "nats://10.0.0.5:4333") throw new Error();
 * if (parseNatsUrl("tok@gpu1").token !== "tok") throw new Error();
 * ```
 */
export function parseNatsUrl(url: string): NatsAddress {
  const text = url.includes("://") ? url : `nats://${url}`;
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new RangeError(
      `Cannot use the NATS URL ${JSON.stringify(redact(url))} as it is not a URL: ` +
        `write nats://host:port (with user:pass@ or token@ before the host if the server wants them)`,
    );
  }
  if (parsed.protocol !== "nats:") {
    throw new RangeError(
      `Cannot use the NATS URL ${JSON.stringify(redact(url))} as its scheme is ` +
        `'${parsed.protocol.slice(0, -1)}': only nats:// is supported (no TLS yet)`,
    );
  }
  if (parsed.hostname === "") {
    throw new RangeError(
      `Cannot use the NATS URL ${JSON.stringify(redact(url))} as it names no host`,
    );
  }
  const port = parsed.port === "" ? NATS_DEFAULT_PORT : Number(parsed.port);
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  const display = `nats://${parsed.hostname}:${port}`;
  const user = decodeURIComponent(parsed.username);
  const pass = decodeURIComponent(parsed.password);
  if (user !== "" && pass !== "") return { host, port, user, pass, display };
  if (user !== "") return { host, port, token: user, display };
  return { host, port, display };
}

/** Options for {@link connectNats}. */
export interface ConnectNatsOptions {
  /** The client name the server shows in its monitoring. */
  name?: string;
  /**
   * How long to wait for the server's handshake.
   *
   * @default {5000}
   */
  timeoutMs?: number;
  /**
   * Milliseconds between the client's pings. With {@link ConnectNatsOptions.maxPingOut}
   * unanswered ones the connection counts as lost, so a server (or a link) that vanishes
   * without closing the TCP connection is noticed within about `pingIntervalMs * (maxPingOut + 1)`.
   *
   * @default {5000}
   */
  pingIntervalMs?: number;
  /**
   * Unanswered pings before the connection counts as lost.
   *
   * @default {2}
   */
  maxPingOut?: number;
  /**
   * The text of a NATS credentials file (a user JWT and its NKey seed, as `nsc` writes them), for
   * `--nats-creds FILE` (see {@link readCredsFile}).
   */
  creds?: string;
  /**
   * Reconnect after a lost connection (a long-lived `serve` control connection); a generation's
   * connection never does.
   *
   * @default {false}
   */
  reconnect?: boolean;
}

/**
 * Read a NATS credentials file for `--nats-creds`: refused (one line, naming the file but never
 * its content) when missing, readable by group or others, or not a credentials file.
 *
 * @throws {RangeError} For a file that cannot be used.
 */
export function readCredsFile(path: string): string {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    throw new RangeError(
      `Cannot use the NATS credentials file ${path} as it cannot be read (${
        error instanceof Error ? error.message : String(error)
      })`,
    );
  }
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    throw new RangeError(
      `Cannot use the NATS credentials file ${path} as group or others may read it (mode ` +
        `${(info.mode & 0o777).toString(8)}): chmod 600 ${path}`,
    );
  }
  const text = Deno.readTextFileSync(path);
  if (!/-----BEGIN NATS USER JWT-----/.test(text) || !/-----BEGIN USER NKEY SEED-----/.test(text)) {
    throw new RangeError(
      `Cannot use the NATS credentials file ${path} as it holds no user JWT and NKey seed ` +
        `(write it with nsc, e.g. nsc generate creds)`,
    );
  }
  return text;
}

/** A NATS connection could not be made; the message is one line saying why and what to do. */
export class NatsConnectError extends Error {
  override name = "NatsConnectError";
}

/**
 * Connect to the NATS server at `url` for one generation's step exchange.
 *
 * The connection does not reconnect: core NATS does not keep messages for a client that is
 * away, so a step message may be lost in a reconnect, and a generation cannot go on after that.
 * It is opened with `noEcho` (a rank never gets its own broadcasts back).
 *
 * @param url `nats://[user:pass@|token@]host[:port]` (see {@link parseNatsUrl}).
 * @param options See {@link ConnectNatsOptions}.
 * @returns The open connection; close it with `await connection.close()`.
 * @throws {RangeError} For a malformed URL.
 * @throws {NatsConnectError} When the server cannot be reached, refuses the credentials, or does
 *   not answer in time; the message names the URL without its credentials.
 */
export async function connectNats(
  url: string,
  options: ConnectNatsOptions = {},
): Promise<NatsConnection> {
  const address = parseNatsUrl(url);
  const timeoutMs = options.timeoutMs ?? 5000;
  setTransportFactory({
    factory: () => new DenoTcpTransport(),
    defaultPort: NATS_DEFAULT_PORT,
  });
  try {
    return await NatsConnectionImpl.connect({
      servers: `${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`,
      reconnect: options.reconnect ?? false,
      ...(options.reconnect ? { maxReconnectAttempts: -1 } : {}),
      ...(options.creds === undefined
        ? {}
        : { authenticator: credsAuthenticator(new TextEncoder().encode(options.creds)) }),
      noEcho: true,
      timeout: timeoutMs,
      pingInterval: options.pingIntervalMs ?? 5000,
      maxPingOut: options.maxPingOut ?? 2,
      ...(options.name === undefined ? {} : { name: options.name }),
      ...(address.user === undefined ? {} : { user: address.user, pass: address.pass! }),
      ...(address.token === undefined ? {} : { token: address.token }),
    });
  } catch (error) {
    throw new NatsConnectError(
      describeConnectError(address, error, timeoutMs, options.creds !== undefined),
      { cause: error },
    );
  }
}

function describeConnectError(
  address: NatsAddress,
  error: unknown,
  timeoutMs: number,
  creds: boolean,
): string {
  const at = `Cannot connect to NATS at ${address.display}`;
  const detail = error instanceof Error ? error.message : String(error);
  if (error instanceof errors.AuthorizationError) {
    const sent = creds
      ? "a credentials file"
      : address.user !== undefined
      ? "user and password"
      : address.token !== undefined
      ? "token"
      : "no credentials";
    return `${at} as the server refused the credentials (${detail}; sent ${sent}): ` +
      `put the right user:pass@ or token@ in the NATS URL (or --nats-creds FILE)`;
  }
  if (error instanceof errors.TimeoutError) {
    return `${at} as the server did not complete the handshake within ${timeoutMs} ms: ` +
      `check that nats-server runs there and that the port is reachable`;
  }
  if (detail.includes("connection refused")) {
    return `${at} as nothing accepts connections there (connection refused): ` +
      `start nats-server there or fix the host and port`;
  }
  return `${at}: ${detail}`;
}

/** `url` with any `user:pass@` or `token@` part replaced by `***@`. */
function redact(url: string): string {
  return url.replace(
    /^([a-z]+:\/\/)?[^@/]*@/i,
    (_, scheme: string | undefined) => `${scheme ?? ""}***@`,
  );
}
