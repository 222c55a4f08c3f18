/**
 * The ParaStep engine, model-agnostic: round logic and one rank's loop ({@link runRank}), all
 * ranks in one process ({@link runInProcess}), the single-device BatchStep variant
 * ({@link runBatchStep}), and the step-exchange interface with its in-memory implementation.
 *
 * @module
 */

export * from "./rounds.ts";
export * from "./batchstep.ts";
export * from "./transport.ts";
export * from "./channel.ts";
export * from "./devices.ts";
