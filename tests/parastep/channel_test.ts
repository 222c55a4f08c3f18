import assert from "node:assert/strict";
import {
  assignDevices,
  channelName,
  ChannelTransport,
  ExchangeError,
  runInProcess,
  runRank,
} from "../../src/parastep/mod.ts";
import { jsToyCond, jsToyX0, openSampler } from "./workers_js_sampler.ts";
import { firstBitDifference } from "./workers_expect.ts";

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function transports(gen: string, devices: number, steps = 0): ChannelTransport[] {
  const list: ChannelTransport[] = [];
  for (let r = 0; r < devices; r++) list.push(new ChannelTransport(gen, r, devices, { steps }));
  return list;
}

Deno.test("channelName() names the broadcast channel and each sender-receiver pair", () => {
  assert.equal(channelName("g1"), "parastep:g1");
  assert.equal(channelName("g1", { from: 3, to: 0 }), "parastep:g1/3->0");
  assert.equal(channelName("g1", undefined, "x"), "x:g1");
});

Deno.test("ChannelTransport carries a whole ParaStep run bit for bit as InMemoryHub does, with its counters", async () => {
  // Three ranks in this thread: BroadcastChannel delivers between distinct objects of one name.
  const plan = { steps: 12, warmup: 2, devices: 3 };
  const n = 32;
  const sampler = openSampler(
    { steps: plan.steps, cond: jsToyCond(n), guidance: 3.5 },
    assignDevices(1)[0]!,
  );
  const x0 = jsToyX0(n);
  const reference = await runInProcess(plan, () => sampler, x0);
  const gen = crypto.randomUUID();
  const ends = transports(gen, plan.devices, plan.steps);
  try {
    const results = await Promise.all(
      ends.map((transport, rank) => runRank(rank, plan, sampler, x0, transport, { gen })),
    );
    const output = results[0]!.output!;
    assert.equal(firstBitDifference(output, reference.output), -1);
    results.forEach((result, rank) => {
      const want = reference.counters[rank]!;
      const got = ends[rank]!.counters();
      assert.equal(got.messagesSent, want.messagesSent, `rank ${rank} messages sent`);
      assert.equal(got.bytesSent, want.bytesSent, `rank ${rank} bytes sent`);
      assert.equal(got.messagesReceived, want.messagesReceived, `rank ${rank} messages received`);
      assert.equal(got.bytesReceived, want.bytesReceived, `rank ${rank} bytes received`);
      // Eps go to rank 0 on pair channels: rank 2 never even sees rank 1's.
      assert.equal(got.strayMessages, 0, `rank ${rank} stray messages`);
      assert.deepEqual(ends[rank]!.undelivered(), []);
      assert.equal(result.modelCalls, reference.modelCalls[rank]);
      assert.equal(ends[rank]!.waitMsByStep().length, plan.steps);
    });
  } finally {
    for (const end of ends) end.close();
    await sampler[Symbol.asyncDispose]();
  }
});

Deno.test("ChannelTransport drops and counts another generation's and malformed messages", async () => {
  const [zero, one] = transports("mine", 2);
  const intruder = new BroadcastChannel(channelName("mine", { from: 1, to: 0 }));
  try {
    const tag = { gen: "mine", step: 4, kind: "eps", from: 1 } as const;
    const pending = zero!.receive(tag);
    intruder.postMessage({ ...tag, gen: "theirs", depth: 9, eps: new Float32Array(2) });
    intruder.postMessage({ ...tag, depth: 9, eps: [1, 2] }); // not a Float32Array
    intruder.postMessage({ ...tag, from: 0, depth: 9, eps: new Float32Array(2) }); // claims rank 0
    intruder.postMessage(null);
    await delay(20);
    one!.send(0, { ...tag, depth: 3, eps: new Float32Array([5, 6]) });
    const message = await pending;
    assert.equal(message.kind, "eps");
    assert.deepEqual(message.kind === "eps" ? [...message.eps] : [], [5, 6]);
    assert.equal(zero!.counters().strayMessages, 4);
    assert.equal(zero!.counters().messagesReceived, 1);
  } finally {
    intruder.close();
    zero!.close();
    one!.close();
  }
});

Deno.test("ChannelTransport rejects a receive with ExchangeError when this generation's next message has another step", async () => {
  const [zero, one] = transports("g", 2);
  try {
    const pending = zero!.receive({ gen: "g", step: 5, kind: "eps", from: 1 });
    one!.send(0, { gen: "g", step: 7, kind: "eps", from: 1, depth: 1, eps: new Float32Array(2) });
    const error = await pending.then(() => null, (e: unknown) => e);
    assert.ok(error instanceof ExchangeError);
    assert.deepEqual(error.received, { gen: "g", step: 7, kind: "eps", from: 1 });
  } finally {
    zero!.close();
    one!.close();
  }
});

Deno.test("ChannelTransport.fail() rejects the pending receive and every later one", async () => {
  const [zero, one] = transports("g", 2);
  try {
    const reason = new Error("rank 1 failed");
    const pending = zero!.receive({ gen: "g", step: 3, kind: "eps", from: 1 });
    zero!.fail(reason);
    await assert.rejects(pending, (e: unknown) => e === reason);
    await assert.rejects(
      zero!.receive({ gen: "g", step: 4, kind: "eps", from: 1 }),
      (e: unknown) => e === reason,
    );
  } finally {
    zero!.close();
    one!.close();
  }
});

Deno.test("ChannelTransport.close() fails pending receives, is idempotent, and refuses later sends", async () => {
  const [zero, one] = transports("g", 2);
  one!.close();
  const pending = zero!.receive({ gen: "g", step: 3, kind: "eps", from: 1 });
  zero!.close();
  zero!.close();
  assert.equal(zero!.closed, true);
  await assert.rejects(pending, ExchangeError);
  assert.throws(
    () =>
      zero!.broadcast({
        gen: "g",
        step: 3,
        kind: "latents",
        from: 0,
        depth: 1,
        x: new Float32Array(1),
      }),
    ExchangeError,
  );
  assert.throws(
    () =>
      one!.send(0, { gen: "g", step: 3, kind: "eps", from: 1, depth: 1, eps: new Float32Array(1) }),
    ExchangeError,
  );
});

Deno.test("ChannelTransport sends a payload that views part of a buffer as its own bytes", async () => {
  const [zero, one] = transports("g", 2);
  try {
    const big = new Float32Array(1024).map((_, j) => j);
    const tag = { gen: "g", step: 0, kind: "eps", from: 1 } as const;
    one!.send(0, { ...tag, depth: 1, eps: big.subarray(2, 6) });
    const message = await zero!.receive(tag);
    assert.ok(message.kind === "eps");
    assert.deepEqual([...message.eps], [2, 3, 4, 5]);
    assert.equal(message.eps.buffer.byteLength, 16);
    assert.equal(one!.counters().bytesSent, 16);
  } finally {
    zero!.close();
    one!.close();
  }
});

Deno.test("ChannelTransport counts the time a receive waits and a send takes at their step, and each message's transit", async () => {
  const [zero, one] = transports("g", 2, 4);
  try {
    const tag = { gen: "g", step: 2, kind: "eps", from: 1 } as const;
    const pending = zero!.receive(tag);
    await delay(20);
    one!.send(0, { ...tag, depth: 1, eps: new Float32Array(2) });
    await pending;
    const waits = zero!.waitMsByStep();
    assert.equal(waits.length, 4);
    assert.ok(waits[2]! > 0);
    assert.equal(waits[0], 0);
    assert.equal(zero!.counters().waitMs > 0, true);
    // The sender's time is booked at the message's step, the transit on the receiver by kind.
    const sends = one!.sendMsByStep();
    assert.equal(sends.length, 4);
    assert.ok(sends[2]! > 0);
    assert.deepEqual([sends[0], sends[1], sends[3]], [0, 0, 0]);
    assert.equal(one!.counters().sendMs, sends[2]);
    const { transitMs } = zero!.counters();
    assert.equal(transitMs.eps.length, 1);
    assert.ok(transitMs.eps[0]! >= 0 && transitMs.eps[0]! < 1000, String(transitMs.eps[0]));
    assert.deepEqual([transitMs.latents, transitMs.warmup], [[], []]);
  } finally {
    zero!.close();
    one!.close();
  }
});

Deno.test("ChannelTransport refuses bad ranks, sends to itself and messages under another name", () => {
  assert.throws(() => new ChannelTransport("g", 2, 2), RangeError);
  assert.throws(() => new ChannelTransport("g", 0, 0), RangeError);
  assert.throws(() => new ChannelTransport("g", 0, 2, { steps: -1 }), RangeError);
  using one = new ChannelTransport("g", 1, 2);
  const eps = {
    gen: "g",
    step: 0,
    kind: "eps",
    from: 1,
    depth: 1,
    eps: new Float32Array(1),
  } as const;
  assert.throws(() => one.send(1, eps), /'to' must be another rank/);
  assert.throws(() => one.send(2, eps), /'to' must be another rank/);
  assert.throws(() => one.send(0, { ...eps, from: 0 }), /'from' is 0/);
  assert.throws(() => one.send(0, { ...eps, gen: "h" }), /'gen' is h/);
});
