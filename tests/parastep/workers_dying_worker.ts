// A Worker script for the tests: rank 1 dies on init with an error nothing in the worker handles
// (as if the worker script itself were broken); every other rank serves the real protocol.
import { serveWorker, type WorkerScope } from "../../src/parastep/worker.ts";

const scope = globalThis as unknown as WorkerScope;
scope.onmessage = (event) => {
  const request = event.data;
  if (request.type === "init" && request.rank === 1) {
    throw new Error("the worker of rank 1 died on init");
  }
  serveWorker(scope);
  scope.onmessage?.(event);
};
