/**
 * gen's output files end to end: checked before any work, written all or none, interrupts,
 * overwrites, odd names, and a stdout that cannot be written.
 */

import assert from "node:assert/strict";
import { type GenCommand, parseCommand } from "../../src/cli/args.ts";
import { InterruptedError } from "../../src/cli/errors.ts";
import { runGen } from "../../src/cli/gen.ts";
import { decodeWav } from "../../src/io/wav.ts";
import { denoiseInProcess } from "../../src/pipelines/mod.ts";
import { MAIN, parastep, PERMISSIONS } from "../support/cli.ts";

const UNIX = Deno.build.os !== "windows";
const decoder = new TextDecoder();
/** A quick generation: the tiny model, two steps. */
const QUICK = ["gen", "--prompt", "wind", "--ep", "cpu", "--steps", "2"];

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "parastep-outputs-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const list = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

/** Whether `cmd` runs here. */
async function available(cmd: string, args: string[]): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

/** Quotes `s` for sh. */
const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
const denoRun = () => [Deno.execPath(), "run", ...PERMISSIONS, MAIN].map(q).join(" ");

Deno.test("outputs that cannot be written are refused before any work: exit 2, one line, no file", async (t) => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/folder`);
    await Deno.writeTextFile(`${dir}/old.png`, "old png");
    const hasFifo = UNIX && await available("mkfifo", [`${dir}/fifo`]);
    const cases: [string, string[], RegExp][] = [
      [
        "an empty --out",
        ["--out", ""],
        /^parastep: Cannot write the output '': the path is empty$/,
      ],
      [
        "a folder",
        ["--out", `${dir}/folder`],
        /^parastep: Cannot write the output '.*\/folder': it is a folder$/,
      ],
      [
        "a path ending in /",
        ["--out", `${dir}/new/`],
        /^parastep: Cannot write the output '.*\/new\/': it names a folder, not a file$/,
      ],
      [
        "a name of 256 bytes",
        ["--out", `${dir}/${"x".repeat(252)}.wav`],
        /^parastep: Cannot write the output '.*': the file name is 256 bytes long; the limit is 255 bytes$/,
      ],
      [
        "a path of 4096 bytes",
        ["--out", `${dir}/${"d/".repeat(2048)}`.slice(0, 4096)],
        /^parastep: Cannot write the output '.*': the path is 4096 bytes long; the limit is 4095$/,
      ],
      [
        "the spectrogram at the WAV's path",
        ["--out", `${dir}/old.png`, "--spectrogram", `${dir}/old.png`],
        /^parastep: Cannot write the spectrogram '.*\/old\.png': it is the same file as the output '.*\/old\.png'$/,
      ],
    ];
    if (UNIX) {
      // A device is refused before anything is opened (the CLI's permissions let Deno look at
      // /dev/full only with --allow-all, so either reason may come).
      cases.push([
        "/dev/full",
        ["--out", "/dev/full"],
        /^parastep: Cannot write the output '\/dev\/full': (it is a character device, not a regular file|access to '\/dev\/full' is not granted to this process \(Deno permissions\))$/,
      ]);
    }
    if (hasFifo) {
      cases.push([
        "a named pipe",
        ["--out", `${dir}/fifo`],
        /^parastep: Cannot write the output '.*\/fifo': it is a named pipe, not a regular file$/,
      ]);
    }
    const before = list(dir);
    for (const [name, args, message] of cases) {
      await t.step(name, async () => {
        const r = await parastep([...QUICK, ...args]);
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stdout, "");
        assert.match(r.stderr, /^[^\n]*\n$/);
        assert.match(r.stderr.trimEnd(), message);
        assert.deepEqual(list(dir), before);
        assert.equal(await Deno.readTextFile(`${dir}/old.png`), "old png");
      });
    }
  });
});

Deno.test("legal names of 236 to 255 bytes, and a backslash in a name, are written as named", async () => {
  await withTempDir(async (dir) => {
    const names = [`${"n".repeat(232)}.wav`, `${"m".repeat(251)}.wav`];
    if (UNIX) names.push("a\\b.wav"); // one file named a\b.wav, not b.wav in a folder a
    for (const name of names) {
      const r = await parastep([...QUICK, "--out", name], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(decodeWav(await Deno.readFile(`${dir}/${name}`)).sampleRate, 16000);
    }
    assert.deepEqual(list(dir), [...names].sort());
  });
});

Deno.test({
  name: "gen replaces existing outputs keeping their mode, and writes through a symbolic link",
  ignore: !UNIX,
  fn: async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/a.wav`, "old wav");
      await Deno.chmod(`${dir}/a.wav`, 0o640);
      await Deno.mkdir(`${dir}/pictures`);
      await Deno.writeTextFile(`${dir}/pictures/a.png`, "old png");
      await Deno.chmod(`${dir}/pictures/a.png`, 0o604);
      await Deno.symlink("pictures/a.png", `${dir}/a.png`);
      const r = await parastep([
        ...QUICK,
        "--out",
        `${dir}/a.wav`,
        "--spectrogram",
        `${dir}/a.png`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(decodeWav(await Deno.readFile(`${dir}/a.wav`)).sampleRate, 16000);
      assert.equal((await Deno.stat(`${dir}/a.wav`)).mode! & 0o777, 0o640);
      assert.equal(await Deno.readLink(`${dir}/a.png`), "pictures/a.png");
      const png = await Deno.readFile(`${dir}/pictures/a.png`);
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
      assert.equal((await Deno.stat(`${dir}/pictures/a.png`)).mode! & 0o777, 0o604);
      assert.deepEqual(list(dir), ["a.png", "a.wav", "pictures"]);
      assert.deepEqual(list(`${dir}/pictures`), ["a.png"]);
    });
  },
});

Deno.test({
  name: "a WAV that cannot be written leaves the existing spectrogram and WAV as they were",
  ignore: !UNIX,
  fn: async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/a.wav`, "old wav");
      await Deno.writeTextFile(`${dir}/a.png`, "old png");
      // A file size limit between the spectrogram (~120 KB) and the WAV (~1.9 MB) of 60 s: the
      // WAV's write fails with EFBIG after the PNG was written, as on a disk that fills up.
      const r = await new Deno.Command("sh", {
        args: [
          "-c",
          `trap '' XFSZ; ulimit -f 1024; exec ${denoRun()} "$@"`,
          "sh",
          ...QUICK,
          "--duration",
          "60",
          "--out",
          `${dir}/a.wav`,
          "--spectrogram",
          `${dir}/a.png`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = decoder.decode(r.stderr);
      assert.equal(r.code, 1, stderr);
      assert.equal(
        stderr,
        `parastep: Cannot write '${dir}/a.wav': the file is larger than this file system or process allows; no output was changed\n`,
      );
      assert.equal(await Deno.readTextFile(`${dir}/a.png`), "old png");
      assert.equal(await Deno.readTextFile(`${dir}/a.wav`), "old wav");
      assert.deepEqual(list(dir), ["a.png", "a.wav"]);
    });
  },
});

/** Whether this process may mount a tmpfs in a private mount namespace (root on Linux). */
const CAN_MOUNT_TMPFS = Deno.build.os === "linux" && await (async () => {
  const probe = await Deno.makeTempDir({ prefix: "parastep-mount-probe-" });
  try {
    return await available("unshare", [
      "-m",
      "mount",
      "-t",
      "tmpfs",
      "-o",
      "size=64k",
      "tmpfs",
      probe,
    ]);
  } finally {
    await Deno.remove(probe);
  }
})();

Deno.test({
  name:
    "a full disk under the WAV (a 1 MiB tmpfs) keeps the existing spectrogram and leaves no file",
  ignore: !CAN_MOUNT_TMPFS,
  fn: async () => {
    await withTempDir(async (dir) => {
      await Deno.mkdir(`${dir}/small`);
      await Deno.writeTextFile(`${dir}/a.png`, "old png");
      // The mount lives only in the child's namespace: list the small disk there, after the run.
      const r = await new Deno.Command("unshare", {
        args: [
          "-m",
          "sh",
          "-c",
          `mount -t tmpfs -o size=1m tmpfs ${q(`${dir}/small`)} || exit 99
           ${denoRun()} "$@"; code=$?; ls -A ${q(`${dir}/small`)}; exit $code`,
          "sh",
          ...QUICK,
          "--duration",
          "60",
          "--out",
          `${dir}/small/a.wav`,
          "--spectrogram",
          `${dir}/a.png`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = decoder.decode(r.stderr);
      assert.equal(r.code, 1, stderr);
      assert.equal(
        stderr,
        `parastep: Cannot write '${dir}/small/a.wav': no space left on the device of '${dir}/small'; no output was changed\n`,
      );
      assert.equal(decoder.decode(r.stdout), "", "files left on the full disk");
      assert.equal(await Deno.readTextFile(`${dir}/a.png`), "old png");
      assert.deepEqual(list(dir), ["a.png", "small"]);
    });
  },
});

Deno.test("an interrupt during decoding or writing stops runGen before the files are in place", async () => {
  await withTempDir(async (dir) => {
    const command = parseCommand([
      ...QUICK,
      "--out",
      `${dir}/a.wav`,
      "--spectrogram",
      `${dir}/a.png`,
    ]) as GenCommand;
    const controller = new AbortController();
    await assert.rejects(
      runGen(command, {
        signal: controller.signal,
        chooseEngine: () => async (job) => {
          const report = await denoiseInProcess(job);
          // Fires at the first turn of the event loop after the last step, as a SIGINT handler
          // does when Ctrl-C comes during the (synchronous) decoding.
          setTimeout(() => controller.abort(new InterruptedError()), 0);
          return report;
        },
      }),
      InterruptedError,
    );
    assert.deepEqual(list(dir), []);
  });
});

/** Whether util-linux `script` can give a child a terminal here (the progress bar needs one). */
const HAS_SCRIPT = Deno.build.os === "linux" &&
  await available("script", ["-qec", "true", "/dev/null"]);

Deno.test({
  name: "Ctrl-C just after the last step (during decoding) exits 130 and leaves no file",
  ignore: !HAS_SCRIPT,
  fn: async () => {
    await withTempDir(async (dir) => {
      const args = [...QUICK, "--duration", "60", "--out", `${dir}/a.wav`, "--spectrogram"]
        .map(q).join(" ");
      const child = new Deno.Command("script", {
        args: [
          "-qfec",
          `echo "pid $$"; exec ${denoRun()} ${args} ${q(`${dir}/a.png`)}`,
          "/dev/null",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let seen = "";
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      // The progress bar draws "2/2 steps" when the last step is done; decoding 60 s follows.
      while (!/2\/2 steps/.test(seen)) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += value;
      }
      const pid = Number(seen.match(/pid (\d+)/)?.[1]);
      assert.ok(/2\/2 steps/.test(seen) && pid > 0, seen);
      // Decoding 60 s takes ~0.3 s on a 2-core VM: 50 ms in, it is running (the signal is then
      // handled when it ends), while the run's end is still well ahead even on a faster machine.
      await new Promise((r) => setTimeout(r, 50));
      Deno.kill(pid, "SIGINT");
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += value;
      }
      const { code } = await child.status;
      await child.stderr.cancel();
      assert.equal(code, 130, seen);
      assert.match(seen, /parastep: Interrupted \(Ctrl-C\): stopped cleanly, nothing was written/);
      assert.deepEqual(list(dir), []);
    });
  },
});

Deno.test("stdout that cannot be written is one line and exit 1, not a stack trace", async (t) => {
  await t.step("a full disk (/dev/full, opened for writing by the shell only)", async () => {
    if (!UNIX) return;
    await withTempDir(async (dir) => {
      for (const args of [["--version"], [...QUICK, "--out", `${dir}/a.wav`]]) {
        const r = await new Deno.Command("sh", {
          args: ["-c", `exec ${denoRun()} "$@" > /dev/full`, "sh", ...args],
          stdout: "null",
          stderr: "piped",
        }).output();
        assert.equal(r.code, 1);
        assert.equal(
          decoder.decode(r.stderr),
          "parastep: Cannot write to standard output: no space left on the device\n",
        );
      }
    });
  });
  await t.step("a reader that closed the pipe", async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, MAIN, "help", "gen"],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await child.stdout.cancel();
    const r = await child.output();
    assert.equal(r.code, 1);
    assert.equal(
      decoder.decode(r.stderr),
      "parastep: Cannot write to standard output: the reader closed it (broken pipe)\n",
    );
  });
});
