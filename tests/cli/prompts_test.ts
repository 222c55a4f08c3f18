import assert from "node:assert/strict";
import { readPromptsFile } from "../../src/cli/gen.ts";
import { audioldm2 } from "../../src/pipelines/audioldm2/mod.ts";
import { MAIN, parastep, PERMISSIONS } from "../support/cli.ts";

Deno.test("readPromptsFile takes plain prompts and JSON lines of the family's flags", () => {
  const { lines, problems } = readPromptsFile(
    [
      "rain on a tin roof",
      "",
      "# a comment",
      '{"prompt": "dog barking", "seed": 3, "duration": 1.5, "out": "dog.wav"}',
      "{not json",
      '{"prompt": "birds", "bogus": 1}',
      '{"prompt": "wind", "seed": -1}',
      '{"prompt": "wind", "duration": "long"}',
      '{"prompt": "wind", "out": ""}',
    ].join("\n"),
    audioldm2,
  );
  assert.deepEqual(lines, [
    {
      number: 1,
      flags: { prompt: "rain on a tin roof" },
      seed: undefined,
      steps: undefined,
      out: undefined,
    },
    {
      number: 4,
      flags: { prompt: "dog barking", duration: 1.5 },
      seed: 3,
      steps: undefined,
      out: "dog.wav",
    },
  ]);
  assert.deepEqual(problems.map((p) => p.number), [5, 6, 7, 8, 9]);
  assert.match(problems[0]!.reason, /^not JSON: /);
  assert.match(
    problems[1]!.reason,
    /^'bogus' is not a flag of audioldm2 \(seed, steps, out, prompt, /,
  );
  assert.match(problems[2]!.reason, /^'seed' must be an integer >= 0: found -1$/);
  assert.match(problems[3]!.reason, /^'duration' must be a number: found "long"$/);
  assert.match(problems[4]!.reason, /^'out' must be a path: found ""$/);
});

Deno.test("gen --prompts: each line written as its own gen would write it, bad lines reported and skipped", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/prompts.txt`,
      [
        "rain on a tin roof",
        '{"prompt": "dog barking", "seed": 3, "duration": 1.5}',
        "{not json",
        '{"prompt": "wind", "out": "/nonexistent/folder/x.wav"}',
        "thunder",
      ].join("\n"),
    );
    const common = ["--ep", "cpu", "--steps", "8", "--gpus", "2"];
    const r = await parastep([
      "gen",
      "--prompts",
      `${dir}/prompts.txt`,
      "--out",
      `${dir}/out`,
      ...common,
    ]);
    // Two lines skipped: exit 1, each named on stdout with its line number.
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^line 3 skipped: not JSON: /m);
    assert.match(
      r.stdout,
      /^line 4 skipped: Cannot write the output '\/nonexistent\/folder\/x\.wav': the folder '\/nonexistent\/folder' does not exist$/m,
    );
    assert.match(r.stdout, /^--prompts .*: 3 of 5 lines written in .*; 2 skipped \(see above\)$/m);
    const written = [...Deno.readDirSync(`${dir}/out`)].map((e) => e.name).sort();
    assert.deepEqual(written, [
      "1-rain-on-a-tin-roof_s0.wav",
      "2-dog-barking_s3.wav",
      "5-thunder_s0.wav",
    ]);
    // The Workers served every line in turn; each output is what a gen of its own gives.
    const alone: [string, string[]][] = [
      ["1-rain-on-a-tin-roof_s0.wav", ["--prompt", "rain on a tin roof"]],
      ["2-dog-barking_s3.wav", ["--prompt", "dog barking", "--seed", "3", "--duration", "1.5"]],
      ["5-thunder_s0.wav", ["--prompt", "thunder"]],
    ];
    for (const [name, args] of alone) {
      const single = await parastep(["gen", ...args, ...common, "--out", `${dir}/single.wav`]);
      assert.equal(single.code, 0, single.stderr);
      assert.deepEqual(
        await Deno.readFile(`${dir}/out/${name}`),
        await Deno.readFile(`${dir}/single.wav`),
        name,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Ctrl-C during gen --prompts keeps the finished outputs and leaves no partial file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const prompts = Array.from({ length: 6 }, (_, k) => `prompt number ${k + 1}`);
    await Deno.writeTextFile(`${dir}/prompts.txt`, prompts.join("\n"));
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...PERMISSIONS,
        MAIN,
        "gen",
        "--prompts",
        `${dir}/prompts.txt`,
        "--out",
        dir,
        "--ep",
        "cpu",
        "--steps",
        "60",
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Interrupt once the first line has been written.
    const reader = child.stdout.getReader();
    let seen = "";
    while (!/^wrote /m.test(seen)) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    child.kill("SIGINT");
    reader.releaseLock();
    const { code, stderr } = await child.output();
    assert.equal(code, 130, new TextDecoder().decode(stderr));
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    const wavs = names.filter((n) => n.endsWith(".wav"));
    assert.ok(wavs.length >= 1 && wavs.length < 6, JSON.stringify(names));
    assert.deepEqual(names.filter((n) => n.startsWith(".ps-")), []);
    assert.deepEqual(names.sort(), [...wavs, "prompts.txt"].sort());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
