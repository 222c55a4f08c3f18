import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  checkPlan,
  criticalPathCalls,
  idealSpeedup,
  type ParaStepPlan,
  type StepRole,
  stepRole,
} from "../../src/parastep/mod.ts";
import { literalParaStep } from "./_reference.ts";
import { SCALAR_X0, scalarToy, syncModel } from "./_toy.ts";

/** One letter per cell: W warm-up, C compute, Rp receive from p, P predict, U reuse, D discarded reuse. */
function code(cell: StepRole): string {
  const role = cell.role;
  switch (role.kind) {
    case "warmup":
      return "W";
    case "compute":
      return "C";
    case "receive":
      return `R${role.from}`;
    case "predict":
      return "P";
    case "reuse":
      return role.discarded ? "D" : "U";
  }
}

function table(plan: ParaStepPlan): string[] {
  const rows: string[] = [];
  for (let i = 0; i < plan.steps; i++) {
    const cells: string[] = [];
    for (let r = 0; r < plan.devices; r++) cells.push(code(stepRole(plan, i, r)));
    const broadcast = stepRole(plan, i, 0).broadcast;
    rows.push(cells.join(" ") + (broadcast === null ? "" : ` | ${broadcast}`));
  }
  return rows;
}

Deno.test("stepRole() gives the hand-written table for T = 10, W = 2, N = 3", () => {
  // T - W = 8: rounds at steps 2-4 and 5-7, then a partial round of m = 2 at steps 8-9.
  assertEquals(table({ steps: 10, warmup: 2, devices: 3 }), [
    "W W W",
    "W W W | warmup",
    "C U U",
    "R1 P U",
    "R2 D P | latents",
    "C U U",
    "R1 P U",
    "R2 D P | latents",
    "C U D",
    "R1 P D",
  ]);
});

Deno.test("stepRole() reports round, position, round size and round ends", () => {
  const plan = { steps: 10, warmup: 2, devices: 3 };
  const warm = stepRole(plan, 1, 2);
  assertEquals(warm.round, null);
  assertEquals(warm.pos, null);
  assertEquals(warm.roundSize, null);
  assertEquals(warm.endsRound, false);
  const end = stepRole(plan, 7, 1);
  assertEquals([end.round, end.pos, end.roundSize, end.endsRound], [1, 2, 3, true]);
  const partial = stepRole(plan, 9, 0);
  assertEquals([partial.round, partial.pos, partial.roundSize, partial.endsRound], [
    2,
    1,
    2,
    false,
  ]);
});

Deno.test("stepRole() with N = 1 is a sequential sampler: compute only, no broadcast", () => {
  assertEquals(table({ steps: 4, warmup: 2, devices: 1 }), ["W", "W", "C", "C"]);
  // A round of one step ends at every step, but there is nobody to broadcast to.
  assertEquals(stepRole({ steps: 4, warmup: 2, devices: 1 }, 3, 0).endsRound, true);
});

Deno.test("stepRole() skips the warm-up broadcast when nothing follows the warm-up", () => {
  assertEquals(table({ steps: 3, warmup: 3, devices: 2 }), ["W W", "W W", "W W"]);
});

Deno.test("stepRole() agrees with a literal simulation for all T <= 30, W <= T, N <= 6", () => {
  for (let T = 1; T <= 30; T++) {
    const toy = scalarToy(T);
    const s = { model: syncModel(toy), guide: toy.guide, step: toy.step };
    for (let W = 1; W <= T; W++) {
      for (let N = 1; N <= 6; N++) {
        const plan = { steps: T, warmup: W, devices: N };
        const ref = literalParaStep(T, W, N, s, SCALAR_X0);
        const messageAfter = new Map(ref.messages.map((m) => [`${m.kind}@${m.step}`, m]));
        for (let i = 0; i < T; i++) {
          for (let r = 0; r < N; r++) {
            const cell = stepRole(plan, i, r);
            const where = `T=${T} W=${W} N=${N} i=${i} r=${r}`;
            const did = ref.did[i]?.[r];
            assertEquals(cell.role.kind, did, where);
            if (cell.role.kind === "receive") {
              assert(messageAfter.has(`eps@${i}`), where);
              assertEquals(messageAfter.get(`eps@${i}`)?.from, cell.role.from, where);
            }
            if (cell.role.kind === "reuse") {
              // Discarded exactly when the literal run never reads that x again.
              assertEquals(cell.role.discarded, !ref.used[i]?.[r], where);
            }
          }
          const broadcast = stepRole(plan, i, 0).broadcast;
          const expected = messageAfter.has(`warmup@${i}`)
            ? "warmup"
            : messageAfter.has(`latents@${i}`)
            ? "latents"
            : null;
          assertEquals(broadcast, expected, `T=${T} W=${W} N=${N} i=${i}`);
        }
      }
    }
  }
});

Deno.test("criticalPathCalls() is W + ceil((T - W) / N)", () => {
  assertEquals(criticalPathCalls({ steps: 200, warmup: 5, devices: 8 }), 30);
  assertEquals(criticalPathCalls({ steps: 10, warmup: 2, devices: 3 }), 5);
  assertEquals(criticalPathCalls({ steps: 10, warmup: 2, devices: 1 }), 10);
  assertEquals(criticalPathCalls({ steps: 4, warmup: 4, devices: 6 }), 4);
  assertEquals(criticalPathCalls({ steps: 7, warmup: 1, devices: 20 }), 2);
});

Deno.test("idealSpeedup() reproduces the figures in docs/parastep.md", () => {
  const round2 = (x: number) => Math.round(x * 100) / 100;
  const figures: [number, number, number[]][] = [
    [200, 5, [1.94, 3.70, 6.67]], // AudioLDM2-large
    [50, 5, [1.79, 2.94, 4.55]], // SVD
    [50, 13, [1.56, 2.17, 2.78]], // CogVideoX-2b
  ];
  for (const [T, W, speedups] of figures) {
    const got = [2, 4, 8].map((N) => round2(idealSpeedup({ steps: T, warmup: W, devices: N })));
    assertEquals(got, speedups, `T=${T} W=${W}`);
  }
  assertEquals(idealSpeedup({ steps: 30, warmup: 3, devices: 1 }), 1);
});

Deno.test("checkPlan() rejects each out-of-range field with a message naming it", () => {
  const bad: [ParaStepPlan, string][] = [
    [
      { steps: 10, warmup: 0, devices: 2 },
      "Cannot run ParaStep as 'warmup' must be an integer >= 1: current value is 0",
    ],
    [
      { steps: 10, warmup: 1.5, devices: 2 },
      "Cannot run ParaStep as 'warmup' must be an integer >= 1: current value is 1.5",
    ],
    [
      { steps: 10, warmup: 11, devices: 2 },
      "Cannot run ParaStep as 'warmup' must be <= 'steps' (10): current value is 11",
    ],
    [
      { steps: 0, warmup: 1, devices: 2 },
      "Cannot run ParaStep as 'steps' must be an integer >= 1: current value is 0",
    ],
    [
      { steps: NaN, warmup: 1, devices: 2 },
      "Cannot run ParaStep as 'steps' must be an integer >= 1: current value is NaN",
    ],
    [
      { steps: 10, warmup: 1, devices: 0 },
      "Cannot run ParaStep as 'devices' must be an integer >= 1: current value is 0",
    ],
    [
      { steps: 10, warmup: 1, devices: 2.5 },
      "Cannot run ParaStep as 'devices' must be an integer >= 1: current value is 2.5",
    ],
  ];
  for (const [plan, message] of bad) {
    assertEquals(assertThrows(() => checkPlan(plan), RangeError).message, message);
    assertThrows(() => criticalPathCalls(plan), RangeError);
    assertThrows(() => idealSpeedup(plan), RangeError);
  }
  checkPlan({ steps: 1, warmup: 1, devices: 1 });
});

Deno.test("stepRole() rejects a step or rank outside the plan", () => {
  const plan = { steps: 5, warmup: 1, devices: 2 };
  assertThrows(
    () => stepRole(plan, 5, 0),
    RangeError,
    "Cannot look up a ParaStep role as 'i' must be an integer in 0..4: current value is 5",
  );
  assertThrows(
    () => stepRole(plan, 0, 2),
    RangeError,
    "Cannot look up a ParaStep role as 'rank' must be an integer in 0..1: current value is 2",
  );
  assertThrows(() => stepRole(plan, -1, 0), RangeError);
});
