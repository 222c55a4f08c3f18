/**
 * `parastep serve` and `parastep info --nats`: the CLI side of several hosts
 * (docs/multihost.md).
 *
 * @module
 */

import { modelsDir } from "../models/registry.ts";
import { connectNats, readCredsFile } from "../parastep/nats/connect.ts";
import type { HostInfo } from "../parastep/nats/control.ts";
import { discoverHosts } from "../pipelines/multihost/engine.ts";
import { ServeHost } from "../pipelines/multihost/host.ts";
import type { InfoCommand, NatsFlags, ServeCommand } from "./args.ts";
import { printLine } from "./print.ts";

/** The credentials file's text, when `--nats-creds` was given. */
export function credsOf(flags: NatsFlags): { creds?: string } {
  return flags.creds === undefined ? {} : { creds: readCredsFile(flags.creds) };
}

/** The host name `serve` uses: `--name`, else the hostname cut to a subject token. */
function hostName(command: ServeCommand): string {
  if (command.name !== undefined) return command.name;
  const name = Deno.hostname().split(".")[0]!.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64);
  return name === "" ? "host" : name;
}

/**
 * Run `serve` until SIGINT or SIGTERM, then stop cleanly (the generation in progress is aborted,
 * its coordinator told) and resolve with exit code 0.
 */
export async function runServe(command: ServeCommand, version: string): Promise<number> {
  const dir = command.models ?? modelsDir();
  try {
    if (!Deno.statSync(dir).isDirectory) throw new Error();
  } catch {
    throw new RangeError(`Cannot serve as --models ${dir} is not a folder`);
  }
  const host = await ServeHost.start({
    url: command.url,
    ...credsOf(command),
    name: hostName(command),
    devices: command.gpus,
    ep: command.ep,
    modelsDir: dir,
    version,
    verbose: command.verbose,
    log: printLine,
  });
  const info = host.info();
  printLine(
    `parastep serve: host ${info.name} serving ${info.devices.length} ${command.ep} device` +
      `${info.devices.length === 1 ? "" : "s"} and ${info.models.length} model` +
      `${info.models.length === 1 ? "" : "s"} (${dir}) on NATS; Ctrl-C to stop`,
  );
  const stop = Promise.withResolvers<string>();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const handlers = signals.map((signal) => {
    const handler = () => stop.resolve(signal);
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  const ended = await Promise.race([
    stop.promise,
    host.closed().then(() => "the NATS connection closed"),
  ]);
  for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  await host.stop();
  printLine(`parastep serve: stopped (${ended})`);
  return ended.startsWith("SIG") ? 0 : 1;
}

/** `info --nats`: every serving host, as text or JSON. */
export async function runInfoNats(command: InfoCommand & { nats: NatsFlags }): Promise<void> {
  const connection = await connectNats(command.nats.url, {
    name: "parastep info",
    ...credsOf(command.nats),
  });
  let hosts: HostInfo[];
  try {
    hosts = await discoverHosts(connection);
  } finally {
    await connection.close();
  }
  printLine(command.json ? JSON.stringify({ hosts }, null, 2) : formatHosts(hosts));
}

/** The hosts as text. */
export function formatHosts(hosts: readonly HostInfo[]): string {
  if (hosts.length === 0) return "No host is serving on this NATS server (start 'parastep serve')";
  return hosts.map((h) => {
    const devices = h.devices.map((d) => `${d.ep}:${d.index}${d.busy ? " (busy)" : ""}`);
    const models = h.models.map((m) =>
      `    ${m.name} (${m.family}, ${m.dtype}) hash ${m.hash.slice(0, 16)}`
    );
    return `host ${h.name}: parastep ${h.version}, ${h.cores} cores, devices ${
      devices.join(", ")
    }\n  models:\n${models.join("\n") || "    none"}`;
  }).join("\n");
}
