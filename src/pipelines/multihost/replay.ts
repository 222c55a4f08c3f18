/**
 * The in-process engine told that ranks were lost (`gen --in-process --replay-loss STEP:N`): it
 * computes what `gen --nats --on-rank-loss continue` computed across hosts when a rank was lost
 * at round start STEP and the rest ran at N, bit for bit ({@link runInProcessWithLosses}), so a
 * re-planned output can be reproduced and checked on one host.
 *
 * @module
 */

import type { RankLoss } from "../../parastep/rounds.ts";
import { type DenoiseEngine, denoiseInProcess } from "../denoise.ts";

/** The in-process engine replaying `losses` (rank numbers are not needed: -1 in the report). */
export function replayLossEngine(
  losses: readonly Pick<RankLoss, "step" | "devices">[],
): DenoiseEngine {
  return (spec) => denoiseInProcess({ ...spec, replayLosses: losses });
}
