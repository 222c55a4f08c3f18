/**
 * The CUDA setup and the CUDA part of `info` on a machine without a GPU: the
 * missing pieces are named for real (no providers, no driver), and the rest
 * runs against stand-in libraries (tests/support/fake_cuda.ts) with the real
 * sonames and dependency edges.
 */
import assert from "node:assert/strict";

import { libraryCandidates } from "../../ffi/mod.ts";
import { parastep } from "../support/cli.ts";
import { buildFakeCuda, type FakeCuda, haveCompiler } from "../support/fake_cuda.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const compiler = await haveCompiler();
if (!compiler) console.log("CUDA setup tests with stand-in libraries skipped: no C compiler (cc)");

/** The npm package's library, which every test links into its own folder. */
function npmLibrary(): string {
  const c = libraryCandidates().find((c) => c.foundBy === "npm-package" && isFile(c.path));
  assert.ok(c, "npm ci first");
  return c.path;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

interface CudaReport {
  providerDir: string;
  needs: string[];
  libraries: { name: string; path: string }[];
  runtimeVersion?: string;
  driverVersion?: string;
  devices: { index: number; name: string; totalMemoryBytes: number; computeCapability: string }[];
  problems: string[];
  warnings: string[];
}

async function info(env: Record<string, string>) {
  const r = await parastep(["info", "--json"], { env });
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  return {
    cuda: report.cuda as CudaReport,
    probe: report.providers.find((p: { ep: string }) => p.ep === "cuda"),
    ort: report.ort,
  };
}

async function setup(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "setup:cuda", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("without the providers, info names the missing file and the command that installs it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.symlink(npmLibrary(), `${dir}/libonnxruntime.so.1`);
    const { cuda, probe, ort } = await info({ PARASTEP_CUDA_PROVIDERS: dir });
    assert.equal(ort.foundBy, "cuda-providers");
    assert.equal(ort.path, `${dir}/libonnxruntime.so.1`);
    const expected =
      `${dir}/libonnxruntime_providers_shared.so is missing: run \`deno task setup:cuda\``;
    assert.ok(probe.reason.startsWith(expected), probe.reason);
    assert.ok(cuda.problems[0]!.startsWith(expected), cuda.problems[0]);
    // No driver on a build host: named, not hidden behind the first problem.
    assert.match(
      cuda.problems[1]!,
      /^libcuda\.so\.1 \(the NVIDIA driver's CUDA library\) cannot be loaded/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a PARASTEP_CUDA_PROVIDERS folder without the library is one line naming the fix", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await parastep(["info"], { env: { PARASTEP_CUDA_PROVIDERS: dir } });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      `parastep: Cannot load ONNX Runtime as PARASTEP_CUDA_PROVIDERS names a folder without ` +
        `libonnxruntime.so.1: ${dir}/libonnxruntime.so.1 does not exist (run \`deno task setup:cuda --dir ${dir}\`)`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs `fn` with a fake install and a providers folder set up from it by `setup:cuda`. */
async function withSetup(fn: (fake: FakeCuda, dir: string) => Promise<void>): Promise<void> {
  const fake = await buildFakeCuda();
  try {
    const dir = `${fake.root}/out`;
    const r = await setup([
      "--providers-from",
      fake.providers,
      "--cuda-libs",
      fake.nvidia,
      "--dir",
      dir,
    ]);
    assert.equal(r.code, 0, r.stderr);
    await fn(fake, dir);
  } finally {
    await Deno.remove(fake.root, { recursive: true });
  }
}

Deno.test({
  name: "setup:cuda records the provider's CUDA libraries in dependency order, cuDNN as lazy",
  ignore: !compiler,
  fn: () =>
    withSetup(async (fake, dir) => {
      for (const f of ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"]) {
        assert.ok(isFile(`${dir}/${f}`), f);
      }
      assert.ok(isFile(`${dir}/libonnxruntime.so.1`), "the library is copied beside the providers");
      const setupFile = JSON.parse(await Deno.readTextFile(`${dir}/parastep-cuda.json`));
      assert.equal(setupFile.format, 1);
      assert.equal(setupFile.ortVersion, (await info({})).ort.version);
      const names = setupFile.libraries.map((l: { name: string }) => l.name);
      // Exactly the provider's CUDA DT_NEEDED less the driver; cuBLASLt before cuBLAS, which needs it.
      assert.deepEqual(
        [...names].sort(),
        ["libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13", "libcurand.so.10"],
      );
      assert.ok(names.indexOf("libcublasLt.so.13") < names.indexOf("libcublas.so.13"));
      assert.deepEqual(
        setupFile.lazy.map((l: { name: string }) => l.name),
        ["libcudnn_graph.so.9", "libcudnn.so.9"],
      );
      for (const l of [...setupFile.libraries, ...setupFile.lazy]) {
        assert.ok(l.path.startsWith(`${fake.nvidia}/`), l.path);
        assert.ok(l.path.endsWith(`/${l.name}`), l.path);
      }
    }),
});

Deno.test({
  name: "info loads the recorded libraries by path and stops at the missing driver, naming it",
  ignore: !compiler,
  fn: () =>
    withSetup(async (_fake, dir) => {
      const { cuda, probe } = await info({ PARASTEP_CUDA_PROVIDERS: dir });
      // The stand-in runtime answers 13020: it was opened from the recorded path (it is on no
      // loader path), and cudaRuntimeGetVersion was called through it.
      assert.equal(cuda.runtimeVersion, "13.2");
      assert.equal(cuda.driverVersion, undefined);
      assert.deepEqual(cuda.devices, []);
      assert.equal(cuda.libraries.length, 6);
      assert.equal(cuda.problems.length, 1);
      assert.match(
        cuda.problems[0]!,
        /^libcuda\.so\.1 \(the NVIDIA driver's CUDA library\) cannot be loaded: libcuda\.so\.1: cannot open shared object file: No such file or directory; install the NVIDIA driver/,
      );
      assert.equal(probe.ok, false);
      assert.equal(probe.reason, cuda.problems[0]);
    }),
});

Deno.test({
  name: "with a driver, info lists each device's name, memory and compute capability",
  ignore: !compiler,
  fn: () =>
    withSetup(async (fake, dir) => {
      const { cuda, probe } = await info({
        PARASTEP_CUDA_PROVIDERS: dir,
        LD_LIBRARY_PATH: fake.driver,
      });
      assert.deepEqual(cuda.problems, []);
      assert.equal(cuda.runtimeVersion, "13.2");
      assert.equal(cuda.driverVersion, "13.0");
      assert.deepEqual(cuda.devices, [
        { index: 0, name: "Fake GPU A", totalMemoryBytes: 80 * 2 ** 30, computeCapability: "9.0" },
        { index: 1, name: "Fake GPU B", totalMemoryBytes: 160 * 2 ** 30, computeCapability: "9.0" },
      ]);
      // Everything parastep checks passed, so ORT itself loaded the providers from `dir` and
      // refused the stand-in (it has no Provider_SetHost): its own message is reported.
      assert.equal(probe.ok, false);
      assert.match(
        probe.reason,
        new RegExp(
          `${dir}/libonnxruntime_providers_shared\\.so: undefined symbol: Provider_SetHost`,
        ),
      );
      const text = await parastep(["info"], {
        env: { PARASTEP_CUDA_PROVIDERS: dir, LD_LIBRARY_PATH: fake.driver },
      });
      assert.match(
        text.stdout,
        /\n {2}device 1: Fake GPU B, 160\.0 GiB, compute capability 9\.0\n/,
      );
      assert.match(text.stdout, /\n {2}runtime 13\.2, driver supports CUDA 13\.0/);
    }),
});

Deno.test({
  name: "a recorded library that went away is named with its path and the fix",
  ignore: !compiler,
  fn: () =>
    withSetup(async (fake, dir) => {
      const gone = `${fake.nvidia}/cu13/lib/libcurand.so.10`;
      await Deno.remove(gone);
      const { cuda } = await info({ PARASTEP_CUDA_PROVIDERS: dir });
      assert.equal(
        cuda.problems[0],
        `${gone} (libcurand.so.10, recorded in ${dir}/parastep-cuda.json) is missing: ` +
          "run `deno task setup:cuda` again",
      );
    }),
});

Deno.test({
  name: "setup:cuda refuses CUDA folders that lack a library the provider needs, naming it",
  ignore: !compiler,
  async fn() {
    const fake = await buildFakeCuda();
    try {
      await Deno.remove(`${fake.nvidia}/cu13/lib/libcublas.so.13`);
      const r = await setup([
        "--providers-from",
        fake.providers,
        "--cuda-libs",
        fake.nvidia,
        "--dir",
        `${fake.root}/out`,
      ]);
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr.trim().split("\n").at(-1),
        `setup:cuda: Cannot set up CUDA as libcublas.so.13 is not under ${fake.nvidia}: install the ` +
          "CUDA 13 libraries there (pip install 'onnxruntime-gpu[cuda,cudnn]' brings them) or leave out --cuda-libs",
      );
      assert.ok(!isFile(`${fake.root}/out/parastep-cuda.json`));
    } finally {
      await Deno.remove(fake.root, { recursive: true });
    }
  },
});
