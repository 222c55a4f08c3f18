import {
  InMemoryHub,
  type LoggedMessage,
  runInProcess,
  runRank,
  type Sampler,
} from "../../src/parastep/mod.ts";
import { assert, assertEquals, assertNotEquals } from "./_assert.ts";
import { literalParaStep, type RefMessage, sequential } from "./_reference.ts";
import {
  assertSameBits,
  maxAbsDiff,
  SCALAR_X0,
  scalarToy,
  syncModel,
  vectorToy,
  vectorX0,
} from "./_toy.ts";

function reference<X, E>(sampler: Sampler<X, E>) {
  return { model: syncModel(sampler), guide: sampler.guide, step: sampler.step };
}

/** Per-rank calls the spec implies when rank 0 alone warms up. */
function expectedCalls(T: number, W: number, N: number): number[] {
  const full = Math.floor((T - W) / N);
  const m = (T - W) % N;
  return Array.from(
    { length: N },
    (_, r) => r === 0 ? W + full + (m > 0 ? 1 : 0) : full + (r < m ? 1 : 0),
  );
}

/**
 * The log split at broadcasts: eps within one round may be sent in any order, but never across a
 * broadcast (a rank cannot predict before it has the round's latents, and rank 0 cannot broadcast
 * before it has every eps of the round).
 */
function segments(messages: readonly { kind: string; step: number; from: number }[]): string[][] {
  const out: string[][] = [[]];
  for (const m of messages) {
    const key = `${m.kind}@${m.step}<-${m.from}`;
    if (m.kind === "eps") (out[out.length - 1] as string[]).push(key);
    else out.push([key], []);
  }
  return out.map((segment) => segment.sort());
}

function checkAgainstLiteral<X extends number | Float64Array, E>(
  T: number,
  W: number,
  N: number,
  sampler: Sampler<X, E>,
  x0: X,
  result: Awaited<ReturnType<typeof runInProcess<X, E>>>,
): void {
  const where = `T=${T} W=${W} N=${N}`;
  const ref = literalParaStep(T, W, N, reference(sampler), x0);
  assertSameBits(result.output, ref.output);
  // Rank 0 warms up alone; after warm-up every rank makes the calls the literal loop makes.
  const calls = ref.laterCalls.map((c, r) => r === 0 ? c + (ref.warmupCalls[0] as number) : c);
  assertEquals(result.modelCalls, calls, `${where} calls`);
  assertEquals(result.modelCalls, expectedCalls(T, W, N), `${where} closed-form calls`);
  assertEquals(result.criticalPathCalls, W + Math.ceil((T - W) / N), `${where} critical path`);
  assertEquals(result.depths[0], result.criticalPathCalls, `${where} rank 0 clock`);
  assertEquals(segments(result.messages), segments(ref.messages), `${where} messages`);
}

Deno.test("runInProcess() with N = 1 equals the sequential sampler bit for bit", async () => {
  for (const [T, W] of [[1, 1], [2, 1], [10, 1], [10, 3], [25, 25], [30, 7]] as const) {
    const toy = scalarToy(T);
    const scalar = await runInProcess({ steps: T, warmup: W, devices: 1 }, () => toy, SCALAR_X0);
    assertSameBits(scalar.output, sequential(T, reference(toy), SCALAR_X0));
    assertEquals(scalar.modelCalls, [T]);
    assertEquals(scalar.criticalPathCalls, T);
    assertEquals(scalar.messages, []);

    const vector = vectorToy(T);
    const x0 = vectorX0(5);
    const result = await runInProcess({ steps: T, warmup: W, devices: 1 }, () => vector, x0);
    assertSameBits(result.output, sequential(T, reference(vector), x0));
  }
});

Deno.test("runInProcess() matches the literal simulation for all T <= 30, W <= T, N <= 6 (scalar)", async () => {
  for (let T = 1; T <= 30; T++) {
    const toy = scalarToy(T);
    for (let W = 1; W <= T; W++) {
      for (let N = 1; N <= 6; N++) {
        const result = await runInProcess(
          { steps: T, warmup: W, devices: N },
          () => toy,
          SCALAR_X0,
        );
        checkAgainstLiteral(T, W, N, toy, SCALAR_X0, result);
      }
    }
  }
});

Deno.test("runInProcess() matches the literal simulation on Float64Array latents (T <= 14)", async () => {
  const x0 = vectorX0(4);
  for (let T = 1; T <= 14; T++) {
    const toy = vectorToy(T);
    for (let W = 1; W <= T; W++) {
      for (let N = 1; N <= 6; N++) {
        const result = await runInProcess({ steps: T, warmup: W, devices: N }, () => toy, x0);
        checkAgainstLiteral(T, W, N, toy, x0, result);
      }
    }
  }
});

/**
 * The messages of the all-gather exchange, from its description alone (rounds.ts, `Exchange`):
 * the warm-up broadcast, then every rank's eps broadcast in each round but the last, whose eps go
 * to rank 0 alone. As `kind@step<-from->to`, sorted.
 */
function allGatherMessages(T: number, W: number, N: number): string[] {
  const out: string[] = [];
  if (N > 1 && T > W) out.push(`warmup@${W - 1}<-0->all`);
  for (let s = W; s < T && N > 1; s += N) {
    const positions = Math.min(N, T - s);
    for (let r = 0; r < positions; r++) {
      if (s + N < T) out.push(`eps@${s + r}<-${r}->all`);
      else if (r > 0) out.push(`eps@${s + r}<-${r}->0`);
    }
  }
  return out.sort();
}

Deno.test("the all-gather exchange matches the literal simulation for all T <= 30, W <= T, N <= 6, with its own messages", async () => {
  for (let T = 1; T <= 30; T++) {
    const toy = scalarToy(T);
    for (let W = 1; W <= T; W++) {
      for (let N = 1; N <= 6; N++) {
        const where = `T=${T} W=${W} N=${N}`;
        const result = await runInProcess(
          { steps: T, warmup: W, devices: N },
          () => toy,
          SCALAR_X0,
          { exchange: "allgather" },
        );
        const ref = literalParaStep(T, W, N, reference(toy), SCALAR_X0);
        assertSameBits(result.output, ref.output);
        assertEquals(result.modelCalls, expectedCalls(T, W, N), `${where} calls`);
        assertEquals(result.criticalPathCalls, W + Math.ceil((T - W) / N), `${where} path`);
        assertEquals(result.depths[0], result.criticalPathCalls, `${where} rank 0 clock`);
        assertEquals(
          result.messages.map((m) => `${m.kind}@${m.step}<-${m.from}->${m.to}`).sort(),
          allGatherMessages(T, W, N),
          `${where} messages`,
        );
      }
    }
  }
});

Deno.test("the all-gather exchange on Float64Array latents equals the gather exchange bit for bit", async () => {
  const x0 = vectorX0(4);
  for (const [T, W, N] of [[17, 3, 4], [12, 2, 2], [13, 2, 2], [9, 9, 3], [20, 5, 3]] as const) {
    const toy = vectorToy(T);
    const plan = { steps: T, warmup: W, devices: N };
    const gather = await runInProcess(plan, () => toy, x0);
    const all = await runInProcess(plan, () => toy, x0, { exchange: "allgather" });
    assertSameBits(all.output, gather.output);
    assertSameBits(all.output, literalParaStep(T, W, N, reference(toy), x0).output);
    // N latents-sized messages per round either way, except that a last round which is full ends
    // with gather's latents broadcast, which all-gather does not send.
    const bytes = (r: typeof all) => r.counters.reduce((sum, c) => sum + c.bytesSent, 0);
    const lastFull = T > W && (T - W) % N === 0;
    assertEquals(bytes(all), bytes(gather) - (lastFull ? 4 * 8 : 0), `T=${T} W=${W} N=${N} bytes`);
  }
});

Deno.test("the toy is sensitive: ParaStep N > 1 differs from sequential and between N", async () => {
  // Guards the tests above: if stale eps made no difference, they could not catch a wrong schedule.
  const T = 20;
  const toy = scalarToy(T);
  const seq = sequential(T, reference(toy), SCALAR_X0);
  const outputs: number[] = [];
  for (const N of [2, 3, 4]) {
    const { output } = await runInProcess(
      { steps: T, warmup: 3, devices: N },
      () => toy,
      SCALAR_X0,
    );
    assert(maxAbsDiff(output, seq) > 1e-6, `N=${N} should differ from sequential`);
    assert(maxAbsDiff(output, seq) < 0.5, `N=${N} should stay near sequential`);
    outputs.push(output);
  }
  assertEquals(new Set(outputs).size, 3);
});

Deno.test("message log: one warmup broadcast, then N - 1 eps into rank 0 and one latents broadcast per full round", async () => {
  const [T, W, N] = [17, 3, 4]; // T - W = 14: 3 full rounds, then m = 2
  const toy = vectorToy(T);
  const result = await runInProcess({ steps: T, warmup: W, devices: N }, () => toy, vectorX0(4), {
    gen: "gen-42",
  });
  const { messages } = result;
  assertEquals(messages.filter((m) => m.kind === "warmup").length, 1);
  assertEquals(messages[0]?.kind, "warmup");
  assertEquals(messages.filter((m) => m.kind === "latents").length, 3);
  // 3 full rounds x 3 eps, plus position 1 of the partial round.
  assertEquals(messages.filter((m) => m.kind === "eps").length, 3 * (N - 1) + 1);
  for (const m of messages) {
    assertEquals(m.gen, "gen-42");
    if (m.kind === "eps") {
      assertEquals(m.to, 0);
      assertEquals(m.from, (m.step - W) % N, `eps at step ${m.step} comes from rank pos`);
      assertEquals(m.bytes, 4 * 8); // G(eps): [n] float64, half the CFG-doubled eps
    } else {
      assertEquals(m.to, "all");
      assertEquals(m.from, 0);
    }
  }
  const warm = messages[0] as LoggedMessage;
  assertEquals([warm.step, warm.depth, warm.bytes], [W - 1, W, 4 * 8 + 4 * 8]);
  const latents = messages.filter((m) => m.kind === "latents");
  assertEquals(latents.map((m) => m.step), [6, 10, 14]);
  // Each broadcast carries rank 0's clock: W plus the rounds done.
  assertEquals(latents.map((m) => m.depth), [W + 1, W + 2, W + 3]);
  assertEquals(latents.map((m) => m.bytes), [32, 32, 32]);
  assertEquals(segments(messages), [
    [],
    ["warmup@2<-0"],
    ["eps@4<-1", "eps@5<-2", "eps@6<-3"],
    ["latents@6<-0"],
    ["eps@10<-3", "eps@8<-1", "eps@9<-2"],
    ["latents@10<-0"],
    ["eps@12<-1", "eps@13<-2", "eps@14<-3"],
    ["latents@14<-0"],
    ["eps@16<-1"],
  ]);
});

Deno.test("counters: bytes and messages per rank agree with the log", async () => {
  const [T, W, N] = [11, 2, 3]; // T - W = 9: 3 full rounds
  const toy = scalarToy(T);
  const { counters, messages } = await runInProcess(
    { steps: T, warmup: W, devices: N },
    () => toy,
    SCALAR_X0,
  );
  // Rank 0 sends 1 warmup (x and guided cache, 8 + 8 bytes) and 3 latents (8); rank r sends 3
  // guided eps (8 each, not the 16 of an [uncond, cond] pair).
  assertEquals(counters.map((c) => [c.messagesSent, c.bytesSent]), [[4, 40], [3, 24], [3, 24]]);
  // Rank 0 receives 6 eps; every other rank receives the warmup and 3 latents broadcasts.
  assertEquals(counters.map((c) => [c.messagesReceived, c.bytesReceived]), [[6, 48], [4, 40], [
    4,
    40,
  ]]);
  assertEquals(messages.length, 4 + 3 + 3);
  for (const c of counters) assert(c.waitMs >= 0 && Number.isFinite(c.waitMs));
});

Deno.test("the last partial round uses positions 0..m-1 only and ends without a broadcast", async () => {
  for (const [T, W, N] of [[12, 3, 4], [13, 3, 4], [14, 3, 4], [6, 1, 4]] as const) {
    const m = (T - W) % N;
    const full = Math.floor((T - W) / N);
    const toy = scalarToy(T);
    const result = await runInProcess({ steps: T, warmup: W, devices: N }, () => toy, SCALAR_X0);
    const where = `T=${T} W=${W} N=${N}`;
    const lastRoundStart = W + full * N;
    const lastRound = result.messages.filter((msg) => msg.step >= lastRoundStart);
    assertEquals(
      lastRound.map((msg) => `${msg.kind}<-${msg.from}`).sort(),
      Array.from({ length: m - 1 }, (_, p) => `eps<-${p + 1}`),
      where,
    );
    // The last broadcast closes the last full round; none follows the partial one.
    const broadcasts = result.messages.filter((msg) => msg.kind === "latents");
    assertEquals(broadcasts.at(-1)?.step, lastRoundStart - 1, where);
    assertEquals(broadcasts.length, full, where);
    // Ranks m..N-1 sit the partial round out.
    for (let r = 1; r < N; r++) {
      assertEquals(result.modelCalls[r], full + (r < m ? 1 : 0), `${where} rank ${r}`);
    }
    assertSameBits(
      result.output,
      literalParaStep(T, W, N, reference(toy), SCALAR_X0).output,
    );
  }
});

Deno.test("T = W: rank 0 warms up alone, nothing is exchanged", async () => {
  const toy = scalarToy(5);
  const result = await runInProcess({ steps: 5, warmup: 5, devices: 3 }, () => toy, SCALAR_X0);
  assertSameBits(result.output, sequential(5, reference(toy), SCALAR_X0));
  assertEquals(result.modelCalls, [5, 0, 0]);
  assertEquals(result.criticalPathCalls, 5);
  assertEquals(result.messages, []);
});

Deno.test("one shared, serialised async session serves every rank with identical output", async () => {
  // Mimics the in-process engine: one ONNX session, runs queued one at a time, each resolving later.
  const T = 23;
  const toy = vectorToy(T);
  let active = 0;
  let maxActive = 0;
  let tail: Promise<unknown> = Promise.resolve();
  const shared: Sampler<Float64Array, Float64Array> = {
    model(x, i) {
      const run = tail.then(async () => {
        active += 1;
        maxActive = Math.max(maxActive, active);
        await new Promise((resolve) => setTimeout(resolve, 0));
        active -= 1;
        return toy.model(x, i) as Float64Array;
      });
      tail = run;
      return run;
    },
    guide: toy.guide,
    step: toy.step,
  };
  const x0 = vectorX0(3);
  for (const N of [2, 3, 5]) {
    const result = await runInProcess({ steps: T, warmup: 4, devices: N }, () => shared, x0);
    assertSameBits(result.output, literalParaStep(T, 4, N, reference(toy), x0).output);
    assertEquals(result.criticalPathCalls, 4 + Math.ceil((T - 4) / N));
  }
  assertEquals(maxActive, 1);
});

Deno.test("onStep() reports every step of rank 0 once, in order", async () => {
  const toy = scalarToy(12);
  const seen: number[] = [];
  await runInProcess({ steps: 12, warmup: 2, devices: 3 }, () => toy, SCALAR_X0, {
    onStep: (i) => seen.push(i),
  });
  assertEquals(seen, Array.from({ length: 12 }, (_, i) => i));
});

Deno.test("two generations run at once keep their state apart", async () => {
  const T = 19;
  const toy = scalarToy(T);
  const plans = [{ steps: T, warmup: 2, devices: 3 }, { steps: T, warmup: 5, devices: 2 }];
  const [a, b] = await Promise.all(plans.map((plan) => runInProcess(plan, () => toy, SCALAR_X0)));
  assert(a !== undefined && b !== undefined);
  assertSameBits(a.output, literalParaStep(T, 2, 3, reference(toy), SCALAR_X0).output);
  assertSameBits(b.output, literalParaStep(T, 5, 2, reference(toy), SCALAR_X0).output);
  assertNotEquals(a.messages[0]?.gen, b.messages[0]?.gen);
  // Running the first plan again gives the same bits: nothing leaks from one call to the next.
  const again = await runInProcess(plans[0] as (typeof plans)[0], () => toy, SCALAR_X0);
  assertSameBits(again.output, a.output);
});

Deno.test("runRank() over hand-wired endpoints: output on rank 0 only, Lamport clocks per rank", async () => {
  const [T, W, N] = [9, 2, 3]; // T - W = 7: 2 full rounds, then m = 1
  const toy = scalarToy(T);
  const hub = new InMemoryHub<number>(N);
  const plan = { steps: T, warmup: W, devices: N };
  const results = await Promise.all(
    [0, 1, 2].map((r) => runRank(r, plan, toy, SCALAR_X0, hub.endpoint(r), { gen: "g" })),
  );
  assertSameBits(
    results[0]?.output as number,
    literalParaStep(T, W, N, reference(toy), SCALAR_X0).output,
  );
  assertEquals(results.map((r) => r.output === undefined), [false, true, true]);
  assertEquals(results.map((r) => r.modelCalls), [5, 2, 2]);
  // Rank 0: W + 3 rounds. Ranks 1, 2 last heard the broadcast after round 2 (clock W + 2).
  assertEquals(results.map((r) => r.depth), [5, 4, 4]);
  assertEquals(hub.undelivered(), []);
  const expected: RefMessage[] = literalParaStep(T, W, N, reference(toy), SCALAR_X0).messages;
  assertEquals(segments(hub.log()), segments(expected));
});

Deno.test("runRank() on rank 0 advances its clock to the depth carried by a received eps", async () => {
  // A peer whose eps sits behind a longer chain (say it ran 3 extra calls first) must lengthen
  // the measured critical path: the count is measured from messages, not from the formula.
  const [T, W, N] = [6, 2, 2];
  const toy = scalarToy(T);
  const hub = new InMemoryHub<number>(N);
  const rank0 = runRank(0, { steps: T, warmup: W, devices: N }, toy, SCALAR_X0, hub.endpoint(0), {
    gen: "g",
  });
  const peer = hub.endpoint(1);
  let x = 0;
  for (const step of [1, 3]) {
    const tag = { gen: "g", step, kind: step === 1 ? "warmup" : "latents", from: 0 } as const;
    const got = await peer.receive(tag);
    assert(got.kind !== "eps");
    x = got.x;
    const eps = toy.guide(toy.model(x, step + 2) as readonly [number, number]);
    await peer.send(0, {
      gen: "g",
      step: step + 2,
      kind: "eps",
      from: 1,
      depth: got.depth + 4,
      eps,
    });
  }
  const result = await rank0;
  // Warm-up ends at 2. Round 0: rank 0 computes (3), eps carries 2 + 4 = 6 -> 6, broadcast at 6.
  // Round 1: rank 0 computes (7), eps carries 6 + 4 = 10 -> 10.
  assertEquals(result.depth, 10);
  assertEquals(result.modelCalls, 4);
});

Deno.test("runRank() on rank r > 0 advances its clock to the depth carried by a broadcast", async () => {
  const [T, W, N] = [6, 2, 2];
  const toy = scalarToy(T);
  const hub = new InMemoryHub<number>(N);
  const rank1 = runRank(1, { steps: T, warmup: W, devices: N }, toy, SCALAR_X0, hub.endpoint(1), {
    gen: "g",
  });
  const root = hub.endpoint(0);
  await root.broadcast({
    gen: "g",
    step: 1,
    kind: "warmup",
    from: 0,
    depth: 2,
    x: 0.5,
    cache: 0.75,
  });
  const first = await root.receive({ gen: "g", step: 3, kind: "eps", from: 1 });
  assertEquals(first.depth, 3);
  // Say rank 0 had a long chain behind this round's latents.
  await root.broadcast({ gen: "g", step: 3, kind: "latents", from: 0, depth: 20, x: 0.25 });
  const second = await root.receive({ gen: "g", step: 5, kind: "eps", from: 1 });
  assertEquals(second.depth, 21);
  // The last round is full (T - W = 4), so it too ends with a broadcast.
  await root.broadcast({ gen: "g", step: 5, kind: "latents", from: 0, depth: 21, x: 0.125 });
  const result = await rank1;
  assertEquals([result.depth, result.modelCalls, result.output], [21, 2, undefined]);
});

Deno.test("runInProcessWithLosses: no loss is runInProcess; a loss off a round start is refused", async () => {
  const { runInProcessWithLosses, runInProcess } = await import("../../src/parastep/rounds.ts");
  const sampler = {
    model: (x: number, i: number) => Math.sin(x + i),
    guide: (e: number) => 1.5 * e,
    step: (e: number, _i: number, x: number) => x - 0.05 * e,
  };
  const plan = { steps: 20, warmup: 2, devices: 3 };
  const plain = await runInProcess(plan, () => sampler, 1);
  const none = await runInProcessWithLosses(plan, () => sampler, 1, []);
  if (none.output !== plain.output) throw new Error("no loss must equal runInProcess");
  const lost = await runInProcessWithLosses(plan, () => sampler, 1, [{ step: 8, devices: 2 }]);
  // The same as running N = 2 from x_8 with the freshest guided eps as the cache: by hand.
  let x = 1;
  let guided = 0;
  const cut = await runInProcess({ steps: 8, warmup: 2, devices: 3 }, () => ({
    ...sampler,
    step: (e: number, i: number, x: number) => {
      if (i === 7) guided = e;
      return sampler.step(e, i, x);
    },
  }), 1);
  x = cut.output;
  const rest = await runInProcess({ steps: 20, warmup: 8, devices: 2 }, () => sampler, 1, {
    resume: { x, cache: guided },
  });
  if (lost.output !== rest.output) throw new Error("loss replay differs from the two epochs");
  if (lost.output === plain.output) throw new Error("a loss must change the trajectory");
  let refused = false;
  try {
    await runInProcessWithLosses(plan, () => sampler, 1, [{ step: 9, devices: 2 }]);
  } catch (error) {
    refused = error instanceof RangeError && /not a round start/.test(error.message);
  }
  if (!refused) throw new Error("a loss at step 9 (not a round start) must be refused");
});
