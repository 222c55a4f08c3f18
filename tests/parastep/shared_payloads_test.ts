import assert from "node:assert/strict";
import {
  assignDevices,
  ChannelTransport,
  ExchangeError,
  runInProcess,
  runRank,
} from "../../src/parastep/mod.ts";
import { createArenas, SharedPayloads, SLOTS } from "../../src/parastep/shared_payloads.ts";
import { jsToyCond, jsToyX0, openSampler } from "./workers_js_sampler.ts";
import { firstBitDifference } from "./workers_expect.ts";

Deno.test("shared payloads come back exactly as written, split by their lengths", () => {
  const payloads = new SharedPayloads(createArenas(2, 10));
  assert.equal(payloads.capacity, 10);
  const a = new Float32Array([1, 2, 3]);
  const b = new Float32Array([-0, NaN, Infinity, 1e-40]);
  const ref = payloads.write(1, 0, [a, b])!;
  assert.deepEqual(ref, { seq: 0, lengths: [3, 4] });
  const [ra, rb] = payloads.read(1, ref);
  assert.deepEqual(ra, a);
  assert.equal(firstBitDifference(rb!, b), -1); // -0, NaN and denormals survive bit for bit
  assert.equal(payloads.write(1, 1, [new Float32Array(11)]), null, "too big: sent inline instead");
});

Deno.test("a slot reused before it was read is refused, not read torn", () => {
  const payloads = new SharedPayloads(createArenas(1, 4));
  const first = payloads.write(0, 0, [new Float32Array([1])])!;
  payloads.write(0, SLOTS, [new Float32Array([2, 2])]); // the same slot, two messages later
  assert.throws(() => payloads.read(0, first), /holds message 2 of 2 floats, not message 0 of 1/);
});

Deno.test("ChannelTransport with shared arenas carries a run bit for bit, tags on the channel", async () => {
  const plan = { steps: 12, warmup: 2, devices: 3 };
  const n = 32;
  const sampler = openSampler(
    { steps: plan.steps, cond: jsToyCond(n), guidance: 3.5 },
    assignDevices(1)[0]!,
  );
  const x0 = jsToyX0(n);
  const reference = await runInProcess(plan, () => sampler, x0);
  const gen = crypto.randomUUID();
  // Room for the largest message, the warm-up's latents + guided eps (what runWorkers allocates):
  // every message goes through the arenas.
  const arenas = createArenas(plan.devices, 2 * n);
  const ends = [0, 1, 2].map((r) =>
    new ChannelTransport(gen, r, plan.devices, { steps: plan.steps, arenas })
  );
  // Watch the wire: no payload array may travel on the channel itself.
  const spy = new BroadcastChannel(`parastep:${gen}`);
  const onWire: unknown[] = [];
  spy.onmessage = (e) => onWire.push(e.data);
  try {
    const results = await Promise.all(
      ends.map((transport, rank) => runRank(rank, plan, sampler, x0, transport, { gen })),
    );
    assert.equal(firstBitDifference(results[0]!.output!, reference.output), -1);
    ends.forEach((end, rank) => {
      assert.equal(end.counters().bytesSent, reference.counters[rank]!.bytesSent);
      assert.equal(end.counters().strayMessages, 0);
    });
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(onWire.length > 0);
    for (const m of onWire as Record<string, unknown>[]) {
      assert.equal(m.x, undefined);
      assert.equal(m.cache, undefined);
      assert.ok(typeof m.shared === "object");
    }
  } finally {
    spy.close();
    for (const end of ends) end.close();
    await sampler[Symbol.asyncDispose]();
  }
});

Deno.test("payloads too big for the arenas go inline; a bad reference fails the receive", async () => {
  const gen = crypto.randomUUID();
  const arenas = createArenas(2, 2);
  const zero = new ChannelTransport(gen, 0, 2, { arenas });
  const one = new ChannelTransport(gen, 1, 2, { arenas });
  try {
    const tag = { gen, step: 4, kind: "eps", from: 1 } as const;
    const big = new Float32Array([1, 2, 3]);
    one.send(0, { ...tag, depth: 1, eps: big });
    const got = await zero.receive(tag);
    assert.deepEqual(got.kind === "eps" ? got.eps : null, big);
    // A reference to a message the sender never wrote.
    const intruder = new BroadcastChannel(`parastep:${gen}/1->0`);
    const pending = zero.receive({ ...tag, step: 5 });
    intruder.postMessage({ ...tag, step: 5, depth: 2, shared: { seq: 7, lengths: [2] } });
    await assert.rejects(pending, ExchangeError);
    intruder.close();
  } finally {
    zero.close();
    one.close();
  }
});
