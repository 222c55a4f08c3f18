/**
 * A `bench:open` Worker: opens the components it is told to, one at a time,
 * keeping the sessions until told to close, and replies with each open's time.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { Env, Session } from "../ffi/mod.ts";
import { openComponent, resolveModel } from "../src/models/model.ts";
import { AFFINE } from "../tests/support/models.ts";
import { specOptions } from "./_open_child.ts";
import type { ChildSpec } from "./_open_spec.ts";

let spec: ChildSpec | undefined;
let env: Env | undefined;
const sessions: Session[] = [];

self.onmessage = (e: MessageEvent) => {
  try {
    const msg = e.data;
    if (msg.spec) {
      spec = msg.spec as ChildSpec;
      env = Env.create({ logLevel: "error" });
      Session.create(env, AFFINE.bytes(), { intraOpThreads: 1 }).close();
      self.postMessage({ ready: true });
    } else if (msg.open) {
      const model = resolveModel(spec!.model);
      const t0 = performance.now();
      const session = msg.borrow !== undefined
        ? Session.borrow(env!, msg.borrow)
        : openComponent(env!, model, msg.open, specOptions(spec!));
      const ms = performance.now() - t0;
      sessions.push(session);
      self.postMessage({ ms, cache: session.graphCacheStatus });
    } else if (msg.close) {
      for (const s of sessions) s.close();
      env?.close();
      self.postMessage({ closed: true });
    }
  } catch (err) {
    self.postMessage({ error: err instanceof Error ? err.message : String(err) });
  }
};
