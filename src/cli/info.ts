/**
 * `parastep info`.
 *
 * @module
 */

import {
  AUTO_ORDER,
  autoPrecheck,
  compiledProviders,
  type CudaInfo,
  cudaInfo,
  Env,
  type ExecutionProvider,
  ortLibrary,
  probeProvider,
  type ProviderAttempt,
} from "../../ffi/mod.ts";
import { CACHE_DIR } from "../models/model.ts";
import { listModels, type ModelEntry, modelsDir } from "../models/registry.ts";
import type { InfoCommand } from "./args.ts";
import { printLine } from "./print.ts";

/** Everything `info` reports. */
export interface InfoReport {
  readonly parastep: string;
  readonly ort: {
    readonly version: string;
    readonly path: string;
    readonly foundBy: string;
    readonly apiVersion: number;
    readonly build: string;
  };
  readonly providersCompiledIn: readonly string[];
  readonly providers: readonly ProviderAttempt[];
  readonly auto: ExecutionProvider;
  /** Usable providers `auto` passes over, with the reason (a software Vulkan renderer). */
  readonly autoSkips: readonly { readonly ep: ExecutionProvider; readonly reason: string }[];
  /** The CUDA provider's libraries, runtime, driver and devices, or what is missing. */
  readonly cuda: CudaInfo;
  readonly cpuCores: number;
  readonly modelsDir: string;
  /** Where the exporter writes models that are never committed (`--size bench`, real sizes). */
  readonly cacheModelsDir: string;
  readonly models: readonly ModelEntry[];
  /** The models found in {@linkcode InfoReport.cacheModelsDir}. */
  readonly cacheModels: readonly ModelEntry[];
}

/** Gathers the report (loads ORT, probes each provider). */
export function gatherInfo(version: string, verbose: boolean): InfoReport {
  const lib = ortLibrary();
  using _env = Env.create({ logLevel: verbose ? "warning" : "error" });
  const providers = AUTO_ORDER.map((ep) => probeProvider(ep, { quiet: !verbose }));
  const autoSkips = providers.flatMap((p) => {
    const reason = p.ok ? autoPrecheck(p.ep) : undefined;
    return reason === undefined ? [] : [{ ep: p.ep, reason }];
  });
  const auto = providers.find((p) => p.ok && !autoSkips.some((s) => s.ep === p.ep))?.ep ?? "cpu";
  return {
    parastep: version,
    ort: {
      version: lib.version,
      path: lib.path,
      foundBy: lib.foundBy,
      apiVersion: lib.apiVersion,
      build: lib.buildInfo,
    },
    providersCompiledIn: compiledProviders(),
    providers,
    auto,
    autoSkips,
    cuda: cudaInfo(),
    cpuCores: navigator.hardwareConcurrency,
    modelsDir: modelsDir(),
    models: listModels(),
    cacheModelsDir: CACHE_DIR,
    cacheModels: listModels(CACHE_DIR),
  };
}

function mb(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

function modelLines(dir: string, models: readonly ModelEntry[]): string[] {
  return [
    `Models in ${dir}:`,
    ...(models.length === 0
      ? ["  (none)"]
      : models.map((m) => `  ${m.name.padEnd(20)} ${m.family}, ${m.dtype}, ${mb(m.bytes)}`)),
  ];
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** The CUDA lines of `info`: where the providers are, versions, devices, then what is missing. */
export function formatCuda(c: CudaInfo): string[] {
  const cudaMajor = /libcudart\.so\.(\d+)/.exec(c.needs.join(" "))?.[1];
  return [
    `CUDA: providers in ${c.providerDir}${c.providers ? `, ${c.providers}` : ""}${
      cudaMajor ? `, built for CUDA ${cudaMajor}` : ""
    }`,
    `  runtime ${c.runtimeVersion ?? "not loaded"}, driver ${
      c.driverVersion === undefined
        ? "not loaded"
        : `supports CUDA ${c.driverVersion}${c.driverRelease ? ` (${c.driverRelease})` : ""}`
    }`,
    ...c.devices.map((d) =>
      `  device ${d.index}: ${d.name}, ${
        gib(d.totalMemoryBytes)
      }, compute capability ${d.computeCapability}`
    ),
    ...c.problems.map((p) => `  missing: ${p}`),
    ...c.warnings.map((w) => `  warning: ${w}`),
  ];
}

/** Renders the report as the text `info` prints. */
export function formatInfo(r: InfoReport): string {
  const lines = [
    `parastep ${r.parastep}`,
    `ONNX Runtime ${r.ort.version} (OrtApi ${r.ort.apiVersion}) from ${r.ort.path} [${r.ort.foundBy}]`,
    `  ${r.ort.build}`,
    `Execution providers compiled in: ${r.providersCompiledIn.join(", ")}`,
    ...r.providers.map((p) =>
      `  ${p.ep.padEnd(7)} ${p.ok ? "usable" : `unavailable: ${p.reason}`}`
    ),
    `  --ep auto picks: ${r.auto}${r.autoSkips.map((s) => ` (not ${s.ep}: ${s.reason})`).join("")}`,
    ...formatCuda(r.cuda),
    `CPU cores: ${r.cpuCores}`,
    ...modelLines(r.modelsDir, r.models),
    ...modelLines(r.cacheModelsDir, r.cacheModels),
  ];
  return lines.join("\n");
}

/** Runs `parastep info`, printing to stdout. */
export function runInfo(command: InfoCommand, version: string): void {
  const report = gatherInfo(version, command.verbose);
  printLine(command.json ? JSON.stringify(report, null, 2) : formatInfo(report));
}
