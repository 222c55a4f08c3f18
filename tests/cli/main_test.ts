import assert from "node:assert/strict";

import { parastep } from "../support/cli.ts";

Deno.test("parastep info reports ORT, the providers, the auto choice and the cores", async () => {
  const { code, stdout, stderr } = await parastep(["info", "--json"]);
  assert.equal(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.match(report.ort.version, /^1\.\d+\.\d+$/);
  assert.ok(report.providersCompiledIn.includes("CPUExecutionProvider"));
  assert.deepEqual(report.providers.map((p: { ep: string }) => p.ep), ["cuda", "webgpu", "cpu"]);
  // auto takes the first usable provider it does not pass over (a software Vulkan renderer).
  const skipped = new Set(report.autoSkips.map((s: { ep: string }) => s.ep));
  const firstUsable = report.providers.find((p: { ok: boolean; ep: string }) =>
    p.ok && !skipped.has(p.ep)
  );
  assert.equal(report.auto, firstUsable.ep);
  assert.equal(report.cpuCores, navigator.hardwareConcurrency);
  // Dawn's adapter warnings (on stderr, behind ORT's logger) stay silent without --verbose.
  assert.equal(stderr, "");
  // Both model folders are listed: the committed ones and the exporter's cache.
  assert.ok(report.models.some((m: { name: string }) => m.name === "audioldm2-tiny"));
  assert.match(report.cacheModelsDir, /\.cache\/models$/);
  assert.ok(Array.isArray(report.cacheModels));
  const text = await parastep(["info"]);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /Models in .*\.cache\/models:/);
  assert.equal(text.stderr, "");
  assert.match(text.stdout, new RegExp(`--ep auto picks: ${report.auto}`));
});

Deno.test("an unknown command or flag gets one error line pointing to the help, exit code 2", async () => {
  const cases: [string[], string][] = [
    [["frobnicate"], "parastep: Unknown command 'frobnicate' (see 'parastep --help')"],
    [["info", "--bogus"], "parastep: Unknown option '--bogus' (see 'parastep help info')"],
    [["gen", "--promt", "x"], "parastep: Unknown option '--promt' (see 'parastep help gen')"],
  ];
  for (const [args, line] of cases) {
    const { code, stdout, stderr } = await parastep(args);
    assert.equal(code, 2);
    assert.equal(stdout, "");
    assert.equal(stderr, `${line}\n`);
  }
});

Deno.test("a missing ORT library named by PARASTEP_ORT_LIB is one clear error, exit code 1", async () => {
  const { code, stderr } = await parastep(["info"], {
    env: { PARASTEP_ORT_LIB: "/nonexistent/libort.so" },
  });
  assert.equal(code, 1);
  assert.equal(
    stderr.trim(),
    "parastep: Cannot load ONNX Runtime as PARASTEP_ORT_LIB names a file that does not exist: /nonexistent/libort.so",
  );
});

Deno.test("a file that is not a library is named once, with the loader's reason", async () => {
  const file = await Deno.makeTempFile({ suffix: ".so" });
  try {
    await Deno.writeTextFile(file, "not a library\n");
    const { code, stderr } = await parastep(["info"], { env: { PARASTEP_ORT_LIB: file } });
    assert.equal(code, 1);
    assert.equal(
      stderr.trim(),
      `parastep: Cannot open the ONNX Runtime library ${file}: file too short ` +
        `(is it libonnxruntime for ${Deno.build.os} ${Deno.build.arch}?)`,
    );
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("--version prints the version from deno.json", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
  );
  const { code, stdout } = await parastep(["--version"]);
  assert.equal(code, 0);
  assert.equal(stdout.trim(), `parastep ${config.version}`);
});
