/**
 * Running the CLI as a user does: `deno run` of main.ts in a child process.
 *
 * @module
 */

import { GEN_PERMISSIONS } from "../../src/cli/bench_e2e.ts";

/** main.ts of this checkout. */
export const MAIN: string = new URL("../../main.ts", import.meta.url).pathname;

/** The permissions the `gen` task grants. */
export const PERMISSIONS: readonly string[] = GEN_PERMISSIONS;

/** Runs `parastep ...args` and returns its exit code and output. */
export async function parastep(
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, ...args],
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: options.env } : {}),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/**
 * The ids of running processes whose command line contains `marker` (Linux): `[]` once a child
 * and everything it started are gone. A shell lists every command line, so the tests need no read
 * access to /proc; the marker is matched here, so it is on no command line of the listing itself.
 */
export async function processesWith(marker: string): Promise<number[]> {
  const list = 'for f in /proc/[0-9]*/cmdline; do echo "${f#/proc/} $(tr "\\0" " " < "$f")"; done';
  const out = await new Deno.Command("sh", {
    args: ["-c", `${list} 2>/dev/null; true`],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n")
    .filter((line) => line.includes(marker))
    .map((line) => Number.parseInt(line, 10));
}
