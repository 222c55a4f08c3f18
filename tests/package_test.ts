/**
 * `deno task package`: the single-file executable, run as on a fresh machine
 * (no environment but HOME, from an empty folder, so no Deno, Node or
 * checkout is reachable through PATH or the working folder).
 */
import assert from "node:assert/strict";

import { parastep } from "./support/cli.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);

async function found(tool: string): Promise<boolean> {
  try {
    return (await new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" })
      .output()).success;
  } catch {
    return false;
  }
}
const missing = [];
for (const tool of ["xz", "tar"]) if (!(await found(tool))) missing.push(tool);
if (missing.length > 0) {
  console.log(
    `package test skipped: ${missing.join(" and ")} not installed (the launcher needs them)`,
  );
}

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** Runs the executable under `env -i` with only `env`, from `cwd`. */
async function runPackaged(exe: string, args: string[], cwd: string, env: Record<string, string>) {
  const out = await new Deno.Command("env", {
    args: ["-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), exe, ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

async function entries(dir: string): Promise<string[]> {
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

Deno.test({
  name: "the package runs info and gen --gpus 2 from an empty folder with no environment but HOME",
  ignore: missing.length > 0,
  sanitizeResources: false,
  async fn(t) {
    const tmp = await Deno.makeTempDir({ prefix: "parastep-package-" });
    try {
      const exe = `${tmp}/dist/parastep`;
      const built = await new Deno.Command(Deno.execPath(), {
        args: ["task", "package", "--out", exe, "--xz-level", "0"],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(built.code, 0, decode(built.stderr));
      const head = decode((await Deno.readFile(exe)).subarray(0, 10));
      assert.equal(head, "#!/bin/sh\n");
      assert.ok(((await Deno.stat(exe)).mode! & 0o111) !== 0, "executable");

      const home = `${tmp}/home`;
      const empty = `${tmp}/empty`;
      await Deno.mkdir(home);
      await Deno.mkdir(empty);

      await t.step(
        "info: the bundled library and model, unpacked once under ~/.cache",
        async () => {
          const r = await runPackaged(exe, ["info", "--json"], empty, { HOME: home });
          assert.equal(r.code, 0, r.stderr);
          const report = JSON.parse(r.stdout);
          const cached = await entries(`${home}/.cache/parastep`);
          assert.equal(cached.length, 1, `one folder, no leftovers: ${cached}`);
          assert.match(cached[0]!, /^[0-9a-f]{32}$/);
          const dir = `${home}/.cache/parastep/${cached[0]}`;
          assert.equal(report.ort.path, `${dir}/lib/libonnxruntime.so.1`);
          assert.equal(report.ort.foundBy, "env");
          assert.deepEqual(
            report.models.map((m: { name: string; path: string }) => [m.name, m.path]),
            [["audioldm2-tiny", `${dir}/app/models/audioldm2-tiny`]],
          );
        },
      );

      await t.step("gen --gpus 2 writes the same WAV, bit for bit, as the checkout", async () => {
        const args = [
          "gen",
          "--prompt",
          "rain",
          "--gpus",
          "2",
          "--ep",
          "cpu",
          "--steps",
          "8",
          "--warmup",
          "2",
        ];
        const r = await runPackaged(exe, [...args, "--out", "rain.wav"], empty, { HOME: home });
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /ParaStep on 2 devices/);
        assert.deepEqual(await entries(empty), ["rain.wav"]);
        // The graph cache lives beside the unpacked folders, so it outlives an upgrade.
        assert.ok((await entries(`${home}/.cache/parastep/ort/graphs`)).length >= 5);
        const reference = await parastep([...args, "--out", `${tmp}/reference.wav`]);
        assert.equal(reference.code, 0, reference.stderr);
        assert.deepEqual(
          await Deno.readFile(`${empty}/rain.wav`),
          await Deno.readFile(`${tmp}/reference.wav`),
        );
      });

      await t.step(
        "three concurrent first starts unpack one folder, leaving nothing else",
        async () => {
          const cache = `${tmp}/xdg`;
          const runs = await Promise.all(
            [0, 1, 2].map(() =>
              runPackaged(exe, ["--version"], empty, { HOME: home, XDG_CACHE_HOME: cache })
            ),
          );
          for (const r of runs) {
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stdout, "parastep 0.1.0\n");
          }
          const cached = await entries(`${cache}/parastep`);
          assert.equal(cached.length, 1, `one folder, no leftovers: ${cached}`);
          const inside = await entries(`${cache}/parastep/${cached[0]}`);
          assert.deepEqual(inside.filter((n) => n.startsWith(".unpack.")), []);
        },
      );

      await t.step(
        "a cache inside a project that names the same npm packages still resolves",
        async () => {
          // As on a GPU host whose checkout (package.json, no node_modules) holds the cache.
          const project = `${tmp}/project`;
          await Deno.mkdir(`${project}/sub`, { recursive: true });
          await Deno.copyFile(`${ROOT}package.json`, `${project}/package.json`);
          const r = await runPackaged(exe, ["--version"], `${project}/sub`, {
            HOME: home,
            XDG_CACHE_HOME: `${project}/cache`,
          });
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stdout, "parastep 0.1.0\n");
        },
      );

      await t.step("a damaged file and a missing HOME each get one line, exit code 1", async () => {
        const bytes = await Deno.readFile(exe);
        const damaged = `${tmp}/damaged`;
        await Deno.writeFile(damaged, bytes.subarray(0, bytes.length - 4096), { mode: 0o755 });
        const cache = `${tmp}/damaged-cache`;
        const r = await runPackaged(damaged, ["--version"], empty, { XDG_CACHE_HOME: cache });
        assert.equal(r.code, 1);
        assert.equal(
          r.stderr.trim().split("\n").at(-1),
          `parastep: cannot unpack ${damaged} into ${cache}/parastep (damaged file, or disk full?)`,
        );
        assert.deepEqual(await entries(`${cache}/parastep`), []);
        const noHome = await runPackaged(exe, ["--version"], empty, {});
        assert.equal(noHome.code, 1);
        assert.equal(
          noHome.stderr,
          "parastep: set HOME or XDG_CACHE_HOME: the package unpacks into a cache folder there\n",
        );
      });
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
