/**
 * Command-line parsing: pure, no I/O, so it is tested without a process.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import type { FlagSpec, FlagValue, FlagValues } from "../pipelines/family.ts";
import { familyFlags } from "../pipelines/mod.ts";
import { DTYPE_REQUESTS, type DtypeRequest } from "../models/model.ts";

/** Execution providers the CLI accepts. */
export type EpChoice = "cpu" | "cuda" | "webgpu" | "auto";
/** Denoising modes the CLI accepts. */
export type ModeChoice = "parastep" | "batchstep" | "sequential";
/** How ParaStep ranks share a round's results (see `Exchange` in src/parastep/rounds.ts). */
export type ExchangeChoice = "gather" | "allgather";
/** WAV sample formats. */
export type WavFormatChoice = "pcm16" | "float32";

/** The model used when `--model` is not given: the tiny one this repository embeds. */
export const DEFAULT_MODEL = "audioldm2-tiny";

/** `parastep info`: the runtime, its execution providers and the models found. */
export interface InfoCommand {
  readonly kind: "info";
  /** Print JSON instead of text. */
  readonly json: boolean;
  /** Raise ORT's log level to warnings. */
  readonly verbose: boolean;
  /** With `--nats URL`: list the serving hosts instead (present only when given). */
  readonly nats?: NatsFlags;
}

/** Where the NATS server is and how to log in (`--nats`, `--nats-creds`). */
export interface NatsFlags {
  /** `nats://[user:pass@|token@]host[:port]`. */
  readonly url: string;
  /** A NATS credentials file. */
  readonly creds: string | undefined;
}

/** `gen --nats URL`: ranks on serving hosts (docs/multihost.md). */
export interface MultihostFlags extends NatsFlags {
  /** Only these hosts, in this order (`--hosts a,b`). */
  readonly hosts: readonly string[] | undefined;
  /** Ranks in this process, rank 0 first (`--local-ranks`, default 1). */
  readonly localRanks: number;
  /** What a lost rank does: fail the run, or finish it with the ranks left. */
  readonly onRankLoss: "fail" | "continue";
  /** Seconds of silence after which a rank is lost (`--rank-timeout`, default 10). */
  readonly rankTimeout: number;
}

/** `parastep serve`: offer this host's devices as ranks over NATS. */
export interface ServeCommand extends NatsFlags {
  readonly kind: "serve";
  /** Devices offered. */
  readonly gpus: number;
  readonly ep: EpChoice;
  /** The only folder models are opened from; absent: PARASTEP_MODELS or models/. */
  readonly models: string | undefined;
  /** The host's name; absent: the hostname. */
  readonly name: string | undefined;
  readonly verbose: boolean;
}

/** Flags shared by `gen` and `bench`: the model, the request and the devices. */
export interface RunFlags {
  readonly model: string;
  readonly steps: number | undefined;
  readonly seed: number;
  readonly ep: EpChoice;
  /** The float type of the graphs (`--dtype`): `auto` is fp16 on CUDA when the folder has it. */
  readonly dtype: DtypeRequest;
  readonly warmup: number | undefined;
  readonly stride: number | undefined;
  /** Absent: `gen` uses "gather", `bench` measures both. */
  readonly exchange: ExchangeChoice | undefined;
  /** ORT intra-op threads of every session (the denoiser's per device). */
  readonly threads: number | undefined;
  /** Seconds a device may spend in one call before the run is ended as stalled; absent: default. */
  readonly stallTimeout: number | undefined;
  /** Open graphs through the graph cache (off with `--no-graph-cache`). */
  readonly graphCache: boolean;
  readonly verbose: boolean;
  /**
   * The model family's flags that were given (`--prompt`, `--duration`, `--image`, ...), parsed;
   * `gen` and `bench` refuse those the model's family does not take.
   */
  readonly flags: FlagValues;
}

/** `parastep gen`: generate one output. */
export interface GenCommand extends RunFlags {
  readonly kind: "gen";
  /** Devices N (`--gpus`, alias `--devices`). */
  readonly gpus: number;
  readonly mode: ModeChoice;
  /** Output path; derived from the request when absent. */
  readonly out: string | undefined;
  /** Run all ranks in this process instead of one Worker per device. */
  readonly inProcess: boolean;
  /** A file of prompts, one generation per line (`--out` then names a folder). */
  readonly prompts: string | undefined;
  /** With `--nats URL`: ranks on serving hosts (present only when given). */
  readonly multihost?: MultihostFlags;
  /**
   * `--replay-loss STEP:N` (with `--in-process`): compute what `--on-rank-loss continue` did when
   * a rank was lost at round start STEP and N ranks finished (present only when given).
   */
  readonly replayLoss?: { readonly step: number; readonly devices: number };
  /** Also write what the generation did (stage timings, devices) as JSON to this path. */
  readonly report: string | undefined;
}

/** `parastep bench`: sequential vs ParaStep vs BatchStep for several device counts. */
export interface BenchCommand extends RunFlags {
  readonly kind: "bench";
  /** The device counts N to measure, e.g. [1, 2]. */
  readonly gpus: readonly number[];
  /** Timed runs per configuration (the median is reported). */
  readonly runs: number;
  readonly json: string | undefined;
  readonly plot: string | undefined;
  /** `--nats URL`: also ParaStep with every rank here exchanging over NATS (present when given). */
  readonly nats?: NatsFlags;
  /** `--simulate-step MS`: model calls replaced by waits of MS ms (present when given). */
  readonly simulateStepMs?: number;
  /** Time whole `gen` processes (cold and warm graph cache) instead of the denoising loop. */
  readonly e2e: boolean;
}

/** What the command line asks for. */
export type Command =
  | { readonly kind: "help"; readonly topic?: CommandName }
  | { readonly kind: "version" }
  | InfoCommand
  | GenCommand
  | BenchCommand
  | ServeCommand;

/** The subcommands. */
export type CommandName = "info" | "gen" | "bench" | "serve";

/** A command line that cannot be understood: exit code 2 and one line. */
export class UsageError extends Error {
  override name = "UsageError";
  /** The subcommand whose help applies, if known. */
  readonly command: CommandName | undefined;

  /** `message` names the problem; `command` picks the help the line points to. */
  constructor(message: string, command?: CommandName) {
    super(message);
    this.command = command;
  }
}

const COMMANDS: readonly CommandName[] = ["info", "gen", "bench", "serve"];

function isCommand(name: string): name is CommandName {
  return (COMMANDS as readonly string[]).includes(name);
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * Runs node's parseArgs strictly, turning its errors into {@linkcode UsageError}s, and refuses
 * a flag given twice (parseArgs would silently keep the last).
 */
function strictParse(args: string[], options: Options, command?: CommandName) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true, tokens: true });
  } catch (e) {
    throw new UsageError(parseArgsMessage(e instanceof Error ? e.message : String(e)), command);
  }
  const seen = new Map<string, number>();
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== "option") continue;
    const count = (seen.get(token.name) ?? 0) + 1;
    seen.set(token.name, count);
    if (count === 2) {
      throw new UsageError(`--${token.name} was given more than once: give it once`, command);
    }
  }
  return parsed;
}

/** node's parseArgs messages, in one line and with the hint kept. */
function parseArgsMessage(message: string): string {
  const ambiguous = /^Option '(-\w|--[\w-]+)[^']*' argument is ambiguous/.exec(message);
  if (ambiguous) {
    const flag = ambiguous[1]!;
    return `${flag} needs a value: to give one that starts with a dash, write ${flag}=-VALUE`;
  }
  const missing = /^Option '(-\w|--[\w-]+)[^']*' argument missing/.exec(message);
  if (missing) return `${missing[1]} needs a value`;
  const unknown = /^Unknown option '([^']+)'/.exec(message);
  if (unknown) return `Unknown option '${unknown[1]}'`;
  return message.split("\n")[0]!.replace(/\.$/, "");
}

const INTEGER = /^-?[0-9]+$/;
const NUMBER = /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[-+]?[0-9]+)?$/i;

/** Reads flag values strictly: a value that is not what the flag takes is a usage error. */
class Values {
  constructor(readonly values: Record<string, unknown>, readonly command: CommandName) {}

  #raw(flag: string): string | undefined {
    const v = this.values[flag];
    return typeof v === "string" ? v : undefined;
  }

  #bad(flag: string, v: string, what: string): never {
    throw new UsageError(`Invalid value for --${flag}: '${v}' ${what}`, this.command);
  }

  string(flag: string): string | undefined {
    return this.#raw(flag);
  }

  integer(flag: string, min = 0): number | undefined {
    const v = this.#raw(flag);
    if (v === undefined) return undefined;
    const t = v.trim();
    if (!INTEGER.test(t)) this.#bad(flag, v, `is not an integer${min > 0 ? ` >= ${min}` : ""}`);
    const n = Number(t);
    if (n < min) this.#bad(flag, v, `is below ${min}: give an integer >= ${min}`);
    if (!Number.isSafeInteger(n)) {
      this.#bad(flag, v, `is too large: give an integer up to ${Number.MAX_SAFE_INTEGER}`);
    }
    return n;
  }

  number(flag: string): number | undefined {
    const v = this.#raw(flag);
    if (v === undefined) return undefined;
    if (!NUMBER.test(v.trim()) || !Number.isFinite(Number(v))) {
      this.#bad(flag, v, "is not a number");
    }
    return Number(v);
  }

  /** A number > 0 (a duration in seconds, say). */
  positive(flag: string): number | undefined {
    const n = this.number(flag);
    if (n !== undefined && !(n > 0)) this.#bad(flag, String(this.#raw(flag)), "is not above 0");
    return n;
  }

  choice<T extends string>(flag: string, choices: readonly T[], fallback: T): T {
    const v = this.#raw(flag);
    if (v === undefined) return fallback;
    if (!(choices as readonly string[]).includes(v)) {
      this.#bad(flag, v, `(choose one of ${choices.join(", ")})`);
    }
    return v as T;
  }

  flag(name: string): boolean {
    return this.values[name] === true;
  }

  /** A family flag, read as its spec says. */
  family(spec: FlagSpec): FlagValue | undefined {
    if (!(spec.name in this.values)) return undefined;
    switch (spec.type) {
      case "boolean":
        return this.flag(spec.name);
      case "integer":
        return this.integer(spec.name, spec.min ?? 0);
      case "number":
        return this.number(spec.name);
      case "string":
        return spec.choices === undefined
          ? this.string(spec.name)
          : this.choice(spec.name, spec.choices, spec.choices[0]!);
    }
  }
}

const RUN_OPTIONS = {
  model: { type: "string", short: "m" },
  steps: { type: "string" },
  seed: { type: "string" },
  ep: { type: "string" },
  dtype: { type: "string" },
  gpus: { type: "string" },
  devices: { type: "string" },
  warmup: { type: "string" },
  stride: { type: "string" },
  exchange: { type: "string" },
  threads: { type: "string" },
  "stall-timeout": { type: "string" },
  "no-graph-cache": { type: "boolean" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

const GEN_OPTIONS = {
  ...RUN_OPTIONS,
  mode: { type: "string" },
  out: { type: "string", short: "o" },
  "in-process": { type: "boolean" },
  prompts: { type: "string" },
  nats: { type: "string" },
  "nats-creds": { type: "string" },
  hosts: { type: "string" },
  "local-ranks": { type: "string" },
  "on-rank-loss": { type: "string" },
  "rank-timeout": { type: "string" },
  "replay-loss": { type: "string" },
  report: { type: "string" },
} as const;

/** `--nats` and `--nats-creds`; a creds file without a server is refused. */
function natsFlags(v: Values, command: CommandName): NatsFlags | undefined {
  const url = v.string("nats");
  const creds = v.string("nats-creds");
  if (url === undefined) {
    if (creds !== undefined) throw new UsageError("--nats-creds applies with --nats URL", command);
    return undefined;
  }
  return { url, creds };
}

/** `gen`'s multi-host flags; each refused without `--nats`. */
function multihostFlags(v: Values, gpus: number, mode: ModeChoice): MultihostFlags | undefined {
  const nats = natsFlags(v, "gen");
  const given = ["hosts", "local-ranks", "on-rank-loss", "rank-timeout"].filter((f) =>
    v.values[f] !== undefined
  );
  if (nats === undefined) {
    if (given.length > 0) throw new UsageError(`--${given[0]} applies with --nats URL`, "gen");
    return undefined;
  }
  if (mode !== "parastep") {
    throw new UsageError("--nats runs ParaStep across hosts: drop --mode or use parastep", "gen");
  }
  const hosts = v.string("hosts")?.split(",").map((h) => h.trim()).filter((h) => h !== "");
  const localRanks = v.integer("local-ranks", 1) ?? 1;
  if (localRanks > gpus) {
    throw new UsageError(`--local-ranks ${localRanks} is more than --gpus ${gpus}`, "gen");
  }
  return {
    ...nats,
    hosts,
    localRanks,
    onRankLoss: v.choice("on-rank-loss", ["fail", "continue"] as const, "fail"),
    rankTimeout: v.positive("rank-timeout") ?? 10,
  };
}

const BENCH_OPTIONS = {
  ...RUN_OPTIONS,
  runs: { type: "string" },
  json: { type: "string" },
  plot: { type: "string" },
  nats: { type: "string" },
  "nats-creds": { type: "string" },
  "simulate-step": { type: "string" },
  e2e: { type: "boolean" },
} as const;

/** The parseArgs options of every family flag `command` takes (`bench` takes no output flag). */
function familyOptions(command: "gen" | "bench"): { options: Options; specs: FlagSpec[] } {
  const options: Options = {};
  const specs: FlagSpec[] = [];
  for (const { spec } of familyFlags().values()) {
    if (command === "bench" && spec.output) continue;
    options[spec.name] = {
      type: spec.type === "boolean" ? "boolean" : "string",
      ...(spec.short ? { short: spec.short } : {}),
    };
    specs.push(spec);
  }
  return { options, specs };
}

function runFlags(v: Values, verbose: boolean, specs: readonly FlagSpec[]): RunFlags {
  const flags: Record<string, FlagValue> = {};
  for (const spec of specs) {
    const value = v.family(spec);
    if (value !== undefined) flags[spec.name] = value;
  }
  return {
    model: v.string("model") ?? DEFAULT_MODEL,
    steps: v.integer("steps", 1),
    seed: v.integer("seed") ?? 0,
    ep: v.choice("ep", ["cpu", "cuda", "webgpu", "auto"] as const, "auto"),
    dtype: v.choice("dtype", DTYPE_REQUESTS, "auto"),
    warmup: v.integer("warmup", 1),
    stride: v.integer("stride", 1),
    exchange: v.string("exchange") === undefined
      ? undefined
      : v.choice("exchange", ["gather", "allgather"] as const, "gather"),
    threads: v.integer("threads", 1),
    stallTimeout: v.positive("stall-timeout"),
    graphCache: !v.flag("no-graph-cache"),
    verbose: v.flag("verbose") || verbose,
    flags,
  };
}

/** `--gpus` and its alias `--devices`, as one value; both at once is ambiguous. */
function devicesFlag(values: Record<string, unknown>, command: CommandName): string | undefined {
  const gpus = values.gpus;
  const devices = values.devices;
  if (typeof gpus === "string" && typeof devices === "string") {
    throw new UsageError("Give --gpus or --devices, not both (they are the same flag)", command);
  }
  return (typeof gpus === "string" ? gpus : typeof devices === "string" ? devices : undefined);
}

/**
 * Parses `parastep [global flags] <command> [flags]`.
 *
 * @throws {UsageError} for an unknown command, flag or value, a flag given twice, or a flag
 *   that does nothing with the others given
 */
export function parseCommand(args: string[]): Command {
  const first = args.findIndex((a) => !a.startsWith("-"));
  const globals = first === -1 ? args : args.slice(0, first);
  const { values: g } = strictParse(globals, {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
    verbose: { type: "boolean", short: "v" },
  });
  if (g.version) return { kind: "version" };
  if (first === -1) return { kind: "help" };
  const name = args[first]!;
  const rest = args.slice(first + 1);
  if (name === "help") {
    const topic = rest[0];
    if (topic === undefined) return { kind: "help" };
    if (!isCommand(topic)) throw new UsageError(`Unknown command '${topic}'`);
    return { kind: "help", topic };
  }
  if (!isCommand(name)) throw new UsageError(`Unknown command '${name}'`);
  if (g.help) return { kind: "help", topic: name };
  const verbose = g.verbose === true;
  const noPositionals = (positionals: string[]) => {
    if (positionals.length > 0) {
      throw new UsageError(`Unexpected argument '${positionals[0]}'`, name);
    }
  };
  switch (name) {
    case "info": {
      const { values, positionals } = strictParse(rest, {
        json: { type: "boolean" },
        verbose: { type: "boolean", short: "v" },
        help: { type: "boolean", short: "h" },
        nats: { type: "string" },
        "nats-creds": { type: "string" },
      }, name);
      if (values.help) return { kind: "help", topic: name };
      noPositionals(positionals);
      const nats = natsFlags(new Values(values, name), name);
      return {
        kind: "info",
        json: values.json === true,
        verbose: values.verbose === true || verbose,
        ...(nats === undefined ? {} : { nats }),
      };
    }
    case "serve": {
      const { values, positionals } = strictParse(rest, {
        nats: { type: "string" },
        "nats-creds": { type: "string" },
        gpus: { type: "string" },
        devices: { type: "string" },
        ep: { type: "string" },
        models: { type: "string" },
        name: { type: "string" },
        verbose: { type: "boolean", short: "v" },
        help: { type: "boolean", short: "h" },
      }, name);
      if (values.help) return { kind: "help", topic: name };
      noPositionals(positionals);
      const v = new Values(values, name);
      const nats = natsFlags(v, name);
      if (nats === undefined) {
        throw new UsageError("serve needs --nats URL (the NATS server to serve on)", name);
      }
      const host = v.string("name");
      if (host !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(host)) {
        throw new UsageError(
          `Invalid value for --name: '${host}' (1 to 64 of A-Z, a-z, 0-9, '_', '-')`,
          name,
        );
      }
      return {
        kind: "serve",
        ...nats,
        gpus: new Values({ gpus: devicesFlag(values, name) }, name).integer("gpus", 1) ?? 1,
        ep: v.choice("ep", ["cpu", "cuda", "webgpu", "auto"] as const, "auto"),
        models: v.string("models"),
        name: host,
        verbose: v.flag("verbose") || verbose,
      };
    }
    case "gen": {
      const family = familyOptions("gen");
      const { values, positionals } = strictParse(
        rest,
        { ...GEN_OPTIONS, ...family.options },
        name,
      );
      if (values.help) return { kind: "help", topic: name };
      noPositionals(positionals);
      const v = new Values(values, name);
      const flags = runFlags(v, verbose, family.specs);
      const gpus = new Values({ gpus: devicesFlag(values, name) }, name).integer("gpus", 1) ?? 1;
      const mode = v.choice("mode", ["parastep", "batchstep", "sequential"] as const, "parastep");
      // Flags that would do nothing with the others given are refused, not ignored.
      if (flags.exchange !== undefined && !(mode === "parastep" && gpus > 1)) {
        throw new UsageError(
          "--exchange applies to ParaStep on several devices (--gpus N > 1 with --mode parastep)",
          name,
        );
      }
      if (flags.stride !== undefined && mode !== "batchstep") {
        throw new UsageError("--stride applies to --mode batchstep only", name);
      }
      if (mode !== "parastep" && gpus > 1) {
        throw new UsageError(
          `--mode ${mode} runs on one device: drop --gpus or use --mode parastep`,
          name,
        );
      }
      const prompts = v.string("prompts");
      if (prompts !== undefined && flags.flags.prompt !== undefined) {
        throw new UsageError("Give --prompt or --prompts FILE, not both", name);
      }
      const multihost = multihostFlags(v, gpus, mode);
      const replay = v.string("replay-loss");
      let replayLoss: { step: number; devices: number } | undefined;
      if (replay !== undefined) {
        const match = /^(\d+):(\d+)$/.exec(replay.trim());
        if (match === null || !(Number(match[2]) >= 1 && Number(match[2]) < gpus)) {
          throw new UsageError(
            `Invalid value for --replay-loss: '${replay}' (write STEP:N, N the ranks left, ` +
              `1..${gpus - 1})`,
            name,
          );
        }
        if (!v.flag("in-process")) {
          throw new UsageError("--replay-loss applies with --in-process", name);
        }
        replayLoss = { step: Number(match[1]), devices: Number(match[2]) };
      }
      if (multihost !== undefined && v.flag("in-process")) {
        throw new UsageError("Give --nats or --in-process, not both", name);
      }
      const report = v.string("report");
      if (prompts !== undefined && report !== undefined) {
        throw new UsageError(
          "--report describes one generation; --prompts prints a summary line per line instead",
          name,
        );
      }
      return {
        kind: "gen",
        ...flags,
        gpus,
        mode,
        out: v.string("out"),
        inProcess: v.flag("in-process"),
        prompts,
        ...(multihost === undefined ? {} : { multihost }),
        ...(replayLoss === undefined ? {} : { replayLoss }),
        report,
      };
    }
    case "bench": {
      const family = familyOptions("bench");
      const { values, positionals } = strictParse(
        rest,
        { ...BENCH_OPTIONS, ...family.options },
        name,
      );
      if (values.help) return { kind: "help", topic: name };
      noPositionals(positionals);
      const v = new Values(values, name);
      const e2e = v.flag("e2e");
      if (e2e && (values.plot !== undefined || values.stride !== undefined)) {
        throw new UsageError(
          `--${values.plot !== undefined ? "plot" : "stride"} does not apply to --e2e, which ` +
            "times gen (sequential or ParaStep); drop it",
          name,
        );
      }
      const list = devicesFlag(values, name) ?? "1,2";
      const gpus = list.split(",").map((item) =>
        new Values({ gpus: item.trim() }, name).integer("gpus", 1)!
      );
      const nats = natsFlags(v, name);
      const simulateStepMs = v.positive("simulate-step");
      return {
        kind: "bench",
        ...runFlags(v, verbose, family.specs),
        gpus: [...new Set(gpus)].sort((a, b) => a - b),
        runs: v.integer("runs", 1) ?? 3,
        json: v.string("json"),
        plot: v.string("plot"),
        ...(nats === undefined ? {} : { nats }),
        ...(simulateStepMs === undefined ? {} : { simulateStepMs }),
        e2e,
      };
    }
  }
}
