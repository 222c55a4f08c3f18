/**
 * The ParaStep engine, model-agnostic: round logic and one rank's loop ({@link runRank}), all
 * ranks in one process ({@link runInProcess}), the single-device BatchStep variant
 * ({@link runBatchStep}), the step-exchange interface with its in-memory implementation, and one
 * Worker per device ({@link runWorkers}) exchanging steps over `BroadcastChannel`
 * ({@link ChannelTransport}), with the sampler-module contract a model family implements
 * ({@link SamplerModule}).
 *
 * @module
 */

export * from "./rounds.ts";
export * from "./batchstep.ts";
export * from "./transport.ts";
export * from "./channel.ts";
export * from "./devices.ts";
export * from "./coordinator.ts";
// Types only: worker.ts is a Worker script (it serves its protocol when it is a Worker's main
// module), loaded by the coordinator by URL.
export type {
  CloseReport,
  FailureStage,
  FromWorker,
  RankStats,
  SerializedError,
  ToWorker,
} from "./worker.ts";
