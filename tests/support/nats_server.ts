/**
 * A throwaway `nats-server` for tests: started on 127.0.0.1 at a port the server picks (so two
 * test files never race for one), optionally with user/password or token auth and a small
 * `max_payload`, and stopped (or killed, for the connection-loss tests) by the test.
 *
 * Tests that need it use {@link NATS_SERVER_BIN} and {@link NATS_SKIP_REASON}: they are ignored,
 * with the reason printed once, only when no `nats-server` binary is found (Debian:
 * `apt-get install nats-server`, which puts it in /usr/sbin).
 *
 * @module
 */

/** Where the binary is looked for besides `$NATS_SERVER_BIN` and `$PATH`. */
const USUAL_PLACES = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"];

function findBinary(): string | undefined {
  const fromEnv = Deno.env.get("NATS_SERVER_BIN");
  if (fromEnv) return isFile(fromEnv) ? fromEnv : undefined;
  const dirs = [
    ...(Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== ""),
    ...USUAL_PLACES,
  ];
  for (const dir of dirs) {
    const candidate = `${dir}/nats-server`;
    if (isFile(candidate)) return candidate;
  }
  return undefined;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The `nats-server` binary, or `undefined` when there is none. */
export const NATS_SERVER_BIN: string | undefined = findBinary();

/** Why NATS tests are skipped here, or `undefined` when they run. */
export const NATS_SKIP_REASON: string | undefined = NATS_SERVER_BIN !== undefined
  ? undefined
  : Deno.env.get("NATS_SERVER_BIN")
  ? `NATS tests skipped: NATS_SERVER_BIN=${Deno.env.get("NATS_SERVER_BIN")} is not a file`
  : "NATS tests skipped: no nats-server binary on $PATH or in /usr/sbin, /usr/local/sbin " +
    "(Debian: apt-get install nats-server; or set NATS_SERVER_BIN)";

let skipPrinted = false;

/** Print the skip reason once per process; returns whether NATS tests must be ignored. */
export function skipNats(): boolean {
  if (NATS_SKIP_REASON !== undefined && !skipPrinted) {
    skipPrinted = true;
    console.log(NATS_SKIP_REASON);
  }
  return NATS_SKIP_REASON !== undefined;
}

/** Options for {@link startNatsServer}. */
export interface NatsServerOptions {
  /** Require this user (with {@link NatsServerOptions.pass}). */
  user?: string;
  /** The user's password. */
  pass?: string;
  /** Require this token. */
  token?: string;
  /** The server's `max_payload` in bytes. @default {nats-server's own, 1 MiB} */
  maxPayload?: number;
  /** How long to wait for the server to accept connections. @default {10000} */
  startTimeoutMs?: number;
}

/** A running test server. */
export interface NatsServer extends AsyncDisposable {
  /** `nats://127.0.0.1:<port>`, without credentials. */
  readonly url: string;
  /** The port it listens on. */
  readonly port: number;
  /** What it has logged so far. */
  log(): string;
  /** Stop it (SIGTERM, then SIGKILL after 5 s) and remove its files. Idempotent. */
  stop(): Promise<void>;
  /** Kill it at once (SIGKILL), as a crashed host would vanish. Idempotent. */
  kill(): Promise<void>;
}

/**
 * Start a `nats-server` on 127.0.0.1 and resolve once it accepts connections (it has sent an
 * INFO line to a test connection).
 *
 * @throws {Error} When there is no binary, or the server does not come up in time (with its log).
 */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  if (NATS_SERVER_BIN === undefined) throw new Error(NATS_SKIP_REASON);
  const dir = await Deno.makeTempDir({ prefix: "parastep-nats-" });
  const lines = ["host: 127.0.0.1", "port: -1"];
  if (options.maxPayload !== undefined) lines.push(`max_payload: ${options.maxPayload}`);
  if (options.user !== undefined) {
    lines.push(
      `authorization { user: ${JSON.stringify(options.user)}, ` +
        `password: ${JSON.stringify(options.pass ?? "")} }`,
    );
  } else if (options.token !== undefined) {
    lines.push(`authorization { token: ${JSON.stringify(options.token)} }`);
  }
  const config = `${dir}/nats.conf`;
  await Deno.writeTextFile(config, lines.join("\n") + "\n");
  const child = new Deno.Command(NATS_SERVER_BIN, {
    args: ["-c", config],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();

  let log = "";
  const listening = Promise.withResolvers<number>();
  // Keep reading stderr for the server's whole life, or a full pipe would block it.
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      log += decoder.decode(chunk, { stream: true });
      const match = /Listening for client connections on 127\.0\.0\.1:(\d+)/.exec(log);
      if (match !== null && /Server is ready/.test(log)) listening.resolve(Number(match[1]));
    }
  })();
  const exited = child.status.then((status) => {
    listening.reject(new Error(`nats-server exited with code ${status.code} before it was ready`));
    return status;
  });

  let stopped: Promise<void> | null = null;
  const end = (signal: Deno.Signal): Promise<void> => {
    stopped ??= (async () => {
      try {
        child.kill(signal);
      } catch {
        // Already gone.
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }, 5000);
      await exited;
      clearTimeout(timer);
      await reading;
      await Deno.remove(dir, { recursive: true });
    })();
    return stopped;
  };

  const timeoutMs = options.startTimeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const port = await Promise.race([
      listening.promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`nats-server was not ready within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    await probe(port, timeoutMs);
    return {
      url: `nats://127.0.0.1:${port}`,
      port,
      log: () => log,
      stop: () => end("SIGTERM"),
      kill: () => end("SIGKILL"),
      [Symbol.asyncDispose]: () => end("SIGTERM"),
    };
  } catch (error) {
    await end("SIGKILL");
    throw new Error(`Cannot start nats-server: ${(error as Error).message}\n${log}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Connect once and read the INFO line: the server accepts clients. */
async function probe(port: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    try {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const buffer = new Uint8Array(4096);
      const n = await conn.read(buffer);
      if (n !== null && new TextDecoder().decode(buffer.subarray(0, n)).startsWith("INFO ")) {
        return;
      }
    } catch {
      // Not yet.
    }
    if (performance.now() > deadline) {
      throw new Error(`nothing answered on 127.0.0.1:${port} within ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
