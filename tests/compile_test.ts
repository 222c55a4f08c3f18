import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

/** Where `deno compile` would find its denort runtime without the internet, if anywhere. */
async function denortSource(): Promise<string | undefined> {
  const fromEnv = Deno.env.get("DENORT_BIN");
  if (fromEnv) {
    return (await Deno.stat(fromEnv).catch(() => undefined))?.isFile ? fromEnv : undefined;
  }
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
  })
    .output();
  const denoDir = JSON.parse(new TextDecoder().decode(info.stdout)).denoDir as string;
  const zip = `${denoDir}/dl/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`;
  return (await Deno.stat(zip).catch(() => undefined))?.isFile ? zip : undefined;
}

const denort = await denortSource();
if (denort === undefined) {
  console.log(
    "compile test skipped: deno compile needs its denort runtime, which is neither named by " +
      "DENORT_BIN nor cached in DENO_DIR, and downloading it needs the internet",
  );
}

Deno.test({
  name: "the compiled executable runs info and gen on the embedded model",
  ignore: denort === undefined,
  async fn() {
    const built = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(built.code, 0, new TextDecoder().decode(built.stderr));
    const exe = `${ROOT}dist/parastep`;
    const dir = await Deno.makeTempDir();
    try {
      // Run from elsewhere, without the checkout's env: the library sits beside the executable.
      const info = await new Deno.Command(exe, {
        args: ["info", "--json"],
        cwd: dir,
        stdout: "piped",
      })
        .output();
      assert.equal(info.code, 0);
      const report = JSON.parse(new TextDecoder().decode(info.stdout));
      assert.equal(report.ort.foundBy, "beside-executable");
      assert.ok(report.models.some((m: { name: string }) => m.name === "audioldm2-tiny"));
      const gen = await new Deno.Command(exe, {
        args: ["gen", "--prompt", "rain", "--ep", "cpu", "--steps", "3", "--out", `${dir}/x.wav`],
        cwd: dir,
      }).output();
      assert.equal(gen.code, 0);
      assert.ok((await Deno.stat(`${dir}/x.wav`)).size > 44);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
