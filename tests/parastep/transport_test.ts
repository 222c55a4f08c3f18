import {
  checkTag,
  ExchangeError,
  Inbox,
  InMemoryHub,
  type MessageTag,
  payloadBytes,
  type StepMessage,
} from "../../src/parastep/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";

type Msg = StepMessage<Float64Array>;

const EPS_TAG = { gen: "g", step: 4, kind: "eps", from: 1 } as const;

function eps(tag: MessageTag & { kind: "eps" }, values: number[] = [1, 2]): Msg {
  return { ...tag, depth: 3, eps: Float64Array.from(values) };
}

Deno.test("Inbox.receive() resolves with a queued message whose tag matches", async () => {
  const inbox = new Inbox<Float64Array>();
  inbox.deliver(eps(EPS_TAG, [5, 6]));
  const message = await inbox.receive(EPS_TAG);
  assert(message.kind === "eps");
  assertEquals(Array.from(message.eps), [5, 6]);
  assertEquals(message.depth, 3);
  assertEquals(inbox.undelivered(), []);
});

Deno.test("Inbox.receive() waits for a later message and keeps each sender's order", async () => {
  const inbox = new Inbox<Float64Array>();
  const pending = inbox.receive(EPS_TAG);
  // Another sender's message neither settles nor disturbs the wait.
  inbox.deliver(eps({ ...EPS_TAG, step: 5, from: 2 }));
  inbox.deliver(eps(EPS_TAG));
  inbox.deliver(eps({ ...EPS_TAG, step: 7 }));
  assertEquals((await pending).step, 4);
  assertEquals((await inbox.receive({ ...EPS_TAG, step: 7 })).step, 7);
  assertEquals((await inbox.receive({ ...EPS_TAG, step: 5, from: 2 })).from, 2);
});

Deno.test("Inbox.receive() throws ExchangeError with both tags on any tag difference", async () => {
  const wrong: [string, MessageTag & { kind: "eps" }][] = [
    ["gen", { ...EPS_TAG, gen: "other" }],
    ["step", { ...EPS_TAG, step: 5 }],
  ];
  for (const [field, tag] of wrong) {
    // Queued before the receive, and arriving while it waits: both paths check.
    for (const queuedFirst of [true, false]) {
      const inbox = new Inbox<Float64Array>();
      if (queuedFirst) inbox.deliver(eps(tag));
      const pending = inbox.receive(EPS_TAG);
      if (!queuedFirst) inbox.deliver(eps(tag));
      const error = await assertRejects(pending, ExchangeError, "expected {gen=g, step=4");
      assertEquals(error.expected, EPS_TAG, field);
      assertEquals(error.received, tag, field);
    }
  }
  // A latents message where eps was wanted, from the right sender.
  const inbox = new Inbox<Float64Array>();
  inbox.deliver({ ...EPS_TAG, kind: "latents", depth: 1, x: new Float64Array(2) });
  const error = await assertRejects(inbox.receive(EPS_TAG), ExchangeError);
  assertEquals(error.received?.kind, "latents");
  assertEquals(
    error.message,
    "Cannot exchange step data as the message does not match the expected tag: " +
      "expected {gen=g, step=4, kind=eps, from=1}, received {gen=g, step=4, kind=latents, from=1}",
  );
});

Deno.test("checkTag() accepts only the exact tag", () => {
  checkTag(EPS_TAG, { ...EPS_TAG });
  assertThrows(() => checkTag(EPS_TAG, { ...EPS_TAG, from: 2 }), ExchangeError, "from=2");
  assertThrows(() => checkTag(EPS_TAG, { ...EPS_TAG, kind: "warmup" }), ExchangeError);
});

Deno.test("aborting a waiting receive rejects it promptly with the signal's reason", async () => {
  const inbox = new Inbox<Float64Array>();
  const controller = new AbortController();
  const started = performance.now();
  const pending = inbox.receive(EPS_TAG, controller.signal);
  const timer = setTimeout(() => controller.abort(new Error("peer failed")), 5);
  const error = await assertRejects(pending, Error, "peer failed");
  clearTimeout(timer);
  assert(!(error instanceof ExchangeError));
  assert(performance.now() - started < 1000, "abort took too long");
  // The inbox is free again: a later receive works.
  inbox.deliver(eps(EPS_TAG));
  assertEquals((await inbox.receive(EPS_TAG)).step, 4);
  // An already aborted signal rejects at once, even with a message queued.
  inbox.deliver(eps(EPS_TAG));
  await assertRejects(
    inbox.receive(EPS_TAG, AbortSignal.abort(new RangeError("gone"))),
    RangeError,
  );
});

Deno.test("Inbox.fail() rejects the pending receive and every later one", async () => {
  const inbox = new Inbox<Float64Array>();
  const pending = inbox.receive(EPS_TAG);
  inbox.fail(new Error("channel closed"));
  inbox.fail(new Error("second reason is ignored"));
  await assertRejects(pending, Error, "channel closed");
  inbox.deliver(eps(EPS_TAG));
  await assertRejects(inbox.receive(EPS_TAG), Error, "channel closed");
});

Deno.test("Inbox.receive() refuses a second receive while one is pending", async () => {
  const inbox = new Inbox<Float64Array>();
  const first = inbox.receive(EPS_TAG);
  await assertRejects(inbox.receive({ ...EPS_TAG, from: 2 }), Error, "is still pending");
  inbox.deliver(eps(EPS_TAG));
  assertEquals((await first).from, 1);
});

Deno.test("Inbox counters count received messages, bytes and waiting time", async () => {
  const inbox = new Inbox<Float64Array>();
  const pending = inbox.receive(EPS_TAG);
  await new Promise((resolve) => setTimeout(resolve, 20));
  inbox.deliver(eps(EPS_TAG, [1, 2, 3]));
  await pending;
  const counters = inbox.counters();
  assertEquals([counters.messagesReceived, counters.bytesReceived], [1, 24]);
  assert(counters.waitMs >= 15, `waitMs ${counters.waitMs} should include the 20 ms wait`);
});

Deno.test("payloadBytes() counts typed arrays by bytes and numbers as 8", () => {
  assertEquals(payloadBytes(1.5), 8);
  assertEquals(payloadBytes(new Float32Array(10)), 40);
  assertEquals(payloadBytes(new Float64Array(3)), 24);
  assertEquals(payloadBytes([1, 2]), 16);
  assertEquals(payloadBytes({ data: new Uint16Array(4), dims: [2, 2] }), 8 + 16);
  assertEquals(payloadBytes("text"), 0);
  assertEquals(payloadBytes(null), 0);
});

Deno.test("InMemoryHub routes sends and broadcasts, logs them in order and copies payloads", async () => {
  const hub = new InMemoryHub<Float64Array>(3);
  const x = Float64Array.from([1, 2, 3]);
  await hub.endpoint(0).broadcast({
    gen: "g",
    step: 0,
    kind: "warmup",
    from: 0,
    depth: 1,
    x,
    cache: new Float64Array(3),
  });
  await hub.endpoint(2).send(0, eps({ ...EPS_TAG, from: 2 }));
  assertEquals(
    hub.log().map((m) => [m.kind, m.from, m.to, m.bytes, m.depth]),
    [["warmup", 0, "all", 48, 1], ["eps", 2, 0, 16, 3]],
  );
  const warmTag = { gen: "g", step: 0, kind: "warmup", from: 0 } as const;
  const got = await hub.endpoint(1).receive(warmTag);
  assert(got.kind === "warmup");
  got.x[0] = 99; // BroadcastChannel would hand over a clone; so does the hub.
  assertEquals(x[0], 1);
  assertEquals(hub.undelivered().map((u) => [u.rank, u.tag.kind]), [[0, "eps"], [2, "warmup"]]);
  assertEquals(hub.endpoint(0).counters().messagesSent, 1);
  assertEquals(hub.endpoint(1).counters().bytesReceived, 48);
});

Deno.test("InMemoryHub rejects sends to itself, to a missing rank, or under another rank's name", () => {
  const hub = new InMemoryHub<number>(2);
  const message = { gen: "g", step: 0, kind: "eps", from: 1, depth: 0, eps: 1 } as const;
  assertThrows(() => hub.endpoint(1).send(1, message), RangeError, "'to' must be another rank");
  assertThrows(() => hub.endpoint(1).send(2, message), RangeError, "current value is 2");
  assertThrows(() => hub.endpoint(0).send(1, message), RangeError, "'from' is 1");
  assertThrows(() => hub.endpoint(2), RangeError, "'rank' must be an integer in 0..1");
  assertThrows(() => new InMemoryHub(0), RangeError, "'size' must be an integer >= 1");
  assertEquals(hub.log(), []);
});

Deno.test("InMemoryHub.fail() ends every rank's pending receive", async () => {
  const hub = new InMemoryHub<number>(3);
  const waits = [0, 1, 2].map((r) =>
    hub.endpoint(r).receive({ gen: "g", step: 0, kind: "latents", from: (r + 1) % 3 })
  );
  hub.fail(new Error("coordinator stopped"));
  for (const wait of waits) await assertRejects(wait, Error, "coordinator stopped");
});
