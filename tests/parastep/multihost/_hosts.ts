/**
 * Test helpers for several hosts: `parastep serve` and `parastep gen` as child processes, as
 * users run them (tests/support/cli.ts), with network access for NATS.
 *
 * @module
 */

import { MAIN, PERMISSIONS } from "../../support/cli.ts";

/** The gen task's permissions plus the network (NATS on 127.0.0.1). */
export const NET_PERMISSIONS: readonly string[] = [...PERMISSIONS, "--allow-net"];

/** The committed models folder. */
export const MODELS: string = new URL("../../../models", import.meta.url).pathname;

/** A running `parastep serve`. */
export interface ServeProcess extends AsyncDisposable {
  /** Its name (`--name`). */
  readonly name: string;
  /** Its process id. */
  readonly pid: number;
  /** Everything it printed so far. */
  output(): string;
  /** Resolves with the first match of `pattern` in its output (checked as lines arrive). */
  waitFor(pattern: RegExp, predicate?: (m: RegExpExecArray) => boolean): Promise<RegExpExecArray>;
  /** Send `signal` and resolve with the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** The exit status. */
  readonly status: Promise<Deno.CommandStatus>;
}

/**
 * Start `parastep serve --nats url --name name --ep cpu --models models -v` and resolve once it
 * serves.
 */
export async function startServe(
  url: string,
  name: string,
  options: { models?: string; extra?: string[]; expectFailure?: boolean } = {},
): Promise<ServeProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...NET_PERMISSIONS,
      MAIN,
      "serve",
      "--nats",
      url,
      "--name",
      name,
      "--ep",
      "cpu",
      "--models",
      options.models ?? MODELS,
      "-v",
      ...(options.extra ?? []),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const waiters: {
    pattern: RegExp;
    predicate?: (m: RegExpExecArray) => boolean;
    resolve: (m: RegExpExecArray) => void;
  }[] = [];
  const check = () => {
    for (const waiter of [...waiters]) {
      const flags = waiter.pattern.flags.includes("g")
        ? waiter.pattern.flags
        : `${waiter.pattern.flags}g`;
      const all = new RegExp(waiter.pattern.source, flags);
      for (let m = all.exec(text); m !== null; m = all.exec(text)) {
        if (waiter.predicate === undefined || waiter.predicate(m)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(m);
          break;
        }
      }
    }
  };
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      text += decoder.decode(chunk, { stream: true });
      check();
    }
  };
  const reading = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const status = child.status.then(async (s) => {
    await reading;
    return s;
  });
  const process: ServeProcess = {
    name,
    pid: child.pid,
    output: () => text,
    waitFor(pattern, predicate) {
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, ...(predicate ? { predicate } : {}), resolve });
        check();
        void status.then(() =>
          reject(new Error(`serve ${name} exited before ${pattern}:\n${text}`))
        );
      });
    },
    async stop(signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch {
        // Already gone.
      }
      return (await status).code;
    },
    status,
    async [Symbol.asyncDispose]() {
      await process.stop("SIGKILL");
    },
  };
  if (!options.expectFailure) {
    await Promise.race([
      process.waitFor(new RegExp(`parastep serve: host ${name} serving`)),
      status.then((s) => {
        throw new Error(`serve ${name} exited with ${s.code}:\n${text}`);
      }),
    ]);
  }
  return process;
}

/** Runs `parastep ...args` with network access; resolves with the code, output and wall time. */
export async function parastepNet(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...NET_PERMISSIONS, MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return {
    code: out.code,
    stdout: decode(out.stdout),
    stderr: decode(out.stderr),
    ms: performance.now() - started,
  };
}

/** A temporary folder, removed on dispose. */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "parastep-multihost-" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

/** Bytes of `path`, or null when there is no such file. */
export async function readOrNull(path: string): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}
