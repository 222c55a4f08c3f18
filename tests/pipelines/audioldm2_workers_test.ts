import assert from "node:assert/strict";
import { resolveModel } from "../../src/models/model.ts";
import { audioldm2, checkRequest } from "../../src/pipelines/audioldm2/mod.ts";
import {
  type DenoiseEngine,
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

Deno.test("CPU Workers with one thread each share one denoiser session, with the output of one session each", async () => {
  let sessions = -1;
  const workers = (shareSession: boolean): DenoiseEngine => async (spec) => {
    const engine = await denoiseWithWorkers({ ...spec, shareSession });
    sessions = engine.denoiserSessions;
    return engine;
  };
  const options = { ep: "cpu", devices: 2, denoiserThreads: 1 } as const;
  const shared = await generate(audioldm2, model, request, {
    ...options,
    denoiseWith: workers(true),
  });
  assert.equal(sessions, 1);
  const own = await generate(audioldm2, model, request, {
    ...options,
    denoiseWith: workers(false),
  });
  assert.equal(sessions, 2);
  assert.deepEqual(shared.media.waveform, own.media.waveform);
  const inProcess = await generate(audioldm2, model, request, {
    ...options,
    denoiseWith: denoiseInProcess,
  });
  assert.deepEqual(shared.media.waveform, inProcess.media.waveform);
  // More threads per Worker: each opens its own (one pool per session would be contended).
  await generate(audioldm2, model, request, {
    ...options,
    denoiserThreads: 2,
    denoiseWith: workers(true),
  });
  assert.equal(sessions, 2);
});

Deno.test("with the graph cache, the first run stores every graph it opens and the next loads them: same waveform as without", async () => {
  const dir = await Deno.makeTempDir({ prefix: "parastep-graphs-" });
  const previous = Deno.env.get("PARASTEP_CACHE_DIR");
  Deno.env.set("PARASTEP_CACHE_DIR", dir);
  const entries = () => [...Deno.readDirSync(`${dir}/graphs`)].map((e) => e.name).sort();
  const modified = () =>
    entries().map((e) => Deno.statSync(`${dir}/graphs/${e}/model.onnx`).mtime?.getTime());
  try {
    const options = { ep: "cpu", devices: 2, denoiseWith: denoiseWithWorkers } as const;
    const uncached = await generate(audioldm2, model, request, options);
    assert.throws(() => Deno.statSync(`${dir}/graphs`), Deno.errors.NotFound);
    const cold = await generate(audioldm2, model, request, { ...options, graphCache: true });
    const stored = entries();
    // Every component the run opens: the encoders, the UNet, the VAE decoder and the vocoder.
    assert.ok(stored.length >= 5, `${stored.length} cached graphs`);
    const times = modified();
    const warm = await generate(audioldm2, model, request, { ...options, graphCache: true });
    assert.deepEqual(entries(), stored);
    assert.deepEqual(modified(), times);
    assert.deepEqual(cold.media.waveform, uncached.media.waveform);
    assert.deepEqual(warm.media.waveform, uncached.media.waveform);
  } finally {
    if (previous === undefined) Deno.env.delete("PARASTEP_CACHE_DIR");
    else Deno.env.set("PARASTEP_CACHE_DIR", previous);
    await Deno.remove(dir, { recursive: true });
  }
});
