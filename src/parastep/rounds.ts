/**
 * ParaStep (arXiv 2505.14741), model-agnostic: the round table (who computes, who reuses, what is
 * sent), one rank's loop over any {@link Transport}, and all ranks in one process.
 *
 * Notation, as in docs/parastep.md: `T` steps `i = 0..T-1`, `W` warm-up steps, `N` ranks
 * `r = 0..N-1`; after warm-up `k = i - W`, round `floor(k / N)`, position `pos = k mod N`.
 * `eps` is the denoiser output before guidance, `G` the guidance, `S(e, i, x)` one scheduler step.
 *
 * Differences from the literal pseudo-code, all output-preserving:
 * - Warm-up runs on rank 0 alone, which then broadcasts `x_W` and the last `eps` once.
 * - Every `eps` is sent guided, `G(eps)`, computed by its sender: rank 0 would apply the same
 *   pure `G` to it, and with classifier-free guidance it halves the bytes on the wire.
 * - Ranks `r > 0` skip the scheduler steps whose latents are discarded (after their own prediction
 *   in a round, or in a last partial round without position `r`); `S` takes `i` explicitly, so no
 *   scheduler state can drift.
 * - `G(cache)` is computed once per cache value rather than at each reuse step (a rank keeps its
 *   cache guided).
 * - Optionally (`exchange: "allgather"`) every rank shares its eps with every other and applies
 *   the round itself, instead of rank 0 applying it and broadcasting the latents (see
 *   {@link Exchange}).
 *
 * @module
 */

import { checkCount, checkStepsAndWarmup } from "./_check.ts";
import {
  checkTag,
  ExchangeError,
  InMemoryHub,
  type LoggedMessage,
  type MessageTag,
  type StepMessage,
  type Transport,
  type TransportCounters,
} from "./transport.ts";

/**
 * The three model-specific pieces of a sampler. ParaStep only ever combines them.
 *
 * Values returned by all three are kept (as the cache, as latents, in messages) across later
 * calls, so they must not alias a buffer that a later call overwrites: copy a reused ONNX output
 * buffer out before returning it. With one session shared by all ranks, calls of different ranks
 * interleave in any order.
 *
 * @typeParam X Latents (e.g. `Float32Array`, or `number` for a scalar toy).
 * @typeParam E Pre-guidance noise (e.g. the CFG-doubled output).
 */
export interface Sampler<X, E> {
  /** eps(x, t_i): the raw denoiser output before guidance (may be async: ONNX runs are). */
  model(x: X, i: number): E | Promise<E>;
  /** G(eps): guided noise, same type as latents. */
  guide(eps: E): X;
  /** S(e, i, x): pure scheduler step x_i -> x_{i+1}. Must not mutate its arguments. */
  step(guided: X, i: number, x: X): X;
}

/** The shape of one ParaStep generation. */
export interface ParaStepPlan {
  /** `T`: denoising steps, an integer >= 1. */
  steps: number;
  /** `W`: sequential warm-up steps, an integer in `1..T`. */
  warmup: number;
  /** `N`: ranks (devices), an integer >= 1. */
  devices: number;
}

/**
 * How the ranks of a round share their results:
 * - `"gather"`, the method as docs/parastep.md states it: ranks `r > 0` send their eps to rank 0,
 *   which applies the round and broadcasts the latents. A round waits for two messages one after
 *   the other (eps in, latents out).
 * - `"allgather"`: every rank broadcasts its eps and applies the whole round itself, so the next
 *   round starts without waiting for latents: one message on a round's critical path. Every rank
 *   applies the same steps to the same values, so the output is the same bit for bit, and over
 *   BroadcastChannel it posts as many messages and bytes (N latents-sized ones per round; one
 *   fewer in a last round that is full, where gather still broadcasts latents). Each rank other
 *   than 0 receives N - 1 messages per round instead of one (rank 0 receives N - 1 either way):
 *   over a network (a future multi-host transport) that is N - 1 times their inbound bytes.
 */
export type Exchange = "gather" | "allgather";

/** Every {@link Exchange}, the default first. */
export const EXCHANGES: readonly Exchange[] = ["gather", "allgather"];

/**
 * Throw a `RangeError` unless `exchange` is absent or one of {@link EXCHANGES}.
 *
 * @param exchange The value to check (from options that may come from outside TypeScript).
 */
export function checkExchange(exchange: unknown): void {
  if (exchange !== undefined && !(EXCHANGES as readonly unknown[]).includes(exchange)) {
    throw new RangeError(
      `Cannot run ParaStep as 'exchange' must be one of ${EXCHANGES.join(", ")}: ` +
        `current value is ${String(exchange)}`,
    );
  }
}

/**
 * Throw a `RangeError` naming the first field of `plan` that is out of range.
 *
 * @param plan The plan to check.
 * @throws {RangeError} Unless `T >= 1`, `1 <= W <= T` and `N >= 1`, all integers.
 */
export function checkPlan(plan: ParaStepPlan): void {
  checkStepsAndWarmup("ParaStep", plan.steps, plan.warmup);
  checkCount("ParaStep", "devices", plan.devices);
}

/**
 * Network calls on the critical path: `W + ceil((T - W) / N)`.
 *
 * @example
 * ```ts
 * if (criticalPathCalls({ steps: 50, warmup: 5, devices: 4 }) !== 17) throw new Error();
 * ```
 */
export function criticalPathCalls(plan: ParaStepPlan): number {
  checkPlan(plan);
  return plan.warmup + Math.ceil((plan.steps - plan.warmup) / plan.devices);
}

/**
 * Ideal speedup over the sequential sampler, ignoring communication: `T / (W + ceil((T - W) / N))`.
 *
 * @example
 * ```ts
 * // AudioLDM2-large defaults at N = 8: 200 / (5 + 25)
 * if (idealSpeedup({ steps: 200, warmup: 5, devices: 8 }) !== 200 / 30) throw new Error();
 * ```
 */
export function idealSpeedup(plan: ParaStepPlan): number {
  return plan.steps / criticalPathCalls(plan);
}

/**
 * What one rank does at one step, discriminated by `kind`:
 * - `"warmup"` (`i < W`): a sequential step on rank 0; the other ranks wait for its broadcast.
 * - `"compute"` (rank 0, `pos = 0`): `eps` on the true latents.
 * - `"receive"` (rank 0, `pos > 0`): `eps` from rank `from = pos`.
 * - `"predict"` (rank `r = pos > 0`): `eps` on the extrapolated latents, sent to rank 0.
 * - `"reuse"` (rank `r > 0`, `pos != r`): step with the stale cache. `discarded` when the result
 *   can never be used (after the rank's prediction in this round, or in a last partial round that
 *   has no position `r`).
 */
export type Role =
  | { readonly kind: "warmup" }
  | { readonly kind: "compute" }
  | { readonly kind: "receive"; readonly from: number }
  | { readonly kind: "predict"; readonly to: 0 }
  | { readonly kind: "reuse"; readonly discarded: boolean };

/** One cell of the round table: rank `rank` at step `i`. */
export interface StepRole {
  /** Step index `i`. */
  readonly i: number;
  /** Rank `r`. */
  readonly rank: number;
  /** What the rank does. */
  readonly role: Role;
  /** Round `floor((i - W) / N)`; `null` during warm-up. */
  readonly round: number | null;
  /** Position `(i - W) mod N` in the round; `null` during warm-up. */
  readonly pos: number | null;
  /** Positions in this round: `N`, or `m = (T - W) mod N` for a last partial round; `null` in warm-up. */
  readonly roundSize: number | null;
  /** Step `i` is the last of a full round (always true for `N = 1` after warm-up). */
  readonly endsRound: boolean;
  /**
   * What rank 0 broadcasts after step `i`: `"warmup"` after step `W - 1` (when `N > 1` and
   * `T > W`), `"latents"` at the end of a full round (when `N > 1`), else `null`.
   */
  readonly broadcast: "warmup" | "latents" | null;
}

/**
 * The role of rank `rank` at step `i`: a pure function of `(T, W, N, i, r)`.
 *
 * @param plan `T`, `W`, `N`.
 * @param i Step index in `0..T-1`.
 * @param rank Rank in `0..N-1`.
 * @returns The cell of the round table.
 * @throws {RangeError} For an invalid plan, step or rank.
 * @example
 * ```ts
 * const plan = { steps: 10, warmup: 2, devices: 3 };
 * // Step 3 is position 1 of round 0: rank 1 predicts, rank 0 receives, rank 2 reuses.
 * if (stepRole(plan, 3, 1).role.kind !== "predict") throw new Error();
 * ```
 */
export function stepRole(plan: ParaStepPlan, i: number, rank: number): StepRole {
  checkPlan(plan);
  const { steps: T, warmup: W, devices: N } = plan;
  checkIndex("i", i, T);
  checkIndex("rank", rank, N);
  if (i < W) {
    const broadcast = i === W - 1 && N > 1 && T > W ? "warmup" : null;
    return {
      i,
      rank,
      role: { kind: "warmup" },
      round: null,
      pos: null,
      roundSize: null,
      endsRound: false,
      broadcast,
    };
  }
  const k = i - W;
  const round = Math.floor(k / N);
  const pos = k % N;
  const fullRounds = Math.floor((T - W) / N);
  const roundSize = round < fullRounds ? N : (T - W) % N;
  const endsRound = pos === N - 1;
  let role: Role;
  if (rank === 0) role = pos === 0 ? { kind: "compute" } : { kind: "receive", from: pos };
  else if (rank === pos) role = { kind: "predict", to: 0 };
  else role = { kind: "reuse", discarded: pos > rank || rank >= roundSize };
  return {
    i,
    rank,
    role,
    round,
    pos,
    roundSize,
    endsRound,
    broadcast: endsRound && N > 1 ? "latents" : null,
  };
}

function checkIndex(name: string, value: number, size: number): void {
  if (!Number.isInteger(value) || value < 0 || value >= size) {
    throw new RangeError(
      `Cannot look up a ParaStep role as '${name}' must be an integer in 0..${size - 1}: ` +
        `current value is ${value}`,
    );
  }
}

/**
 * A sampler callback failed on some rank at some step. Carries both, and the original error as
 * `cause`, so a multi-rank failure says where it happened.
 */
export class SamplerError extends Error {
  override name = "SamplerError";
  /** The rank whose sampler threw. */
  readonly rank: number;
  /** The step index `i` it was working on. */
  readonly step: number;
  /** Which callback threw. */
  readonly stage: "model" | "guide" | "step";

  /**
   * @param rank The rank.
   * @param step The step index.
   * @param stage The callback that threw.
   * @param cause What it threw.
   */
  constructor(rank: number, step: number, stage: "model" | "guide" | "step", cause: unknown) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super(`Cannot run '${stage}' at step ${step} on rank ${rank}: ${detail}`, { cause });
    this.rank = rank;
    this.step = step;
    this.stage = stage;
  }
}

/** Options for {@link runRank}. */
export interface RunRankOptions {
  /**
   * Generation id put in every message tag. Every rank of one generation must use the same one,
   * and a new generation a new one.
   *
   * @default {"0"}
   */
  gen?: string;
  /** Aborting it ends the run: pending receives reject and no further model call starts. */
  signal?: AbortSignal;
  /** Called on rank 0 after step `i` is applied to the true latents (for progress bars). */
  onStep?: (i: number) => void;
  /**
   * How ranks share a round's results; every rank of a generation must use the same one.
   *
   * @default {"gather"}
   */
  exchange?: Exchange;
  /**
   * Resume a re-planned generation (docs/multihost.md §7): the plan's warm-up `W` is the step `s`
   * the re-plan starts at. Rank 0 runs no step before `s`: it starts from `x` (`x_s`) and
   * broadcasts `cache` (the guided eps it applied at step `s - 1`) as the warm-up message, so every
   * rank starts as after a warm-up. Other ranks ignore it. Values are the sampler's latents type.
   */
  resume?: { readonly x: unknown; readonly cache: unknown };
  /**
   * Rank 0 only: called at the start of every round (step `s >= W`) with `x_s` and the guided eps
   * applied at step `s - 1`: the state a re-plan resumes from. The arrays are kept, not copied.
   */
  onRoundStart?: (s: number, x: unknown, guided: unknown) => void;
}

/** What one rank's run returns. */
export interface RankResult<X> {
  /** This rank. */
  rank: number;
  /** The final latents `x_T` on rank 0; `undefined` on every other rank. */
  output: X | undefined;
  /** Network (model) calls this rank made. */
  modelCalls: number;
  /**
   * This rank's logical clock at the end: network calls on the longest dependency chain it saw
   * (each call adds 1, each received message raises it to the sender's). On rank 0 this is the
   * measured critical path.
   */
  depth: number;
  /** This rank's exchange counters. */
  counters: TransportCounters;
}

/**
 * Run rank `rank`'s loop of ParaStep for one generation (docs/parastep.md), exchanging messages
 * only through `transport`. Every rank of the generation must run it with the same plan, `x0` and
 * `gen`. State (latents, cache, counters, clock) lives in this call.
 *
 * @param rank This rank `r` in `0..N-1`.
 * @param plan `T`, `W`, `N`.
 * @param sampler The model, guidance and scheduler step.
 * @param x0 The initial latents (only rank 0 reads them; the others get `x_W` from it).
 * @param transport This rank's end of the exchange.
 * @param options See {@link RunRankOptions}.
 * @returns The output on rank 0, and counters on every rank.
 * @throws {RangeError} For an invalid plan or rank.
 * @throws {SamplerError} When a sampler callback throws on this rank.
 * @throws {ExchangeError} When a received message has an unexpected tag.
 * @example
 * ```ts
 * import { InMemoryHub } from "./transport.ts";
 * const sampler = { model: (x: number) => x, guide: (e: number) => e, step: (e: number, _i: number, x: number) => x - 0.1 * e };
 * const hub = new InMemoryHub<number>(1);
 * const { output } = await runRank(0, { steps: 3, warmup: 1, devices: 1 }, sampler, 1, hub.endpoint(0));
 * if (output !== 0.9 ** 3) throw new Error();
 * ```
 */
export async function runRank<X, E>(
  rank: number,
  plan: ParaStepPlan,
  sampler: Sampler<X, E>,
  x0: X,
  transport: Transport<X>,
  options: RunRankOptions = {},
): Promise<RankResult<X>> {
  checkPlan(plan);
  if (!Number.isInteger(rank) || rank < 0 || rank >= plan.devices) {
    throw new RangeError(
      `Cannot run ParaStep as 'rank' must be an integer in 0..${plan.devices - 1}: ` +
        `current value is ${rank}`,
    );
  }
  checkExchange(options.exchange);
  if (options.exchange === "allgather" && plan.devices > 1) {
    return await runAllGather(rank, plan, sampler, x0, transport, options);
  }
  return await (rank === 0
    ? runRankZero(plan, sampler, x0, transport, options)
    : runPredictor(rank, plan, sampler, transport, options));
}

/** Rank 0: the true trajectory. Computes at position 0, receives every other position. */
async function runRankZero<X, E>(
  plan: ParaStepPlan,
  sampler: Sampler<X, E>,
  x0: X,
  transport: Transport<X>,
  options: RunRankOptions,
): Promise<RankResult<X>> {
  const T = plan.steps;
  const gen = options.gen ?? DEFAULT_GEN;
  const { signal } = options;
  const call = callbacks(0, sampler);
  let x = x0;
  let depth = 0;
  let modelCalls = 0;
  let first = 0;
  let last: X | undefined;
  if (options.resume !== undefined) {
    // Re-planned: x_s and G(eps_{s-1}) stand for the warm-up's result.
    first = plan.warmup;
    x = options.resume.x as X;
    last = options.resume.cache as X;
    if (plan.devices > 1 && T > first) {
      await transport.broadcast({
        gen,
        step: first - 1,
        kind: "warmup",
        from: 0,
        depth,
        x,
        cache: last,
      });
    }
  }
  for (let i = first; i < T; i++) {
    signal?.throwIfAborted();
    const cell = stepRole(plan, i, 0);
    const role = cell.role;
    if (cell.pos === 0 && last !== undefined) options.onRoundStart?.(i, x, last);
    let guided: X;
    if (role.kind === "receive") {
      const message = await receive(
        transport,
        { gen, step: i, kind: "eps", from: role.from },
        signal,
      );
      guided = message.eps;
      depth = Math.max(depth, message.depth);
    } else {
      // "warmup" and "compute": a network call on the true latents.
      guided = call.guide(await call.model(x, i), i);
      modelCalls += 1;
      depth += 1;
    }
    x = call.step(guided, i, x);
    last = guided;
    // The broadcast first: the other ranks wait for it, while progress can wait.
    if (cell.broadcast === "warmup") {
      await transport.broadcast({ gen, step: i, kind: "warmup", from: 0, depth, x, cache: guided });
    } else if (cell.broadcast === "latents") {
      await transport.broadcast({ gen, step: i, kind: "latents", from: 0, depth, x });
    }
    options.onStep?.(i);
  }
  return { rank: 0, output: x, modelCalls, depth, counters: transport.counters() };
}

/** Rank r > 0: reuse its stale cache up to position r, predict there, then wait for the round's end. */
async function runPredictor<X, E>(
  rank: number,
  plan: ParaStepPlan,
  sampler: Sampler<X, E>,
  transport: Transport<X>,
  options: RunRankOptions,
): Promise<RankResult<X>> {
  const { steps: T, warmup: W } = plan;
  const gen = options.gen ?? DEFAULT_GEN;
  const { signal } = options;
  const call = callbacks(rank, sampler);
  let depth = 0;
  let modelCalls = 0;
  if (T === W) {
    return { rank, output: undefined, modelCalls, depth, counters: transport.counters() };
  }
  const warm = await receive(transport, { gen, step: W - 1, kind: "warmup", from: 0 }, signal);
  let x = warm.x;
  // cache_r, guided: G of the last eps this rank computed (at first, of the last warm-up eps).
  // G depends on eps alone, so guiding once per cache gives every reuse step the same value.
  let cache = warm.cache;
  depth = Math.max(depth, warm.depth);
  for (let i = W; i < T; i++) {
    signal?.throwIfAborted();
    const cell = stepRole(plan, i, rank);
    const role = cell.role;
    if (role.kind === "reuse" && !role.discarded) {
      x = call.step(cache, i, x);
    } else if (role.kind === "predict") {
      cache = call.guide(await call.model(x, i), i);
      modelCalls += 1;
      depth += 1;
      await transport.send(0, { gen, step: i, kind: "eps", from: rank, depth, eps: cache });
    }
    if (cell.broadcast === "latents") {
      const message = await receive(transport, { gen, step: i, kind: "latents", from: 0 }, signal);
      x = message.x;
      depth = Math.max(depth, message.depth);
    }
  }
  return { rank, output: undefined, modelCalls, depth, counters: transport.counters() };
}

/**
 * Any rank with the `"allgather"` exchange. Warm-up as with `"gather"` (rank 0 alone, then one
 * broadcast). Then every round starts with every rank holding the true `x_s`: rank `r` reuses its
 * cache for `r` steps, predicts at `s + r` and broadcasts `G(eps)`; each rank then applies the
 * round's `G(eps)`s in position order to its own `x_s`. The last round's results only matter to
 * rank 0: they go to it alone, and the other ranks stop.
 */
async function runAllGather<X, E>(
  rank: number,
  plan: ParaStepPlan,
  sampler: Sampler<X, E>,
  x0: X,
  transport: Transport<X>,
  options: RunRankOptions,
): Promise<RankResult<X>> {
  const { steps: T, warmup: W, devices: N } = plan;
  const gen = options.gen ?? DEFAULT_GEN;
  const { signal } = options;
  const call = callbacks(rank, sampler);
  const onStep = rank === 0 ? options.onStep : undefined;
  let x = x0;
  let depth = 0;
  let modelCalls = 0;
  // cache_r, guided (see runPredictor); on rank 0 never reused, as position 0 reuses nothing.
  let cache: X;
  if (rank === 0 && options.resume !== undefined) {
    // Re-planned: x_s and G(eps_{s-1}) stand for the warm-up's result.
    x = options.resume.x as X;
    cache = options.resume.cache as X;
    if (T > W) {
      await transport.broadcast({ gen, step: W - 1, kind: "warmup", from: 0, depth, x, cache });
    }
  } else if (rank === 0) {
    let guided: X | undefined;
    for (let i = 0; i < W; i++) {
      signal?.throwIfAborted();
      guided = call.guide(await call.model(x, i), i);
      modelCalls += 1;
      depth += 1;
      x = call.step(guided, i, x);
      if (i === W - 1 && T > W) {
        await transport.broadcast({
          gen,
          step: i,
          kind: "warmup",
          from: 0,
          depth,
          x,
          cache: guided,
        });
      }
      onStep?.(i);
    }
    cache = guided as X; // W >= 1
  } else {
    if (T === W) {
      return { rank, output: undefined, modelCalls, depth, counters: transport.counters() };
    }
    const warm = await receive(transport, { gen, step: W - 1, kind: "warmup", from: 0 }, signal);
    x = warm.x;
    cache = warm.cache;
    depth = warm.depth;
  }
  // The guided eps rank 0 applied last (at step s - 1 at the start of round s).
  let applied: X = cache;
  for (let s = W; s < T; s += N) {
    signal?.throwIfAborted();
    if (rank === 0) options.onRoundStart?.(s, x, applied);
    const positions = Math.min(N, T - s);
    const last = s + N >= T;
    let own: X | undefined;
    let ownDepth = depth;
    if (rank < positions) {
      let predicted = x;
      for (let j = 0; j < rank; j++) predicted = call.step(cache, s + j, predicted);
      own = call.guide(await call.model(predicted, s + rank), s + rank);
      modelCalls += 1;
      ownDepth = depth + 1;
      const message = {
        gen,
        step: s + rank,
        kind: "eps",
        from: rank,
        depth: ownDepth,
        eps: own,
      } as const;
      if (!last) await transport.broadcast(message);
      else if (rank !== 0) await transport.send(0, message);
    }
    if (rank === 0 || !last) {
      let roundDepth = ownDepth;
      for (let j = 0; j < positions; j++) {
        let guided: X;
        if (j === rank) {
          guided = own as X;
        } else {
          const message = await receive(
            transport,
            { gen, step: s + j, kind: "eps", from: j },
            signal,
          );
          guided = message.eps;
          roundDepth = Math.max(roundDepth, message.depth);
        }
        x = call.step(guided, s + j, x);
        applied = guided;
        onStep?.(s + j);
      }
      depth = roundDepth;
    } else {
      depth = ownDepth;
    }
    if (own !== undefined) cache = own;
  }
  return {
    rank,
    output: rank === 0 ? x : undefined,
    modelCalls,
    depth,
    counters: transport.counters(),
  };
}

const DEFAULT_GEN = "0";

/** Wrap sampler callbacks so a throw names the rank, step and stage. */
function callbacks<X, E>(rank: number, sampler: Sampler<X, E>) {
  return {
    async model(x: X, i: number): Promise<E> {
      try {
        return await sampler.model(x, i);
      } catch (error) {
        throw new SamplerError(rank, i, "model", error);
      }
    },
    guide(eps: E, i: number): X {
      try {
        return sampler.guide(eps);
      } catch (error) {
        throw new SamplerError(rank, i, "guide", error);
      }
    },
    step(guided: X, i: number, x: X): X {
      try {
        return sampler.step(guided, i, x);
      } catch (error) {
        throw new SamplerError(rank, i, "step", error);
      }
    },
  };
}

/** Receive one message and narrow it by kind; the tag is checked here whatever the transport does. */
async function receive<X, K extends StepMessage<X>["kind"]>(
  transport: Transport<X>,
  expected: MessageTag & { kind: K },
  signal: AbortSignal | undefined,
): Promise<Extract<StepMessage<X>, { kind: K }>> {
  const message = await transport.receive(expected, signal);
  checkTag(expected, message);
  return message as Extract<StepMessage<X>, { kind: K }>;
}

/** Options for {@link runInProcess}. */
export interface RunInProcessOptions {
  /**
   * Generation id for the message tags.
   *
   * @default {a random UUID}
   */
  gen?: string;
  /** Aborting it ends every rank's run; `runInProcess` rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Called after rank 0 applies step `i` (for progress bars). */
  onStep?: (i: number) => void;
  /**
   * How ranks share a round's results.
   *
   * @default {"gather"}
   */
  exchange?: Exchange;
  /**
   * Deliver copies of payloads (`structuredClone`), as a real channel would.
   *
   * @default {true}
   */
  copy?: boolean;
  /** Resume a re-planned generation (see {@link RunRankOptions.resume}). */
  resume?: { readonly x: unknown; readonly cache: unknown };
  /** Rank 0's round starts (see {@link RunRankOptions.onRoundStart}). */
  onRoundStart?: (s: number, x: unknown, guided: unknown) => void;
}

/** What {@link runInProcess} returns. */
export interface InProcessResult<X> {
  /** `x_T` from rank 0. */
  output: X;
  /** Network calls per rank, indexed by rank. */
  modelCalls: number[];
  /** Measured critical path: the largest logical clock at the end of any rank. */
  criticalPathCalls: number;
  /** Each rank's final logical clock, indexed by rank. */
  depths: number[];
  /** Every message, in order of sending. */
  messages: LoggedMessage[];
  /** Each rank's exchange counters, indexed by rank. */
  counters: TransportCounters[];
}

/**
 * Run all `N` ranks of one ParaStep generation concurrently in this process over an
 * {@link InMemoryHub}. Ranks interleave at their `await`s; nothing assumes that model calls on
 * different ranks overlap, so one shared (serialised) session serves every rank.
 *
 * If any rank fails, the others are aborted, every rank is awaited, and the first error is thrown.
 *
 * @param plan `T`, `W`, `N`.
 * @param samplerFor The sampler of each rank (may return the same object for every rank).
 * @param x0 The initial latents.
 * @param options See {@link RunInProcessOptions}.
 * @returns Rank 0's output, per-rank calls, the measured critical path and the message log.
 * @throws {SamplerError} When a sampler callback throws, naming its rank and step.
 * @throws {ExchangeError} On a mismatched message, or one that no rank received.
 * @example
 * ```ts
 * const sampler = { model: (x: number) => x, guide: (e: number) => e, step: (e: number, _i: number, x: number) => x - 0.1 * e };
 * const result = await runInProcess({ steps: 10, warmup: 2, devices: 4 }, () => sampler, 1);
 * if (result.criticalPathCalls !== 4) throw new Error();
 * ```
 */
export async function runInProcess<X, E>(
  plan: ParaStepPlan,
  samplerFor: (rank: number) => Sampler<X, E>,
  x0: X,
  options: RunInProcessOptions = {},
): Promise<InProcessResult<X>> {
  checkPlan(plan);
  checkExchange(options.exchange);
  const N = plan.devices;
  const gen = options.gen ?? crypto.randomUUID();
  const hub = new InMemoryHub<X>(N, { copy: options.copy ?? true });
  const controller = new AbortController();
  const onOuterAbort = (): void => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) onOuterAbort();
  else options.signal?.addEventListener("abort", onOuterAbort, { once: true });

  // The first failure is the cause; the aborts it triggers on the other ranks are echoes of it.
  const failures: unknown[] = [];
  const runs: Promise<RankResult<X>>[] = [];
  for (let r = 0; r < N; r++) {
    const rankOptions: RunRankOptions = { gen, signal: controller.signal };
    if (options.exchange !== undefined) rankOptions.exchange = options.exchange;
    if (r === 0 && options.onStep !== undefined) rankOptions.onStep = options.onStep;
    if (r === 0 && options.resume !== undefined) rankOptions.resume = options.resume;
    if (r === 0 && options.onRoundStart !== undefined) {
      rankOptions.onRoundStart = options.onRoundStart;
    }
    const run = Promise.resolve()
      .then(() => runRank(r, plan, samplerFor(r), x0, hub.endpoint(r), rankOptions))
      .catch((error: unknown) => {
        if (failures.length === 0) controller.abort(error);
        failures.push(error);
        throw error;
      });
    runs.push(run);
  }
  // Wait for every rank, failed or not, so nothing is left running after we return.
  const settled = await Promise.allSettled(runs);
  options.signal?.removeEventListener("abort", onOuterAbort);
  if (failures.length > 0) throw failures[0];
  const results = settled.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
  const left = hub.undelivered()[0];
  if (left !== undefined) {
    throw new ExchangeError(null, left.tag, `rank ${left.rank} never received a message`);
  }
  const rank0 = results[0];
  if (rank0 === undefined || rank0.output === undefined) {
    throw new Error("Cannot run ParaStep in process as rank 0 returned no output");
  }
  const depths = results.map((r) => r.depth);
  return {
    output: rank0.output,
    modelCalls: results.map((r) => r.modelCalls),
    criticalPathCalls: Math.max(...depths),
    depths,
    messages: hub.log(),
    counters: results.map((r) => r.counters),
  };
}

/** A rank lost during a generation, as a re-plan sees it (docs/multihost.md §7). */
export interface RankLoss {
  /** The rank lost (numbered as in the epoch it was lost in). */
  readonly rank: number;
  /** The step `s` the re-plan resumed at: the start of the round whose results were incomplete. */
  readonly step: number;
  /** `N'`: ranks that ran the remaining steps. */
  readonly devices: number;
}

/**
 * The in-process engine told that ranks were lost: the generation runs with `plan` up to the
 * first loss's step `s` (a round start), then from `x_s` and the guided eps applied at `s - 1`
 * with `N'` ranks and warm-up `s` (resumed, see {@link RunRankOptions.resume}), and so on for
 * each loss. This is what `--on-rank-loss continue` computes across hosts, bit for bit.
 *
 * @param losses In order of step; each `step` must be a round start of the epoch before it.
 * @throws {RangeError} For a loss that is not at a round start, or leaves no rank.
 */
export async function runInProcessWithLosses<X, E>(
  plan: ParaStepPlan,
  samplerFor: (rank: number) => Sampler<X, E>,
  x0: X,
  losses: readonly Pick<RankLoss, "step" | "devices">[],
  options: Omit<RunInProcessOptions, "resume" | "onRoundStart"> = {},
): Promise<InProcessResult<X>> {
  let epochPlan = plan;
  let resume: { x: unknown; cache: unknown } | undefined;
  for (const loss of losses) {
    const { warmup: W, devices: N } = epochPlan;
    if (!(loss.step >= W && loss.step < plan.steps && (loss.step - W) % N === 0)) {
      throw new RangeError(
        `Cannot replay a rank loss at step ${loss.step} as it is not a round start of ` +
          `T=${plan.steps}, W=${W}, N=${N}`,
      );
    }
    if (!Number.isInteger(loss.devices) || loss.devices < 1 || loss.devices > N) {
      throw new RangeError(
        `Cannot replay a rank loss as the ranks left must be an integer in 1..${N}: ` +
          `current value is ${loss.devices}`,
      );
    }
    // Up to the loss: the epoch's plan cut at step s (whole rounds, so the same roles); its
    // end is x_s, and the guided eps rank 0 applied last is G(eps_{s-1}).
    const state = await lastState(
      { steps: loss.step, warmup: W, devices: N },
      samplerFor,
      x0,
      options,
      resume,
    );
    resume = state;
    epochPlan = { steps: plan.steps, warmup: loss.step, devices: loss.devices };
  }
  return await runInProcess(epochPlan, samplerFor, x0, {
    ...options,
    ...(resume === undefined ? {} : { resume }),
  });
}

/** `x_T` and the guided eps rank 0 applied at step `T - 1`, of an in-process run of `plan`. */
async function lastState<X, E>(
  plan: ParaStepPlan,
  samplerFor: (rank: number) => Sampler<X, E>,
  x0: X,
  options: Omit<RunInProcessOptions, "resume" | "onRoundStart">,
  resume: { x: unknown; cache: unknown } | undefined,
): Promise<{ x: unknown; cache: unknown }> {
  let guided: unknown;
  const result = await runInProcess(
    plan,
    (rank) => {
      const inner = samplerFor(rank);
      if (rank !== 0) return inner;
      return {
        model: (x: X, i: number) => inner.model(x, i),
        guide: (e: E) => inner.guide(e),
        step: (g: X, i: number, x: X) => {
          if (i === plan.steps - 1) guided = g;
          return inner.step(g, i, x);
        },
      };
    },
    x0,
    { ...options, ...(resume === undefined ? {} : { resume }) },
  );
  return { x: result.output, cache: guided };
}
