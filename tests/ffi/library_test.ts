import assert from "node:assert/strict";

Deno.test({
  name: "the library stays loaded when a Worker that loaded it is terminated",
  // /proc/self/maps shows what is mapped; other systems have no such file.
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    // Unpinned, Deno's close of the Worker's handle unloaded ORT, and a Worker torn down
    // while the process exited ran ORT's static destructors twice ("double free or
    // corruption" at the end of about one two-Worker run in twenty).
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", new URL("./_pin_check.ts", import.meta.url).pathname],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.ok(out.success, `the check process exited with ${out.code}`);
    const { whileAlive, after } = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(whileAlive, true, "the Worker did not load the library");
    assert.equal(after, true, "the library was unloaded with the Worker");
  },
});
