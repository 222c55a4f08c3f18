/**
 * One measurement of `bench:open` (see open.ts), in a fresh process: opens
 * each component once, with one session in this thread (1 worker) or one per
 * Deno Worker opened at the same moment (N workers), and prints the times as
 * one JSON line on stdout. With `phases`, ORT logs verbosely to stderr between
 * `@@open` and `@@done` markers, which open.ts turns into load phases.
 *
 * @module
 */

import { Env, GraphCache, Session } from "../ffi/mod.ts";
import { openComponent, type OpenComponentOptions, resolveModel } from "../src/models/model.ts";
import { AFFINE } from "../tests/support/models.ts";
import type { ChildResult, ChildSpec, ComponentResult } from "./_open_spec.ts";

let trim: (() => void) | undefined;

/**
 * Resident memory of this process in MiB (Linux), or NaN, after handing
 * freed heap back to the system (`malloc_trim`), so it counts what the
 * sessions keep rather than what loading them passed through.
 */
export function rssMiB(): number {
  try {
    if (trim === undefined) {
      const libc = Deno.dlopen("libc.so.6", {
        malloc_trim: { parameters: ["usize"], result: "i32" },
      });
      trim = () => libc.symbols.malloc_trim(0n);
    }
    trim();
  } catch {
    trim = () => {};
  }
  try {
    const pages = Number(Deno.readTextFileSync("/proc/self/statm").split(" ")[1]);
    return pages * 4096 / 2 ** 20;
  } catch {
    return NaN;
  }
}

/** The session options a spec asks for, for one of `workers` ranks. */
export function specOptions(spec: ChildSpec): OpenComponentOptions {
  const cores = navigator.hardwareConcurrency;
  const options: OpenComponentOptions = {
    intraOpThreads: spec.threads ?? Math.max(1, Math.floor(cores / spec.workers)),
    graphOptimizationLevel: spec.level,
    source: spec.source,
  };
  // As openSampler does: ranks sharing the cores must not spin.
  if (spec.workers > 1) options.allowSpinning = false;
  if (!spec.prepacking) options.prepacking = false;
  if (spec.cacheDir !== null) options.cache = new GraphCache(spec.cacheDir);
  return options;
}

/** The marker lines open.ts cuts the verbose log at. */
export function marker(kind: "open" | "done", component: string): void {
  console.error(`@@${kind} ${component}`);
}

if (import.meta.main) {
  const spec = JSON.parse(Deno.args[0]!) as ChildSpec;
  const result = spec.workers === 1 ? await inThisThread(spec) : await inWorkers(spec);
  console.log(JSON.stringify(result));
}

function inThisThread(spec: ChildSpec): ChildResult {
  using env = Env.create({ logLevel: spec.phases ? "verbose" : "error" });
  const model = resolveModel(spec.model);
  const t = performance.now();
  Session.create(env, AFFINE.bytes(), { intraOpThreads: 1 }).close();
  const firstSessionMs = performance.now() - t;
  const options = specOptions(spec);
  const sessions: Session[] = [];
  const components: Record<string, ComponentResult> = {};
  try {
    for (const name of spec.components) {
      const rss0 = rssMiB();
      if (spec.phases) marker("open", name);
      const t0 = performance.now();
      const session = openComponent(env, model, name, options);
      const ms = performance.now() - t0;
      if (spec.phases) marker("done", name);
      sessions.push(session);
      components[name] = {
        ms: [ms],
        wallMs: ms,
        ownerMs: 0,
        rssMiB: rssMiB() - rss0,
        cache: session.graphCacheStatus,
      };
    }
  } finally {
    for (const s of sessions) s.close();
  }
  return { firstSessionMs, components };
}

async function inWorkers(spec: ChildSpec): Promise<ChildResult> {
  using env = Env.create({ logLevel: "error" });
  const model = resolveModel(spec.model);
  const t = performance.now();
  Session.create(env, AFFINE.bytes(), { intraOpThreads: 1 }).close();
  const firstSessionMs = performance.now() - t;
  const workers = Array.from(
    { length: spec.workers },
    () => new Worker(new URL("./_open_worker.ts", import.meta.url), { type: "module" }),
  );
  const replies = workers.map((w) => {
    const queue: unknown[] = [];
    let wake: (() => void) | null = null;
    w.onmessage = (e) => {
      queue.push(e.data);
      wake?.();
    };
    w.onerror = (e) => {
      queue.push({ error: e.message });
      wake?.();
    };
    return async () => {
      while (queue.length === 0) await new Promise<void>((r) => wake = r);
      wake = null;
      const msg = queue.shift() as { error?: string };
      if (msg.error !== undefined) throw new Error(`bench worker: ${msg.error}`);
      return msg;
    };
  });
  const components: Record<string, ComponentResult> = {};
  const keepUntilEnd: { close(): void }[] = [];
  try {
    for (const w of workers) w.postMessage({ spec });
    await Promise.all(replies.map((next) => next())); // ready: library loaded, first session made
    for (const name of spec.components) {
      const rss0 = rssMiB();
      const t0 = performance.now();
      let owner: Session | undefined;
      if (spec.borrow) {
        owner = openComponent(env, model, name, specOptions(spec));
        keepUntilEnd.push(owner);
      }
      const ownerMs = performance.now() - t0;
      for (const w of workers) w.postMessage({ open: name, borrow: owner?.address });
      const got = await Promise.all(replies.map((next) => next())) as {
        ms: number;
        cache: string;
      }[];
      const wallMs = performance.now() - t0;
      components[name] = {
        ms: got.map((g) => g.ms),
        wallMs,
        ownerMs,
        rssMiB: rssMiB() - rss0,
        cache: got[0]!.cache,
      };
    }
    for (const w of workers) w.postMessage({ close: true });
    await Promise.all(replies.map((next) => next()));
  } finally {
    for (const w of workers) w.terminate();
    for (const p of keepUntilEnd) p.close();
  }
  return { firstSessionMs, components };
}
