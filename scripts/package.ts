/**
 * `deno task package`: builds `dist/parastep`, one self-contained executable
 * for Linux x86-64 that runs offline on a machine with neither Deno nor Node:
 * a POSIX sh launcher (scripts/launcher.sh) followed by an xz-compressed tar
 * of
 *
 * - `bin/deno`: the Deno binary running this script (the npm package `deno`),
 * - `lib/libonnxruntime.so.1`: the library parastep loads (onnxruntime-node's),
 * - `app/`: main.ts, deno.json, src/, ffi/, the npm packages main.ts imports
 *   (with their dependencies, from node_modules) and models/audioldm2-tiny.
 *
 * The launcher unpacks it on first start into a cache folder named by the
 * payload's SHA-256 and runs `deno run` there (see the launcher's header).
 * `deno compile` would be the natural tool, but it needs its `denort` runtime,
 * which only the internet has (docs: README, "Standalone executable").
 *
 * Usage: deno task package [--out dist/parastep] [--xz-level 0-9]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { libraryCandidates } from "../ffi/mod.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");

/** The files and folders of the checkout that parastep reads at run time, under `app/`. */
export const APP_FILES: readonly string[] = [
  "main.ts",
  "deno.json",
  "src",
  "ffi",
  "models/audioldm2-tiny",
];

/** A packaging step that cannot go on: one line naming the problem. */
export class PackageError extends Error {
  override name = "PackageError";
}

/**
 * The npm packages the app imports (deno.json's `npm:` imports) and, from
 * their `package.json` in `nodeModules`, everything they depend on.
 */
export function runtimePackages(
  denoJson: { imports?: Record<string, string> },
  nodeModules: string,
): string[] {
  const wanted = new Set<string>();
  const visit = (name: string) => {
    if (wanted.has(name)) return;
    let pkg: { dependencies?: Record<string, string> };
    try {
      pkg = JSON.parse(Deno.readTextFileSync(`${nodeModules}/${name}/package.json`));
    } catch {
      throw new PackageError(
        `Cannot package as ${nodeModules}/${name}/package.json cannot be read: run \`npm ci\` first`,
      );
    }
    wanted.add(name);
    for (const dep of Object.keys(pkg.dependencies ?? {})) visit(dep);
  };
  for (const target of Object.values(denoJson.imports ?? {})) {
    const m = /^npm:\/?((?:@[^/]+\/)?[^@/]+)/.exec(target);
    if (m) visit(m[1]!);
  }
  return [...wanted].sort();
}

/** The app's package.json: its npm imports (deno.json's `npm:name@version`) as dependencies. */
export function appPackageJson(denoJson: { imports?: Record<string, string> }): {
  name: string;
  private: true;
  type: "module";
  dependencies: Record<string, string>;
} {
  const dependencies: Record<string, string> = {};
  for (const target of Object.values(denoJson.imports ?? {})) {
    const m = /^npm:\/?((?:@[^/]+\/)?[^@/]+)@([^/]+)/.exec(target);
    if (m) dependencies[m[1]!] = m[2]!;
  }
  return { name: "parastep-app", private: true, type: "module", dependencies };
}

async function run(cmd: string, args: string[], options: Deno.CommandOptions = {}): Promise<void> {
  let out;
  try {
    out = await new Deno.Command(cmd, { args, stderr: "piped", ...options }).output();
  } catch (e) {
    throw new PackageError(`Cannot package as ${cmd} cannot be run: ${(e as Error).message}`);
  }
  if (!out.success) {
    throw new PackageError(
      `Cannot package as \`${cmd} ${args.join(" ")}\` failed: ${
        new TextDecoder().decode(out.stderr).trim()
      }`,
    );
  }
}

/** Copies the folder or file `from` to `to` (`cp -a`, which keeps modes). */
function copy(from: string, to: string): Promise<void> {
  Deno.mkdirSync(to.slice(0, to.lastIndexOf("/")), { recursive: true });
  return run("cp", ["-a", from, to]);
}

/** The first 128 bits of the SHA-256 of `bytes`, in hex: plenty to name a cache folder. */
async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest, 0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Options of {@linkcode buildPackage}. */
export interface PackageOptions {
  /** The executable to write. @default {"dist/parastep"} */
  out?: string;
  /** xz's preset: 0 is fast (tests), 9 small. @default {6} */
  xzLevel?: number;
}

/** What {@linkcode buildPackage} wrote. */
export interface PackageResult {
  /** The executable. */
  readonly path: string;
  /** Its size in bytes. */
  readonly bytes: number;
  /** The payload's SHA-256, which names its cache folder. */
  readonly hash: string;
}

/** Builds the executable. */
export async function buildPackage(options: PackageOptions = {}): Promise<PackageResult> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    throw new PackageError(
      `Cannot package on ${Deno.build.os} ${Deno.build.arch}: the package bundles this Deno and ` +
        "ONNX Runtime, and is built for Linux x86-64 on Linux x86-64",
    );
  }
  const level = options.xzLevel ?? 6;
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new RangeError(
      `Cannot package as 'xzLevel' must be an integer 0-9: current value is ${level}`,
    );
  }
  const out = options.out ?? `${ROOT}/dist/parastep`;
  const outDir = out.includes("/") ? out.slice(0, out.lastIndexOf("/")) || "/" : ".";
  Deno.mkdirSync(outDir, { recursive: true });
  const library = libraryCandidates().find((c) => {
    try {
      return Deno.statSync(c.path).isFile;
    } catch {
      return false;
    }
  });
  if (library === undefined) {
    throw new PackageError(
      "Cannot package as no libonnxruntime.so.1 was found: run `npm ci` first",
    );
  }
  const stage = Deno.makeTempDirSync({ dir: outDir, prefix: ".package-" });
  try {
    await copy(Deno.execPath(), `${stage}/bin/deno`);
    await copy(library.path, `${stage}/lib/libonnxruntime.so.1`);
    for (const f of APP_FILES) await copy(`${ROOT}/${f}`, `${stage}/app/${f}`);
    const denoJson = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`));
    for (const name of runtimePackages(denoJson, `${ROOT}/node_modules`)) {
      await copy(`${ROOT}/node_modules/${name}`, `${stage}/app/node_modules/${name}`);
    }
    // Without a package.json of its own naming its dependencies, Deno takes the nearest one
    // above the unpacked folder (a cache inside some project) as the root whose node_modules
    // it resolves npm imports from.
    Deno.writeTextFileSync(
      `${stage}/app/package.json`,
      JSON.stringify(appPackageJson(denoJson), null, 2) + "\n",
    );
    // Sorted names, fixed owners and times: the same inputs give the same bytes and hash.
    const payload = `${stage}.tar.xz`;
    await run("sh", [
      "-c",
      'tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf - bin lib app ' +
      '| xz -T0 "-$2" -c > "$3"',
      "sh",
      stage,
      String(level),
      payload,
    ]);
    try {
      const bytes = Deno.readFileSync(payload);
      const hash = await sha256(bytes);
      const launcher = new TextEncoder().encode(
        Deno.readTextFileSync(`${ROOT}/scripts/launcher.sh`)
          .replaceAll("@VERSION@", String(denoJson.version))
          .replaceAll("@SIZE@", String(bytes.length))
          .replaceAll("@HASH@", hash),
      );
      const whole = new Uint8Array(launcher.length + bytes.length);
      whole.set(launcher);
      whole.set(bytes, launcher.length);
      const tmp = `${out}.ps-${crypto.randomUUID().slice(0, 8)}.tmp`;
      try {
        Deno.writeFileSync(tmp, whole, { mode: 0o755 });
        Deno.chmodSync(tmp, 0o755);
        Deno.renameSync(tmp, out);
      } catch (e) {
        Deno.removeSync(tmp, { recursive: true });
        throw e;
      }
      return { path: out, bytes: whole.length, hash };
    } finally {
      Deno.removeSync(payload);
    }
  } finally {
    Deno.removeSync(stage, { recursive: true });
  }
}

if (import.meta.main) {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: { out: { type: "string" }, "xz-level": { type: "string", default: "6" } },
    }));
  } catch (e) {
    console.error(`package: ${(e as Error).message}`);
    Deno.exit(2);
  }
  try {
    const r = await buildPackage({
      ...(values.out === undefined ? {} : { out: values.out }),
      xzLevel: Number(values["xz-level"]),
    });
    console.log(`${r.path}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB, payload ${r.hash}`);
  } catch (e) {
    if (!(e instanceof PackageError || e instanceof RangeError)) throw e;
    console.error(`package: ${e.message}`);
    Deno.exit(1);
  }
}
