/**
 * What a ParaStep generation must cost, derived from docs/parastep.md alone (not from rounds.ts):
 *
 * - `F = floor((T - W) / N)` full rounds, then a last partial round of `m = (T - W) mod N`
 *   positions (`0..m-1`), without the final broadcast.
 * - Warm-up: rank 0 makes the `W` calls, then broadcasts `x_W` and the last eps once (when
 *   `N > 1` and `T > W`): the "warm-up on rank 0 alone followed by one broadcast of x and cache"
 *   the doc allows.
 * - Each round: rank 0 calls the model at position 0; rank `r > 0` at position `r` (when the round
 *   has it) and sends that eps to rank 0; a full round ends with rank 0 broadcasting `x`.
 * - Every eps travels guided, `G(eps)`, so it is the size of the latents (README, "Where we
 *   differ").
 *
 * @module
 */

import type { ParaStepPlan } from "../../src/parastep/mod.ts";

/** Per-rank expectations. */
export interface RankExpectation {
  modelCalls: number;
  messagesSent: number;
  bytesSent: number;
  messagesReceived: number;
  bytesReceived: number;
}

/** Expectations for one generation. */
export interface Expectation {
  ranks: RankExpectation[];
  criticalPathCalls: number;
  messages: number;
  bytes: number;
}

/** Derive the expectations of `plan` with latents of `xLength` floats (see the module doc). */
export function expectedCosts(plan: ParaStepPlan, xLength: number): Expectation {
  const { steps: T, warmup: W, devices: N } = plan;
  const F = Math.floor((T - W) / N);
  const m = (T - W) % N;
  const xBytes = 4 * xLength; // float32
  const epsBytes = xBytes; // guided
  const warmupBroadcasts = N > 1 && T > W ? 1 : 0;
  const latentBroadcasts = N > 1 ? F : 0;
  const ranks: RankExpectation[] = [];
  // Eps messages rank r > 0 sends: one per round that has position r.
  const epsFrom = (r: number) => F + (m > r ? 1 : 0);
  let epsIntoZero = 0;
  for (let r = 1; r < N; r++) epsIntoZero += epsFrom(r);
  ranks.push({
    modelCalls: W + F + (m > 0 ? 1 : 0),
    messagesSent: warmupBroadcasts + latentBroadcasts,
    bytesSent: warmupBroadcasts * (xBytes + epsBytes) + latentBroadcasts * xBytes,
    messagesReceived: epsIntoZero,
    bytesReceived: epsIntoZero * epsBytes,
  });
  for (let r = 1; r < N; r++) {
    ranks.push({
      modelCalls: epsFrom(r),
      messagesSent: epsFrom(r),
      bytesSent: epsFrom(r) * epsBytes,
      messagesReceived: warmupBroadcasts + latentBroadcasts,
      bytesReceived: warmupBroadcasts * (xBytes + epsBytes) + latentBroadcasts * xBytes,
    });
  }
  return {
    ranks,
    criticalPathCalls: W + Math.ceil((T - W) / N),
    messages: ranks.reduce((s, r) => s + r.messagesSent, 0),
    bytes: ranks.reduce((s, r) => s + r.bytesSent, 0),
  };
}

/** Assert-free comparison helper: the first index where two float32 arrays differ in bits, or -1. */
export function firstBitDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let j = 0; j < ua.length; j++) if (ua[j] !== ub[j]) return j;
  return -1;
}

/**
 * The same for the all-gather exchange, from its description alone (rounds.ts, `Exchange`): the
 * same warm-up broadcast; then in every round but the last each rank with a position broadcasts
 * its guided eps (the others all receive it); in the last round, ranks `1..positions-1` send theirs
 * to rank 0 alone.
 */
export function expectedAllGatherCosts(plan: ParaStepPlan, xLength: number): Expectation {
  const { steps: T, warmup: W, devices: N } = plan;
  const gather = expectedCosts(plan, xLength); // calls and critical path are the method's
  const bytes = 4 * xLength;
  const rounds = Math.ceil((T - W) / N);
  const lastPositions = rounds === 0 ? 0 : T - W - (rounds - 1) * N;
  const warm = N > 1 && T > W ? 1 : 0;
  const before = Math.max(0, rounds - 1); // rounds whose eps every rank broadcasts
  const ranks: RankExpectation[] = [];
  for (let r = 0; r < N; r++) {
    const sent = before + (r > 0 && r < lastPositions ? 1 : 0) + (r === 0 ? warm : 0);
    const received = before * (N - 1) + (r === 0 ? Math.max(0, lastPositions - 1) : warm);
    ranks.push({
      modelCalls: gather.ranks[r]!.modelCalls,
      messagesSent: N > 1 ? sent : 0,
      bytesSent: N > 1 ? (sent + (r === 0 ? warm : 0)) * bytes : 0,
      messagesReceived: N > 1 ? received : 0,
      bytesReceived: N > 1 ? (received + (r === 0 ? 0 : warm)) * bytes : 0,
    });
  }
  return {
    ranks,
    criticalPathCalls: gather.criticalPathCalls,
    messages: ranks.reduce((sum, r) => sum + r.messagesSent, 0),
    bytes: ranks.reduce((sum, r) => sum + r.bytesSent, 0),
  };
}
