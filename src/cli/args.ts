/**
 * Command-line parsing: pure, no I/O, so it is tested without a process.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** `parastep info`: the runtime, its execution providers and the models found. */
export interface InfoCommand {
  readonly kind: "info";
  /** Print JSON instead of text. */
  readonly json: boolean;
  /** Raise ORT's log level to warnings. */
  readonly verbose: boolean;
}

/** What the command line asks for. */
export type Command =
  | { readonly kind: "help"; readonly topic?: CommandName }
  | { readonly kind: "version" }
  | InfoCommand;

/** The subcommands. */
export type CommandName = "info";

/** A command line that cannot be understood: exit code 2, one line, then usage. */
export class UsageError extends Error {
  override name = "UsageError";
  /** The subcommand whose usage applies, if known. */
  readonly command: CommandName | undefined;

  /** `message` names the problem; `command` picks the usage text printed after it. */
  constructor(message: string, command?: CommandName) {
    super(message);
    this.command = command;
  }
}

const COMMANDS: readonly CommandName[] = ["info"];

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
  switch (name) {
    case "info": {
      const { values, positionals } = strictParse(rest, {
        json: { type: "boolean" },
        verbose: { type: "boolean", short: "v" },
        help: { type: "boolean", short: "h" },
      }, name);
      if (values.help) return { kind: "help", topic: name };
      if (positionals.length > 0) {
        throw new UsageError(`Unexpected argument '${positionals[0]}'`, name);
      }
      return {
        kind: "info",
        json: values.json ?? false,
        verbose: (values.verbose || g.verbose) ?? false,
      };
    }
  }
}
