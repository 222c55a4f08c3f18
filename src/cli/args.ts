/**
 * Command-line parsing: pure, no I/O, so it is tested without a process.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

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
}

/** Flags shared by `gen` and `bench`: the model, the request and the devices. */
export interface RunFlags {
  readonly model: string;
  readonly prompt: string | undefined;
  readonly negativePrompt: string | undefined;
  readonly steps: number | undefined;
  readonly guidance: number | undefined;
  readonly duration: number | undefined;
  readonly seed: number;
  readonly ep: EpChoice;
  readonly warmup: number | undefined;
  readonly stride: number | undefined;
  /** Absent: `gen` uses "gather", `bench` measures both. */
  readonly exchange: ExchangeChoice | undefined;
  readonly threads: number | undefined;
  readonly verbose: boolean;
}

/** `parastep gen`: generate one output file. */
export interface GenCommand extends RunFlags {
  readonly kind: "gen";
  readonly prompt: string;
  /** Devices N (`--gpus`, alias `--devices`). */
  readonly gpus: number;
  readonly mode: ModeChoice;
  /** Output path; derived from the prompt and seed when absent. */
  readonly out: string | undefined;
  /** Where to write the mel spectrogram as a PNG, if anywhere. */
  readonly spectrogram: string | undefined;
  readonly wavFormat: WavFormatChoice;
  /** Run every rank in this process instead of one Worker per device. */
  readonly inProcess: boolean;
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
}

/** What the command line asks for. */
export type Command =
  | { readonly kind: "help"; readonly topic?: CommandName }
  | { readonly kind: "version" }
  | InfoCommand
  | GenCommand
  | BenchCommand;

/** The subcommands. */
export type CommandName = "info" | "gen" | "bench";

/** A command line that cannot be understood: exit code 2, one line, then usage. */
export class UsageError extends Error {
  override name = "UsageError";
  /** The subcommand whose usage applies, if known. */
  readonly command: CommandName | undefined;
  /**
   * Whether the usage text should follow the message: yes for an unknown
   * command or flag, no for a known flag given a bad value (the message says it all).
   */
  readonly showUsage: boolean;

  /** `message` names the problem; `command` picks the usage text printed after it. */
  constructor(message: string, command?: CommandName, showUsage = true) {
    super(message);
    this.command = command;
    this.showUsage = showUsage;
  }
}

const COMMANDS: readonly CommandName[] = ["info", "gen", "bench"];

function isCommand(name: string): name is CommandName {
  return (COMMANDS as readonly string[]).includes(name);
}

/** Runs node's parseArgs strictly, turning its errors into {@linkcode UsageError}s. */
function strictParse<T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
  command?: CommandName,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    // node's messages are long and end with advice about `--`; keep the first sentence.
    throw new UsageError(message.split(". ")[0]!.replace(/\.$/, ""), command);
  }
}

const INTEGER = /^[0-9]+$/;
const NUMBER = /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[-+]?[0-9]+)?$/i;

/** Reads flag values strictly: a value that is not what the flag takes is a usage error. */
class Values {
  constructor(readonly values: Record<string, unknown>, readonly command: CommandName) {}

  #raw(flag: string): string | undefined {
    const v = this.values[flag];
    return typeof v === "string" ? v : undefined;
  }

  string(flag: string): string | undefined {
    return this.#raw(flag);
  }

  integer(flag: string, min = 0): number | undefined {
    const v = this.#raw(flag);
    if (v === undefined) return undefined;
    if (!INTEGER.test(v.trim()) || Number(v) < min) {
      throw new UsageError(
        `Invalid value for --${flag}: '${v}' is not an integer${min > 0 ? ` >= ${min}` : ""}`,
        this.command,
        false,
      );
    }
    return Number(v);
  }

  number(flag: string): number | undefined {
    const v = this.#raw(flag);
    if (v === undefined) return undefined;
    if (!NUMBER.test(v.trim()) || !Number.isFinite(Number(v))) {
      throw new UsageError(
        `Invalid value for --${flag}: '${v}' is not a number`,
        this.command,
        false,
      );
    }
    return Number(v);
  }

  choice<T extends string>(flag: string, choices: readonly T[], fallback: T): T {
    const v = this.#raw(flag);
    if (v === undefined) return fallback;
    if (!(choices as readonly string[]).includes(v)) {
      throw new UsageError(
        `Invalid value for --${flag}: '${v}' (choose one of ${choices.join(", ")})`,
        this.command,
        false,
      );
    }
    return v as T;
  }

  flag(name: string): boolean {
    return this.values[name] === true;
  }
}

const RUN_OPTIONS = {
  model: { type: "string", short: "m" },
  prompt: { type: "string", short: "p" },
  "negative-prompt": { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  duration: { type: "string" },
  seed: { type: "string" },
  ep: { type: "string" },
  gpus: { type: "string" },
  devices: { type: "string" },
  warmup: { type: "string" },
  stride: { type: "string" },
  exchange: { type: "string" },
  threads: { type: "string" },
  verbose: { type: "boolean", short: "v" },
  help: { type: "boolean", short: "h" },
} as const;

const GEN_OPTIONS = {
  ...RUN_OPTIONS,
  mode: { type: "string" },
  out: { type: "string", short: "o" },
  spectrogram: { type: "string" },
  "wav-format": { type: "string" },
  "in-process": { type: "boolean" },
} as const;

const BENCH_OPTIONS = {
  ...RUN_OPTIONS,
  runs: { type: "string" },
  json: { type: "string" },
  plot: { type: "string" },
} as const;

function runFlags(v: Values, verbose: boolean): RunFlags {
  return {
    model: v.string("model") ?? DEFAULT_MODEL,
    prompt: v.string("prompt"),
    negativePrompt: v.string("negative-prompt"),
    steps: v.integer("steps"),
    guidance: v.number("guidance"),
    duration: v.number("duration"),
    seed: v.integer("seed") ?? 0,
    ep: v.choice("ep", ["cpu", "cuda", "webgpu", "auto"] as const, "auto"),
    warmup: v.integer("warmup"),
    stride: v.integer("stride", 1),
    exchange: v.string("exchange") === undefined
      ? undefined
      : v.choice("exchange", ["gather", "allgather"] as const, "gather"),
    threads: v.integer("threads"),
    verbose: v.flag("verbose") || verbose,
  };
}

/** `--gpus` and its alias `--devices`, as one value; both at once is ambiguous. */
function devicesFlag(values: Record<string, unknown>, command: CommandName): string | undefined {
  const gpus = values.gpus;
  const devices = values.devices;
  if (typeof gpus === "string" && typeof devices === "string") {
    throw new UsageError(
      "Give --gpus or --devices, not both (they are the same flag)",
      command,
      false,
    );
  }
  return (typeof gpus === "string" ? gpus : typeof devices === "string" ? devices : undefined);
}

/**
 * Parses `parastep [global flags] <command> [flags]`.
 *
 * @throws {UsageError} for an unknown command, flag or value
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
  const verbose = g.verbose ?? false;
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
      }, name);
      if (values.help) return { kind: "help", topic: name };
      noPositionals(positionals);
      return {
        kind: "info",
        json: values.json ?? false,
        verbose: (values.verbose || verbose) ?? false,
      };
    }
    case "gen": {
      const { values, positionals } = strictParse(rest, GEN_OPTIONS, name);
      if (values.help) return { kind: "help", topic: name };
      noPositionals(positionals);
      const v = new Values(values, name);
      const flags = runFlags(v, verbose);
      if (flags.prompt === undefined) {
        throw new UsageError("Missing --prompt: describe the audio to generate", name, false);
      }
      const gpus = new Values({ gpus: devicesFlag(values, name) }, name).integer("gpus", 1) ?? 1;
      return {
        kind: "gen",
        ...flags,
        prompt: flags.prompt,
        gpus,
        mode: v.choice("mode", ["parastep", "batchstep", "sequential"] as const, "parastep"),
        out: v.string("out"),
        spectrogram: v.string("spectrogram"),
        wavFormat: v.choice("wav-format", ["pcm16", "float32"] as const, "pcm16"),
        inProcess: v.flag("in-process"),
      };
    }
    case "bench": {
      const { values, positionals } = strictParse(rest, BENCH_OPTIONS, name);
      if (values.help) return { kind: "help", topic: name };
      noPositionals(positionals);
      const v = new Values(values, name);
      const list = devicesFlag(values, name) ?? "1,2";
      const gpus = list.split(",").map((item) =>
        new Values({ gpus: item.trim() }, name).integer("gpus", 1)!
      );
      return {
        kind: "bench",
        ...runFlags(v, verbose),
        gpus: [...new Set(gpus)].sort((a, b) => a - b),
        runs: v.integer("runs", 1) ?? 3,
        json: v.string("json"),
        plot: v.string("plot"),
      };
    }
  }
}
