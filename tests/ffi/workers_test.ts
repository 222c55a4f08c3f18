import assert from "node:assert/strict";
import { AFFINE } from "../support/models.ts";

interface Done {
  kind: "done";
  x: Float32Array;
  y: Float32Array;
  spans: [number, number][];
}

/** A worker driven by request/reply messages; any worker error rejects the pending reply. */
class SessionWorker {
  readonly #worker = new Worker(new URL("./_session_worker.ts", import.meta.url), {
    type: "module",
  });
  #pending: PromiseWithResolvers<unknown> | null = null;

  constructor(readonly seed: number) {
    this.#worker.onmessage = (e: MessageEvent) => this.#pending?.resolve(e.data);
    this.#worker.onerror = (e) => {
      e.preventDefault();
      this.#pending?.reject(new Error(`worker ${seed} failed: ${e.message}`));
    };
  }

  request<T>(kind: "init" | "go" | "close"): Promise<T> {
    this.#pending = Promise.withResolvers<unknown>();
    this.#worker.postMessage({ kind, seed: this.seed });
    return this.#pending.promise as Promise<T>;
  }

  terminate(): void {
    this.#worker.terminate();
  }
}

Deno.test("two Workers, each with its own session, run at the same time", async () => {
  const workers = [new SessionWorker(1), new SessionWorker(2)];
  try {
    // Both load first, so neither races ahead while the other is still starting.
    await Promise.all(workers.map((w) => w.request("init")));
    const [a, b] = await Promise.all(workers.map((w) => w.request<Done>("go")));
    for (const r of [a!, b!]) {
      const want = AFFINE.expected(r.x, 2).y;
      r.y.forEach((v, k) => assert.ok(Math.abs(v - want[k]!) <= 1e-6, `y[${k}]`));
    }
    assert.notDeepEqual(a!.x, b!.x);
    const overlaps = a!.spans.some(([s1, e1]) => b!.spans.some(([s2, e2]) => s1 < e2 && s2 < e1));
    assert.ok(overlaps, "the two workers' runs never overlapped in time");
    await Promise.all(workers.map((w) => w.request("close")));
  } finally {
    for (const w of workers) w.terminate();
  }
});
