import assert from "node:assert/strict";
import {
  type CommitStep,
  NAME_MAX,
  OutputPathError,
  OutputSet,
  PATH_MAX,
  WriteFileError,
} from "../../src/io/output_set.ts";
import { writeFileAtomic } from "../../src/io/atomic.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const UNIX = Deno.build.os !== "windows";
const IS_ROOT = UNIX && Deno.uid() === 0;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "parastep-outset-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Every entry under `dir` with its kind, inode, mode and content: what a rollback must keep. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, prefix: string) => {
    for await (const e of Deno.readDir(d)) {
      const path = `${d}/${e.name}`;
      const info = await Deno.lstat(path);
      const key = `${prefix}${e.name}`;
      if (info.isSymlink) out[key] = `link -> ${await Deno.readLink(path)}`;
      else if (info.isDirectory) {
        out[key] = `dir ${info.mode}`;
        await walk(path, `${key}/`);
      } else if (!info.isFile) out[key] = `special ino=${info.ino}`;
      else {
        const text = await Deno.readTextFile(path);
        out[key] = `file ino=${info.ino} mode=${info.mode} uid=${info.uid} ${text}`;
      }
    }
  };
  await walk(dir, "");
  return out;
}

/** Names under `dir` that look like this module's temporary or backup files. */
async function leftovers(dir: string): Promise<string[]> {
  return Object.keys(await snapshot(dir)).filter((k) => /(^|\/)\.ps-/.test(k));
}

const plannedError = (message: RegExp) => (e: unknown) => {
  assert.ok(e instanceof OutputPathError, String(e));
  assert.match(e.message, message);
  assert.ok(!e.message.includes("\n"));
  return true;
};

Deno.test("plan refuses, with one line each, paths that cannot be written, and creates nothing", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/folder`);
    await Deno.writeTextFile(`${dir}/file`, "x");
    await Deno.symlink(`${dir}/folder`, `${dir}/to-folder`);
    {
      const before = await snapshot(dir);
      const cases: [string, RegExp][] = [
        ["", /^Cannot write the output '': the path is empty$/],
        [`${dir}/folder`, /: it is a folder$/],
        [`${dir}/folder/`, /: it names a folder, not a file$/],
        [`${dir}/to-folder`, /: it is a symbolic link to '.*\/folder', which is a folder$/],
        [`${dir}/missing/out.wav`, /: the folder '.*\/missing' does not exist$/],
        [`${dir}/file/out.wav`, /: '.*\/file' is not a folder$/],
        [
          `${dir}/${"n".repeat(NAME_MAX + 1)}`,
          /: the file name is 256 bytes long; the limit is 255 bytes$/,
        ],
        // 86 three-byte characters: 258 bytes, though only 86 characters.
        [
          `${dir}/${"\u20ac".repeat(86)}`,
          /: the file name is 258 bytes long; the limit is 255 bytes$/,
        ],
        [
          `${dir}/${"d".repeat(300)}/out.wav`,
          /: the folder name 'dddddddddddddddddddddddd\.\.\.' is 300 bytes long; the limit is 255 bytes$/,
        ],
        [
          `${dir}/${"a/".repeat(PATH_MAX / 2)}x`,
          /: the path is \d+ bytes long; the limit is 4095$/,
        ],
      ];
      if (UNIX) {
        // Devices are only looked at, never opened: safe even where the old code would have replaced them.
        cases.push([
          "/dev/null",
          /^Cannot write the output '\/dev\/null': it is a character device, not a regular file$/,
        ]);
        // Deno lets only --allow-all look at /dev/full; either way it is refused before any work.
        cases.push([
          "/dev/full",
          /^Cannot write the output '\/dev\/full': (it is a character device, not a regular file|access to '\/dev\/full' is not granted to this process \(Deno permissions\))$/,
        ]);
      }
      for (const [path, message] of cases) {
        assert.throws(() => OutputSet.plan([{ path, label: "the output" }]), plannedError(message));
      }
      assert.deepEqual(await snapshot(dir), before);
    }
  });
});

/** Runs `cmd`; whether it succeeded (false where it is missing). */
async function succeeds(cmd: string, args: string[]): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "plan refuses a named pipe and a socket as outputs",
  ignore: !UNIX,
  fn: async () => {
    await withTempDir(async (dir) => {
      const made: [string, RegExp][] = [];
      if (await succeeds("mkfifo", [`${dir}/fifo`])) {
        made.push([
          "fifo",
          /^Cannot write the spectrogram '.*\/fifo': it is a named pipe, not a regular file$/,
        ]);
      }
      const bind = `import socket; socket.socket(socket.AF_UNIX).bind(${
        JSON.stringify(`${dir}/sock`)
      })`;
      if (await succeeds("python3", ["-c", bind])) {
        made.push([
          "sock",
          /^Cannot write the spectrogram '.*\/sock': it is a socket, not a regular file$/,
        ]);
      }
      assert.ok(made.length > 0, "neither mkfifo nor python3 could make a special file here");
      for (const [name, message] of made) {
        assert.throws(
          () => OutputSet.plan([{ path: `${dir}/${name}`, label: "the spectrogram" }]),
          plannedError(message),
        );
      }
    });
  },
});

Deno.test("plan refuses two outputs that are the same file, also through a symbolic link", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/a.png`, "old");
    await Deno.symlink("a.png", `${dir}/link.png`);
    assert.throws(
      () =>
        OutputSet.plan([
          { path: `${dir}/a.wav`, label: "the output" },
          { path: `${dir}/./a.wav`, label: "the spectrogram" },
        ]),
      plannedError(
        /^Cannot write the spectrogram '.*\/\.\/a\.wav': it is the same file as the output '.*\/a\.wav'$/,
      ),
    );
    assert.throws(
      () => OutputSet.plan([{ path: `${dir}/a.png` }, { path: `${dir}/link.png` }]),
      plannedError(/it is the same file as the output '.*\/a\.png'$/),
    );
  });
});

Deno.test("a backslash is part of a file name on Linux, not a folder separator", async () => {
  if (!UNIX) return;
  await withTempDir(async (dir) => {
    const set = OutputSet.plan([{ path: `${dir}/a\\b.wav` }]);
    await set.commit([enc("x")]);
    assert.deepEqual(Object.keys(await snapshot(dir)), ["a\\b.wav"]);
  });
});

Deno.test("names of 236 to 255 bytes are written, with temporary names that stay short", async () => {
  await withTempDir(async (dir) => {
    for (const n of [236, 250, NAME_MAX]) {
      const name = "x".repeat(n - 4) + ".wav";
      const seen: string[] = [];
      const set = OutputSet.plan([{ path: `${dir}/${name}` }]);
      await set.commit([enc(`${n}`)], {
        onStep: async () => {
          for await (const e of Deno.readDir(dir)) seen.push(e.name);
        },
      });
      assert.equal(await Deno.readTextFile(`${dir}/${name}`), `${n}`);
      // Besides the outputs, only fixed 16-byte names ever appear, hidden from a plain listing.
      for (const seenName of seen) {
        assert.ok(
          seenName.length > 200 || /^\.ps-[0-9a-f]{8}\.(tmp|bak)$/.test(seenName),
          seenName,
        );
      }
      // writeFileAtomic, used elsewhere, takes the same names.
      await writeFileAtomic(`${dir}/${name}`, enc("again"));
      assert.equal(await Deno.readTextFile(`${dir}/${name}`), "again");
    }
    assert.equal((await leftovers(dir)).length, 0);
  });
});

Deno.test({
  name: "a path of PATH_MAX - 1 bytes is written; one byte more is refused up front",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await withTempDir(async (dir) => {
      // Nested folders of 255-byte names up to just under the limit.
      let folder = dir;
      while (new TextEncoder().encode(folder).length + 256 + 40 < PATH_MAX - 1) {
        folder += `/${"f".repeat(255)}`;
      }
      await Deno.mkdir(folder, { recursive: true });
      const room = PATH_MAX - 1 - new TextEncoder().encode(folder).length - 1;
      const longest = `${folder}/${"n".repeat(room)}`;
      assert.equal(new TextEncoder().encode(longest).length, PATH_MAX - 1);
      await OutputSet.plan([{ path: longest }]).commit([enc("fits")]);
      assert.equal(await Deno.readTextFile(longest), "fits");
      assert.throws(
        () => OutputSet.plan([{ path: `${longest}n` }]),
        plannedError(/: the path is 4096 bytes long; the limit is 4095$/),
      );
    });
  },
});

Deno.test("commit writes every file, replaces old ones and reports which", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/a.png`, "old png");
    const set = OutputSet.plan([
      { path: `${dir}/a.wav`, label: "the output" },
      { path: `${dir}/a.png`, label: "the spectrogram" },
    ]);
    assert.deepEqual(set.files.map((f) => f.exists), [false, true]);
    const written = await set.commit([enc("new wav"), () => Promise.resolve(enc("new png"))]);
    assert.deepEqual(written.map((w) => [w.replaced, w.bytes]), [[false, 7], [true, 7]]);
    assert.equal(await Deno.readTextFile(`${dir}/a.wav`), "new wav");
    assert.equal(await Deno.readTextFile(`${dir}/a.png`), "new png");
    assert.deepEqual(Object.keys(await snapshot(dir)).sort(), ["a.png", "a.wav"]);
  });
});

/** Three outputs: two replace old files (one of them read-only), one is new. */
async function threeOutputs(dir: string) {
  await Deno.writeTextFile(`${dir}/a.wav`, "old wav");
  await Deno.writeTextFile(`${dir}/b.png`, "old png");
  if (UNIX) await Deno.chmod(`${dir}/b.png`, 0o444);
  const set = OutputSet.plan([
    { path: `${dir}/a.wav`, label: "the output" },
    { path: `${dir}/b.png`, label: "the spectrogram" },
    { path: `${dir}/c.gif`, label: "the preview" },
  ]);
  return { set, contents: [enc("new wav"), enc("new png"), enc("new gif")] };
}

Deno.test("a failure at any step of any file leaves every output as it was, and nothing else", async (t) => {
  for (const phase of ["stage", "backup", "rename"] as const) {
    for (const index of [0, 1, 2]) {
      await t.step(`${phase} of file ${index} fails`, async () => {
        await withTempDir(async (dir) => {
          const { set, contents } = await threeOutputs(dir);
          const before = await snapshot(dir);
          await assert.rejects(
            set.commit(contents, {
              onStep: (s) => {
                if (s.phase === phase && s.index === index) {
                  throw Object.assign(new Error("No space left on device (os error 28)"), {
                    code: "ENOSPC",
                  });
                }
              },
            }),
            (e: unknown) => {
              assert.ok(e instanceof WriteFileError);
              assert.equal(e.path, set.files[index]!.path);
              assert.equal(
                e.message,
                `Cannot write '${
                  set.files[index]!.path
                }': no space left on the device of '${dir}'; no output was changed`,
              );
              return true;
            },
          );
          assert.deepEqual(await snapshot(dir), before);
        });
      });
    }
  }
});

Deno.test("a real rename failure after other renames puts the old files back (same inode, mode)", async () => {
  await withTempDir(async (dir) => {
    const { set, contents } = await threeOutputs(dir);
    const before = await snapshot(dir);
    // Just before its rename, the third target becomes a folder: rename(2) then fails with EISDIR.
    const onStep = async (s: CommitStep) => {
      if (s.phase === "rename" && s.index === 2) {
        await Deno.mkdir(`${dir}/c.gif`);
        await Deno.writeTextFile(`${dir}/c.gif/keep`, "not ours");
      }
    };
    await assert.rejects(set.commit(contents, { onStep }), (e: unknown) => {
      assert.ok(e instanceof WriteFileError);
      assert.ok(e.cause instanceof Deno.errors.IsADirectory);
      assert.match(
        e.message,
        /^Cannot write '.*\/c\.gif': '.*\/c\.gif' is now a folder; no output was changed$/,
      );
      return true;
    });
    const after = await snapshot(dir);
    assert.equal(after["c.gif/keep"]?.endsWith("not ours"), true);
    delete after["c.gif"];
    delete after["c.gif/keep"];
    assert.deepEqual(after, before);
  });
});

Deno.test("rollback never removes a file this run did not create", async () => {
  await withTempDir(async (dir) => {
    const set = OutputSet.plan([{ path: `${dir}/new.wav` }, { path: `${dir}/new.png` }]);
    const onStep = async (s: CommitStep) => {
      if (s.phase === "rename" && s.index === 1) {
        // Another process replaces the file this run just renamed into place...
        await Deno.writeTextFile(`${dir}/other`, "theirs");
        await Deno.rename(`${dir}/other`, `${dir}/new.wav`);
        // ...and this run's second rename then fails.
        throw new Error("injected");
      }
    };
    await assert.rejects(set.commit([enc("ours"), enc("ours")], { onStep }), WriteFileError);
    assert.deepEqual(Object.keys(await snapshot(dir)), ["new.wav"]);
    assert.equal(await Deno.readTextFile(`${dir}/new.wav`), "theirs");
  });
});

Deno.test("an abort before the last rename leaves nothing behind and rethrows its reason", async (t) => {
  class Interrupted extends Error {}
  for (const phase of ["stage", "backup", "rename"] as const) {
    for (const index of [0, 1, 2]) {
      await t.step(`abort before ${phase} ${index}`, async () => {
        await withTempDir(async (dir) => {
          const { set, contents } = await threeOutputs(dir);
          const before = await snapshot(dir);
          const controller = new AbortController();
          const reason = new Interrupted("Ctrl-C");
          const onStep = (s: CommitStep) => {
            if (s.phase === phase && s.index === index) controller.abort(reason);
          };
          await assert.rejects(
            set.commit(contents, { signal: controller.signal, onStep }),
            (e: unknown) => e === reason,
          );
          assert.deepEqual(await snapshot(dir), before);
        });
      });
    }
  }
  await t.step("abort while a content is produced, and during a long write", async () => {
    await withTempDir(async (dir) => {
      const { set } = await threeOutputs(dir);
      const before = await snapshot(dir);
      const controller = new AbortController();
      const big = new Uint8Array(8 << 20);
      // A timer that fires at the first turn of the event loop inside commit, as a signal does.
      const produce = () => {
        setTimeout(() => controller.abort(new Interrupted("timer")), 0);
        return big;
      };
      await assert.rejects(
        set.commit([produce, enc("p"), enc("g")], { signal: controller.signal }),
        Interrupted,
      );
      assert.deepEqual(await snapshot(dir), before);
    });
  });
  await t.step("an abort after the last rename is too late: the set is written", async () => {
    await withTempDir(async (dir) => {
      const { set, contents } = await threeOutputs(dir);
      const controller = new AbortController();
      const written = await set.commit(contents, { signal: controller.signal });
      controller.abort(new Interrupted("late"));
      assert.equal(written.length, 3);
      assert.equal(await Deno.readTextFile(`${dir}/c.gif`), "new gif");
      assert.deepEqual(await leftovers(dir), []);
    });
  });
});

Deno.test({
  name:
    "a replaced file keeps its mode and owner; the new file of a new path gets the default mode",
  ignore: !UNIX,
  fn: async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/a.wav`, "old");
      await Deno.chmod(`${dir}/a.wav`, 0o640);
      if (IS_ROOT) await Deno.chown(`${dir}/a.wav`, 4321, 4322);
      await Deno.writeTextFile(`${dir}/ro.png`, "old");
      await Deno.chmod(`${dir}/ro.png`, 0o400);
      await writeFileAtomic(`${dir}/probe`, enc(""));
      const defaultMode = (await Deno.stat(`${dir}/probe`)).mode! & 0o7777;
      await OutputSet.plan([{ path: `${dir}/a.wav` }, { path: `${dir}/ro.png` }, {
        path: `${dir}/new.gif`,
      }]).commit([enc("new"), enc("new"), enc("new")]);
      const a = await Deno.stat(`${dir}/a.wav`);
      assert.equal(a.mode! & 0o7777, 0o640);
      if (IS_ROOT) assert.deepEqual([a.uid, a.gid], [4321, 4322]);
      assert.equal((await Deno.stat(`${dir}/ro.png`)).mode! & 0o7777, 0o400);
      assert.equal((await Deno.stat(`${dir}/new.gif`)).mode! & 0o7777, defaultMode);
      assert.equal(await Deno.readTextFile(`${dir}/a.wav`), "new");
    });
  },
});

Deno.test({
  name: "a symbolic link is written through: the link stays, its target gets the content",
  ignore: !UNIX,
  fn: async () => {
    await withTempDir(async (dir) => {
      await Deno.mkdir(`${dir}/real`);
      await Deno.writeTextFile(`${dir}/real/a.wav`, "old");
      await Deno.chmod(`${dir}/real/a.wav`, 0o600);
      await Deno.symlink("real/a.wav", `${dir}/link.wav`);
      await Deno.symlink("link.wav", `${dir}/link2.wav`); // a chain
      await Deno.symlink("real/missing.png", `${dir}/dangling.png`);
      const set = OutputSet.plan([{ path: `${dir}/link2.wav` }, { path: `${dir}/dangling.png` }]);
      assert.deepEqual(set.files.map((f) => [f.target, f.exists]), [
        [`${dir}/real/a.wav`, true],
        [`${dir}/real/missing.png`, false],
      ]);
      await set.commit([enc("new"), enc("png")]);
      assert.equal(await Deno.readLink(`${dir}/link.wav`), "real/a.wav");
      assert.equal(await Deno.readLink(`${dir}/link2.wav`), "link.wav");
      assert.equal(await Deno.readTextFile(`${dir}/real/a.wav`), "new");
      assert.equal((await Deno.stat(`${dir}/real/a.wav`)).mode! & 0o777, 0o600);
      assert.equal(await Deno.readTextFile(`${dir}/real/missing.png`), "png");
      assert.deepEqual(await leftovers(dir), []);
    });
  },
});

Deno.test("createFolders makes the missing folders, and removes them again on failure", async () => {
  await withTempDir(async (dir) => {
    const frames = (n: number) =>
      Array.from({ length: n }, (_, k) => ({
        path: `${dir}/out/frames/${k}.png`,
        label: `frame ${k}`,
        createFolders: true,
      }));
    assert.throws(() => OutputSet.plan([{ path: `${dir}/out/x.png` }]), OutputPathError);
    await assert.rejects(
      OutputSet.plan(frames(3)).commit([enc("0"), enc("1"), () => {
        throw new Error("encoder failed");
      }]),
      /^WriteFileError: Cannot write '.*\/2\.png': writing failed: encoder failed; no output was changed$/,
    );
    assert.deepEqual(await snapshot(dir), {});
    await OutputSet.plan(frames(3)).commit([enc("0"), enc("1"), enc("2")]);
    assert.deepEqual(Object.keys(await snapshot(dir)).sort(), [
      "out",
      "out/frames",
      "out/frames/0.png",
      "out/frames/1.png",
      "out/frames/2.png",
    ]);
    // The folders exist now and are not this run's: a failure leaves them and their files.
    const before = await snapshot(dir);
    await assert.rejects(
      OutputSet.plan(frames(2)).commit([enc("x"), () => Promise.reject(new Error("no"))]),
      WriteFileError,
    );
    assert.deepEqual(await snapshot(dir), before);
  });
});

Deno.test("a target that changed between plan and commit is a WriteFileError, and nothing is written", async () => {
  await withTempDir(async (dir) => {
    const set = OutputSet.plan([{ path: `${dir}/a.wav` }]);
    await Deno.mkdir(`${dir}/a.wav`);
    await assert.rejects(
      set.commit([enc("x")]),
      /^WriteFileError: Cannot write '.*\/a\.wav': it is a folder$/,
    );
    assert.deepEqual(Object.keys(await snapshot(dir)), ["a.wav"]);
  });
});

Deno.test("two writers of the same path leave one complete file, never a mix", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.wav`;
    const a = new Uint8Array(3 << 20).fill(0xaa);
    const b = new Uint8Array(3 << 20).fill(0xbb);
    for (let round = 0; round < 5; round++) {
      await Promise.all([
        OutputSet.plan([{ path }, { path: `${dir}/a.png` }]).commit([a, enc("a")]),
        writeFileAtomic(path, b),
      ]);
      const got = await Deno.readFile(path);
      assert.ok(
        got.length === a.length && (got.every((v) => v === 0xaa) || got.every((v) => v === 0xbb)),
      );
    }
    // Two processes, each replacing the file twenty times while the other does.
    const script = (byte: number) =>
      `import { writeFileAtomic } from ${
        JSON.stringify(new URL("../../src/io/atomic.ts", import.meta.url).href)
      };
       const bytes = new Uint8Array(1 << 20).fill(${byte});
       for (let k = 0; k < 20; k++) await writeFileAtomic(${JSON.stringify(path)}, bytes);`;
    const run = (byte: number) =>
      new Deno.Command(Deno.execPath(), {
        args: ["eval", "--ext=ts", script(byte)],
        stdout: "null",
        stderr: "piped",
      }).output();
    const [x, y] = await Promise.all([run(0x11), run(0x22)]);
    assert.ok(
      x.success && y.success,
      new TextDecoder().decode(x.stderr) + new TextDecoder().decode(y.stderr),
    );
    const got = await Deno.readFile(path);
    assert.ok(
      got.length === 1 << 20 && (got.every((v) => v === 0x11) || got.every((v) => v === 0x22)),
    );
    assert.deepEqual(await leftovers(dir), []);
  });
});
