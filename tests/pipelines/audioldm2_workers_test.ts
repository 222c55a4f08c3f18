import assert from "node:assert/strict";
import { resolveModel } from "../../src/models/model.ts";
import { audioldm2, checkRequest } from "../../src/pipelines/audioldm2/mod.ts";
import {
  denoiseInProcess,
  denoiseWithWorkers,
  generate,
  Generator,
} from "../../src/pipelines/mod.ts";

const model = resolveModel(new URL("../../models/audioldm2-tiny", import.meta.url).pathname);
const request = checkRequest(model, {
  prompt: "A hammer hitting a wooden surface",
  seed: 3,
  steps: 12,
});

Deno.test("ParaStep on 2 Workers gives the in-process engine's output bit for bit", async () => {
  // Both engines give each rank floor(cores / N) intra-op threads on the CPU.
  const workers = await generate(audioldm2, model, request, {
    ep: "cpu",
    devices: 2,
    denoiseWith: denoiseWithWorkers,
  });
  const inProcess = await generate(audioldm2, model, request, {
    ep: "cpu",
    devices: 2,
    denoiseWith: denoiseInProcess,
  });
  assert.deepEqual(workers.media.waveform, inProcess.media.waveform);
  assert.deepEqual(workers.denoise.modelCalls, inProcess.denoise.modelCalls);
  // T = 12, W = 5, N = 2: 5 + ceil(7 / 2) = 9 calls on the critical path.
  assert.equal(workers.denoise.criticalPathCalls, 9);
  assert.equal(inProcess.denoise.criticalPathCalls, 9);
  // Exchanged: one warm-up broadcast (x and the guided eps), then per full round one guided eps
  // into rank 0 and one latents broadcast; the last (partial) round sends nothing. Guided, an eps
  // is the latents' size (the raw CFG-doubled one would be twice that).
  const x = 1 * 8 * 32 * 4 * 4;
  const eps = x;
  const fullRounds = Math.floor((12 - 5) / 2);
  assert.equal(workers.denoise.bytesExchanged, x + eps + fullRounds * (eps + x));
  // And ParaStep is not the sequential sampler: the output differs from N = 1.
  const sequential = await generate(audioldm2, model, request, { ep: "cpu", devices: 1 });
  assert.notDeepEqual(sequential.media.waveform, workers.media.waveform);
});

Deno.test("ParaStep on 2 Workers with the all-gather exchange gives the same waveform as gather", async () => {
  const options = { ep: "cpu", devices: 2, denoiseWith: denoiseWithWorkers } as const;
  const gather = await generate(audioldm2, model, request, options);
  const allGather = await generate(audioldm2, model, request, {
    ...options,
    exchange: "allgather",
  });
  assert.equal(allGather.denoise.exchange, "allgather");
  assert.deepEqual(allGather.media.waveform, gather.media.waveform);
  assert.equal(allGather.denoise.criticalPathCalls, gather.denoise.criticalPathCalls);
  // T - W = 7 ends with a partial round, so both exchange the same bytes.
  assert.equal(allGather.denoise.bytesExchanged, gather.denoise.bytesExchanged);
  // No latents cross the channel; eps do.
  assert.equal(allGather.denoise.hopMs.latents, null);
  assert.ok((allGather.denoise.hopMs.eps ?? 0) > 0);
});

Deno.test("generate() refuses an unknown exchange before opening anything", async () => {
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    generate(audioldm2, model, request, { exchange: "ring" as any }),
    /'exchange' must be one of gather, allgather: current value is ring/,
  );
});

Deno.test("one Generator serves several requests on the same Workers, each equal to its own in-process run", async () => {
  const other = checkRequest(model, { prompt: "rain on a tin roof", seed: 5, steps: 9 });
  const options = { ep: "cpu", devices: 2, denoiseWith: denoiseWithWorkers } as const;
  await using generator = new Generator(audioldm2, model, options);
  const first = await generator.generate(request);
  const second = await generator.generate(other);
  // The Workers opened once: the second request found them open.
  assert.ok(first.timings.loadMs > 0);
  assert.equal(second.timings.loadMs, 0);
  for (const [checked, result] of [[request, first], [other, second]] as const) {
    const alone = await generate(audioldm2, model, checked, {
      ep: "cpu",
      devices: 2,
      denoiseWith: denoiseInProcess,
    });
    assert.deepEqual(result.media.waveform, alone.media.waveform);
  }
});
