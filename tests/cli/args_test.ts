import assert from "node:assert/strict";
import { parseCommand, UsageError } from "../../src/cli/args.ts";

Deno.test("parseCommand reads help, version and info", () => {
  assert.deepEqual(parseCommand([]), { kind: "help" });
  assert.deepEqual(parseCommand(["--help"]), { kind: "help" });
  assert.deepEqual(parseCommand(["-V"]), { kind: "version" });
  assert.deepEqual(parseCommand(["help", "info"]), { kind: "help", topic: "info" });
  assert.deepEqual(parseCommand(["info", "--help"]), { kind: "help", topic: "info" });
  assert.deepEqual(parseCommand(["info"]), { kind: "info", json: false, verbose: false });
  assert.deepEqual(parseCommand(["--verbose", "info", "--json"]), {
    kind: "info",
    json: true,
    verbose: true,
  });
});

Deno.test("parseCommand refuses unknown commands, flags and arguments with a usage error", () => {
  const refuses = (args: string[], pattern: RegExp, command?: string) =>
    assert.throws(
      () => parseCommand(args),
      (e: unknown) => e instanceof UsageError && pattern.test(e.message) && e.command === command,
    );
  refuses(["frobnicate"], /Unknown command 'frobnicate'/);
  refuses(["help", "frobnicate"], /Unknown command 'frobnicate'/);
  refuses(["--bogus"], /Unknown option '--bogus'/);
  refuses(["info", "--bogus"], /Unknown option '--bogus'/, "info");
  refuses(["info", "extra"], /Unexpected argument 'extra'/, "info");
});
