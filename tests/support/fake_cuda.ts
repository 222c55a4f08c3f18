/**
 * A CUDA install in miniature for tests on a machine without a GPU: stand-in
 * libraries (tests/fixtures/fake_cuda/fake_cuda.c) with the real sonames and
 * dependency edges, laid out as the CUDA 13 wheels lay them out, plus a fake
 * NVIDIA driver and fake ONNX Runtime provider libraries.
 *
 * @module
 */

const SOURCE = decodeURIComponent(
  new URL("../fixtures/fake_cuda/fake_cuda.c", import.meta.url).pathname,
);

/** Where the pieces of the fake install are. */
export interface FakeCuda {
  /** The temporary folder holding everything. */
  readonly root: string;
  /** Like a venv's `site-packages/nvidia`: `cu13/lib` and `cudnn/lib`. */
  readonly nvidia: string;
  /** Holds the two fake provider libraries. */
  readonly providers: string;
  /** Holds the fake driver `libcuda.so.1` (put it on `LD_LIBRARY_PATH` to "install a driver"). */
  readonly driver: string;
}

/** Whether a C compiler is there to build the fakes; a test skips, saying so, without one. */
export async function haveCompiler(): Promise<boolean> {
  try {
    return (await new Deno.Command("cc", { args: ["--version"], stdout: "null", stderr: "null" })
      .output()).success;
  } catch {
    return false;
  }
}

async function cc(out: string, soname: string, define: string, libs: string[]): Promise<void> {
  const r = await new Deno.Command("cc", {
    args: [
      "-shared",
      "-fPIC",
      "-o",
      out,
      `-Wl,-soname,${soname}`,
      `-D${define}`,
      SOURCE,
      // Keep every DT_NEEDED although the stand-ins call nothing in them.
      "-Wl,--no-as-needed",
      ...libs,
    ],
    stderr: "piped",
  }).output();
  if (!r.success) throw new Error(`cc failed for ${out}: ${new TextDecoder().decode(r.stderr)}`);
}

/** Builds the fake install in a new temporary folder (the caller removes `root`). */
export async function buildFakeCuda(): Promise<FakeCuda> {
  const root = await Deno.makeTempDir({ prefix: "parastep-fake-cuda-" });
  const nvidia = `${root}/site-packages/nvidia`;
  const cu13 = `${nvidia}/cu13/lib`;
  const cudnn = `${nvidia}/cudnn/lib`;
  const providers = `${root}/providers`;
  const driver = `${root}/driver`;
  for (const d of [cu13, cudnn, providers, driver]) await Deno.mkdir(d, { recursive: true });
  const lib = (dir: string, name: string) => [`-L${dir}`, `-l:${name}`];
  await cc(`${driver}/libcuda.so.1`, "libcuda.so.1", "FAKE_DRIVER", []);
  await cc(`${cu13}/libcudart.so.13`, "libcudart.so.13", "FAKE_CUDART", []);
  await cc(`${cu13}/libcublasLt.so.13`, "libcublasLt.so.13", "FAKE_OTHER", []);
  // cuBLAS needs cuBLASLt, so the setup must list it after cuBLASLt.
  await cc(
    `${cu13}/libcublas.so.13`,
    "libcublas.so.13",
    "FAKE_OTHER",
    lib(cu13, "libcublasLt.so.13"),
  );
  await cc(`${cu13}/libcurand.so.10`, "libcurand.so.10", "FAKE_OTHER", []);
  await cc(`${cudnn}/libcudnn_graph.so.9`, "libcudnn_graph.so.9", "FAKE_OTHER", []);
  await cc(
    `${cudnn}/libcudnn.so.9`,
    "libcudnn.so.9",
    "FAKE_OTHER",
    lib(cudnn, "libcudnn_graph.so.9"),
  );
  await cc(
    `${providers}/libonnxruntime_providers_shared.so`,
    "libonnxruntime_providers_shared.so",
    "FAKE_OTHER",
    [],
  );
  // The real provider's DT_NEEDED, in its order (ORT 1.30.0's libonnxruntime_providers_cuda.so).
  await cc(
    `${providers}/libonnxruntime_providers_cuda.so`,
    "libonnxruntime_providers_cuda.so",
    "FAKE_OTHER",
    [
      ...lib(cu13, "libcublasLt.so.13"),
      ...lib(cu13, "libcublas.so.13"),
      ...lib(cu13, "libcurand.so.10"),
      ...lib(cu13, "libcudart.so.13"),
      ...lib(driver, "libcuda.so.1"),
    ],
  );
  return { root, nvidia, providers, driver };
}
