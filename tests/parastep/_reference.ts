/**
 * Independent references for the ParaStep tests, written from docs/parastep.md and sharing no code
 * with src/parastep: the sequential sampler, a lock-step simulation of all ranks that follows the
 * pseudo-code literally (every rank runs the warm-up itself), and BatchStep from its description.
 * Expected values in the tests come from here, never from the engine.
 */

/** The pieces a reference needs; a synchronous model. */
export interface RefSampler<X, E> {
  model: (x: X, i: number) => E;
  guide: (eps: E) => X;
  step: (e: X, i: number, x: X) => X;
}

/** `x_{i+1} = S(G(eps(x_i, t_i)), i, x_i)` for `i = 0..T-1`. */
export function sequential<X, E>(T: number, s: RefSampler<X, E>, x0: X): X {
  let x = x0;
  for (let i = 0; i < T; i++) x = s.step(s.guide(s.model(x, i)), i, x);
  return x;
}

/** A message the literal loop implies, in the order a lock-step run would send it. */
export interface RefMessage {
  kind: "eps" | "latents" | "warmup";
  step: number;
  from: number;
}

/** What the literal simulation observed. */
export interface RefRun<X> {
  /** Rank 0's x at the end. */
  output: X;
  /** Model calls per rank during warm-up (the literal loop warms up on every rank). */
  warmupCalls: number[];
  /** Model calls per rank after warm-up. */
  laterCalls: number[];
  /** `[T][N]`: what each rank did at each step. */
  did: ("warmup" | "compute" | "receive" | "predict" | "reuse")[][];
  /**
   * Messages: the pseudo-code's sends and broadcasts, plus the one "warmup" broadcast that
   * replaces warming up on every rank (sent after step W - 1 when N > 1 and T > W).
   */
  messages: RefMessage[];
  /**
   * `[T][N]`: for each rank and step, true when that rank's x after the step feeds (through later
   * scheduler steps) a model call, a broadcast or the output before a broadcast overwrites it.
   */
  used: boolean[][];
}

/**
 * The loop of docs/parastep.md run in lock step over `i`, each rank with its own `x[r]` and
 * `cache[r]`. Within a step, ranks r > 0 act first so rank 0 can "receive" what rank `pos` sent.
 */
export function literalParaStep<X, E>(
  T: number,
  W: number,
  N: number,
  s: RefSampler<X, E>,
  x0: X,
): RefRun<X> {
  const x: X[] = [];
  const cache: (E | undefined)[] = [];
  for (let r = 0; r < N; r++) {
    x.push(x0);
    cache.push(undefined);
  }
  const warmupCalls = new Array<number>(N).fill(0);
  const laterCalls = new Array<number>(N).fill(0);
  const did: RefRun<X>["did"] = [];
  const messages: RefMessage[] = [];
  // For "used": chain[r] lists the steps whose S outputs x[r] was built from since it was last
  // overwritten by a broadcast; reading x[r] (a model call, a broadcast, the output) uses them all.
  const used: boolean[][] = [];
  for (let i = 0; i < T; i++) used.push(new Array<boolean>(N).fill(false));
  const chain: number[][] = [];
  for (let r = 0; r < N; r++) chain.push([]);
  const read = (r: number): void => {
    for (const step of chain[r] as number[]) (used[step] as boolean[])[r] = true;
  };

  for (let i = 0; i < T; i++) {
    const row: RefRun<X>["did"][number] = [];
    const epsOf: E[] = new Array<E>(N);
    if (i < W) {
      for (let r = 0; r < N; r++) {
        read(r);
        const eps = s.model(x[r] as X, i);
        warmupCalls[r] = (warmupCalls[r] as number) + 1;
        cache[r] = eps;
        epsOf[r] = eps;
        row.push("warmup");
      }
    } else {
      const k = i - W;
      const pos = k % N;
      let mailbox: E | undefined;
      const ranks: string[] = new Array<string>(N);
      for (let r = N - 1; r >= 1; r--) {
        if (r === pos) {
          read(r);
          const eps = s.model(x[r] as X, i);
          laterCalls[r] = (laterCalls[r] as number) + 1;
          cache[r] = eps;
          mailbox = eps;
          messages.push({ kind: "eps", step: i, from: r });
          epsOf[r] = eps;
          ranks[r] = "predict";
        } else {
          epsOf[r] = cache[r] as E;
          ranks[r] = "reuse";
        }
      }
      if (pos === 0) {
        read(0);
        const eps = s.model(x[0] as X, i);
        laterCalls[0] = (laterCalls[0] as number) + 1;
        cache[0] = eps;
        epsOf[0] = eps;
        ranks[0] = "compute";
      } else {
        if (mailbox === undefined) throw new Error(`Nobody sent eps at step ${i}`);
        cache[0] = mailbox;
        epsOf[0] = mailbox;
        ranks[0] = "receive";
      }
      for (const name of ranks) row.push(name as RefRun<X>["did"][number][number]);
    }
    for (let r = 0; r < N; r++) {
      // S reads x[r] too, but only to make the next x[r]; "used" tracks reads that matter.
      x[r] = s.step(s.guide(epsOf[r] as E), i, x[r] as X);
      (chain[r] as number[]).push(i);
    }
    if (i === W - 1 && N > 1 && T > W) messages.push({ kind: "warmup", step: i, from: 0 });
    if (i >= W && (i - W) % N === N - 1) {
      read(0);
      for (let r = 1; r < N; r++) {
        x[r] = x[0] as X;
        chain[r] = [];
      }
      if (N > 1) messages.push({ kind: "latents", step: i, from: 0 });
    }
    did.push(row);
  }
  read(0);
  return { output: x[0] as X, warmupCalls, laterCalls, did, messages, used };
}

/** A batched model for the BatchStep reference. */
export interface RefBatchSampler<X, E> {
  modelBatch: (xs: X[], is: number[]) => E[];
  guide: (eps: E) => X;
  step: (e: X, i: number, x: X) => X;
}

/**
 * BatchStep from its description: first list the groups of steps that share a network call
 * (each warm-up step alone; then runs of L steps ending no later than T - 2; then T - 1 alone),
 * then walk them.
 */
export function referenceBatchStep<X, E>(
  T: number,
  W: number,
  L: number,
  s: RefBatchSampler<X, E>,
  x0: X,
): { output: X; groups: number[][] } {
  const groups: number[][] = [];
  for (let i = 0; i < W; i++) groups.push([i]);
  let start = W;
  while (start <= T - 2) {
    const group: number[] = [];
    for (let i = start; i <= Math.min(start + L - 1, T - 2); i++) group.push(i);
    groups.push(group);
    start += group.length;
  }
  if (T > W) groups.push([T - 1]);

  let x = x0;
  let lastGuided: X | undefined;
  for (const group of groups) {
    const batch: X[] = [x];
    for (let j = 1; j < group.length; j++) {
      batch.push(s.step(lastGuided as X, (group[j] as number) - 1, batch[j - 1] as X));
    }
    const outputs = s.modelBatch(batch, group);
    group.forEach((i, j) => {
      lastGuided = s.guide(outputs[j] as E);
      x = s.step(lastGuided, i, x);
    });
  }
  return { output: x, groups };
}
