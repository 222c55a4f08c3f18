/**
 * How a process running Workers ends when they are stuck: Ctrl-C while sessions load, a second
 * Ctrl-C, and a model call hung inside ONNX Runtime. Each case runs workers_stuck_cli.ts in a
 * child process, as `parastep gen` runs its engine, and checks the exit code (never a crash), the
 * one line on stderr, how each worker was shut down, and that nothing of it is left running.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ShutdownReport } from "../../src/parastep/mod.ts";
import { processesWith } from "../support/cli.ts";
import type { StuckCliOptions } from "./workers_stuck_cli.ts";

const CLI = new URL("./workers_stuck_cli.ts", import.meta.url).pathname;
const PERMISSIONS = ["--allow-ffi", "--allow-read", "--allow-env", "--allow-sys"];

/** A running workers_stuck_cli.ts: its stdout lines as they come, its exit, a timer since start. */
class StuckProcess {
  readonly child: Deno.ChildProcess;
  /** On the command line, to find this process and anything it started in /proc. */
  readonly tag = `stuck-${crypto.randomUUID()}`;
  readonly lines: unknown[] = [];
  readonly #stdout: Promise<void>;
  readonly #stderr: Promise<string>;
  #waiters: (() => void)[] = [];

  constructor(mode: string, options: StuckCliOptions) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, CLI, mode, JSON.stringify(options), this.tag],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    this.#stdout = (async () => {
      let text = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        text += chunk;
        let end;
        while ((end = text.indexOf("\n")) >= 0) {
          this.lines.push(JSON.parse(text.slice(0, end)));
          text = text.slice(end + 1);
          for (const wake of this.#waiters.splice(0)) wake();
        }
      }
      for (const wake of this.#waiters.splice(0)) wake();
    })();
    this.#stderr = new Response(child.stderr).text();
  }

  /** Resolves once `count` ranks have announced `event` (fails if the process ends first). */
  async announced(event: string, count: number): Promise<void> {
    const seen = () =>
      this.lines.filter((l) => (l as { probe?: { event: string } }).probe?.event === event)
        .length;
    while (seen() < count) {
      const next = new Promise<void>((wake) => this.#waiters.push(wake));
      const ended = await Promise.race([next.then(() => false), this.#stdout.then(() => true)]);
      if (ended && seen() < count) throw new Error(`the process ended before ${count} ${event}`);
    }
  }

  /** The exit status, stderr, the shutdown reports, and whether it finished its run. */
  async result() {
    const [status, stderr] = await Promise.all([this.child.status, this.#stderr, this.#stdout]);
    const shutdown = this.lines.find((l) => (l as { shutdown?: unknown }).shutdown) as
      | { shutdown: ShutdownReport[] }
      | undefined;
    return {
      code: status.code,
      signal: status.signal,
      stderr: stderr.trimEnd(),
      shutdown: shutdown?.shutdown ?? null,
      done: this.lines.some((l) => (l as { done?: boolean }).done === true),
    };
  }

  /** Processes whose command line holds this process's tag (itself included, while it runs). */
  survivors(): Promise<number[]> {
    return processesWith(this.tag);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("Ctrl-C while every rank loads its session cancels the loads: all close in time, exit 130", async () => {
  // 32000 nodes: a load of 13 s or more per rank, against a 5 s close timeout (and a grace long
  // enough to see the workers close by themselves).
  const p = new StuckProcess("load-async", { devices: 2, closeTimeoutMs: 5000, graceMs: 20_000 });
  await p.announced("loading", 2);
  await sleep(500); // inside CreateSession on both ranks
  const interrupted = performance.now();
  p.child.kill("SIGINT");
  const r = await p.result();
  const ms = performance.now() - interrupted;
  assert.equal(r.code, 130, r.stderr);
  assert.equal(r.signal, null);
  assert.equal(r.stderr, "parastep: Interrupted (Ctrl-C): stopped cleanly, nothing was written");
  assert.ok(r.shutdown, "no shutdown report");
  for (const report of r.shutdown) {
    assert.equal(report.timedOut, false, `rank ${report.rank} did not close in time`);
    assert.equal(report.closed, true, `rank ${report.rank} did not reply closed`);
  }
  assert.ok(ms < 5000, `exited ${ms.toFixed(0)} ms after Ctrl-C`);
  assert.deepEqual(await p.survivors(), []);
});

Deno.test("Ctrl-C while a rank's thread is blocked inside a session load: no crash, exit 130 after the close timeout", async () => {
  // The blocking Session.create: the Workers cannot even hear `abort`, so they are terminated
  // with ORT still loading on their threads, which Deno.exit's static destructors would crash.
  const p = new StuckProcess("load-sync", { devices: 2, closeTimeoutMs: 1000, graceMs: 20_000 });
  await p.announced("loading", 2);
  await sleep(500);
  p.child.kill("SIGINT");
  const r = await p.result();
  assert.equal(r.code, 130, r.stderr);
  assert.equal(r.signal, null);
  assert.equal(r.stderr, "parastep: Interrupted (Ctrl-C): stopped cleanly, nothing was written");
  assert.deepEqual(r.shutdown?.map((s) => s.timedOut), [true, true]);
  assert.deepEqual(await p.survivors(), []);
});

Deno.test("a run that does not stop within the grace after Ctrl-C is left at once: exit 130, one line", async () => {
  // Workers deaf to `abort` for a minute at least; the grace is 1 s.
  const p = new StuckProcess("load-sync", { devices: 2, closeTimeoutMs: 60_000, graceMs: 1000 });
  await p.announced("loading", 2);
  await sleep(500);
  const interrupted = performance.now();
  p.child.kill("SIGINT");
  const r = await p.result();
  const ms = performance.now() - interrupted;
  assert.equal(r.code, 130, r.stderr);
  assert.equal(r.signal, null);
  assert.equal(r.stderr, "parastep: Interrupted (Ctrl-C): stopped cleanly, nothing was written");
  assert.equal(r.shutdown, null, "the shutdown was waited for");
  assert.ok(ms >= 1000 && ms < 4000, `exited ${ms.toFixed(0)} ms after Ctrl-C`);
  assert.deepEqual(await p.survivors(), []);
});

Deno.test("a second Ctrl-C ends the process at once with exit 130 and one line", async () => {
  // A close timeout of a minute and a grace of as long: only the second Ctrl-C can end this.
  const p = new StuckProcess("load-sync", {
    devices: 2,
    closeTimeoutMs: 60_000,
    graceMs: 60_000,
  });
  await p.announced("loading", 2);
  await sleep(500);
  p.child.kill("SIGINT");
  await sleep(500);
  const second = performance.now();
  p.child.kill("SIGINT");
  const r = await p.result();
  const ms = performance.now() - second;
  assert.equal(r.code, 130, r.stderr);
  assert.equal(r.signal, null);
  assert.equal(
    r.stderr,
    "parastep: Interrupted (Ctrl-C twice): stopped at once, nothing was written",
  );
  assert.equal(r.shutdown, null, "the shutdown was waited for");
  assert.ok(ms < 3000, `exited ${ms.toFixed(0)} ms after the second Ctrl-C`);
  assert.deepEqual(await p.survivors(), []);
});

Deno.test("Ctrl-C while the main thread is blocked in a session load: the backstop leaves after the grace, one line", async () => {
  const p = new StuckProcess("block-main", { graceMs: 1000 });
  await p.announced("blocking", 1);
  await sleep(500); // inside CreateSession, for 13 s or more
  const interrupted = performance.now();
  p.child.kill("SIGINT");
  const r = await p.result();
  const ms = performance.now() - interrupted;
  assert.equal(r.code, 130, r.stderr);
  assert.equal(r.signal, null);
  assert.equal(r.stderr, "parastep: Interrupted (Ctrl-C): stopped cleanly, nothing was written");
  // The grace, then the backstop's 250 ms: the main thread was still loading.
  assert.ok(ms >= 1000 && ms < 4000, `exited ${ms.toFixed(0)} ms after Ctrl-C`);
  assert.deepEqual(await p.survivors(), []);
});

Deno.test("a second Ctrl-C while the main thread is blocked ends the process at once, one line", async () => {
  const p = new StuckProcess("block-main", { graceMs: 60_000 });
  await p.announced("blocking", 1);
  await sleep(500);
  p.child.kill("SIGINT");
  await sleep(300);
  const second = performance.now();
  p.child.kill("SIGINT");
  const r = await p.result();
  const ms = performance.now() - second;
  assert.equal(r.code, 130, r.stderr);
  assert.equal(
    r.stderr,
    "parastep: Interrupted (Ctrl-C twice): stopped at once, nothing was written",
  );
  assert.ok(ms < 3000, `exited ${ms.toFixed(0)} ms after the second Ctrl-C`);
  assert.deepEqual(await p.survivors(), []);
});

Deno.test("a model call hung inside ONNX Runtime ends the run: exit 1 naming the rank and step, no crash", async () => {
  const options = { devices: 2, stallTimeoutMs: 1500, hang: { rank: 1, step: 3 } };
  const p = new StuckProcess("hang-run", options);
  await p.announced("hanging", 1);
  const hung = performance.now();
  const r = await p.result();
  const ms = performance.now() - hung;
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.signal, null);
  assert.equal(r.stderr.split("\n").length, 1, r.stderr);
  assert.match(
    r.stderr,
    /^parastep: Cannot run ParaStep as rank 1 stalled at step 3: its model call has not returned for 1\.\d s \(the stall timeout is 1\.5 s; a hung device or driver\?\)$/,
  );
  assert.equal(r.done, false);
  // Rank 0 waited for rank 1's eps and closed; rank 1 never returned from its call.
  assert.equal(r.shutdown?.[0]?.closed, true);
  assert.equal(r.shutdown?.[1]?.timedOut, true);
  // The timeout, a poll, the stalled rank's 2 s to close: well under the minutes the call takes.
  assert.ok(ms < 10_000, `exited ${ms.toFixed(0)} ms after the call hung`);
  assert.deepEqual(await p.survivors(), []);
});
