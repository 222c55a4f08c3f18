import assert from "node:assert/strict";
import { removePendingWrites, writeFileAtomic, WriteFileError } from "../../src/io/atomic.ts";

const enc = (s: string) => new TextEncoder().encode(s);

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "parastep-atomic-" });
  try {
    await fn(dir);
  } finally {
    await Deno.chmod(dir, 0o755).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("writeFileAtomic writes the bytes and leaves no temporary file", async () => {
  await withTempDir(async (dir) => {
    const bytes = new Uint8Array(100_000).map((_, k) => (k * 2654435761) >>> 24); // > one write() chunk
    await writeFileAtomic(`${dir}/out.wav`, bytes);
    assert.deepEqual(await Deno.readFile(`${dir}/out.wav`), bytes);
    assert.deepEqual(await listDir(dir), ["out.wav"]);
  });
});

Deno.test("writeFileAtomic replaces an existing file", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/out.txt`, "old content that is longer than the new one");
    await writeFileAtomic(`${dir}/out.txt`, enc("new"));
    assert.equal(await Deno.readTextFile(`${dir}/out.txt`), "new");
    assert.deepEqual(await listDir(dir), ["out.txt"]);
  });
});

Deno.test("writeFileAtomic writes an empty file", async () => {
  await withTempDir(async (dir) => {
    await writeFileAtomic(`${dir}/empty.bin`, new Uint8Array(0));
    assert.equal((await Deno.stat(`${dir}/empty.bin`)).size, 0);
  });
});

Deno.test("writeFileAtomic into a missing directory fails naming the path and creates nothing", async () => {
  await withTempDir(async (dir) => {
    const target = `${dir}/missing/out.wav`;
    await assert.rejects(() => writeFileAtomic(target, enc("x")), (err: unknown) => {
      assert.ok(err instanceof WriteFileError);
      assert.equal(err.path, target);
      assert.equal(
        err.message,
        `Cannot write '${target}': the folder '${dir}/missing' does not exist`,
      );
      assert.ok(err.cause instanceof Deno.errors.NotFound);
      return true;
    });
    assert.deepEqual(await listDir(dir), []);
  });
});

Deno.test("writeFileAtomic over a directory fails at rename and removes its temporary file", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/target`);
    await Deno.writeTextFile(`${dir}/target/keep.txt`, "keep");
    await assert.rejects(() => writeFileAtomic(`${dir}/target`, enc("x")), (err: unknown) => {
      assert.ok(err instanceof WriteFileError);
      assert.match(err.message, new RegExp(`^Cannot write '${dir}/target': `));
      assert.ok(!err.message.includes("\n"));
      return true;
    });
    assert.deepEqual(await listDir(dir), ["target"]);
    assert.equal(await Deno.readTextFile(`${dir}/target/keep.txt`), "keep");
  });
});

/**
 * Whether a chmod 0o555 directory really refuses new files here. It does not for root (which ignores
 * directory permissions) or on Windows, where the unwritable-directory test is then skipped.
 */
async function readOnlyDirsRefuseWrites(): Promise<boolean> {
  if (Deno.build.os === "windows") return false;
  const dir = await Deno.makeTempDir({ prefix: "parastep-probe-" });
  try {
    await Deno.chmod(dir, 0o555);
    await Deno.writeFile(`${dir}/probe`, new Uint8Array(1));
    return false;
  } catch (err) {
    return err instanceof Deno.errors.PermissionDenied;
  } finally {
    await Deno.chmod(dir, 0o755);
    await Deno.remove(dir, { recursive: true });
  }
}

const CAN_TEST_READ_ONLY_DIR = await readOnlyDirsRefuseWrites();

Deno.test({
  name: "writeFileAtomic into an unwritable directory fails with a one-line message",
  ignore: !CAN_TEST_READ_ONLY_DIR,
  fn: async () => {
    await withTempDir(async (dir) => {
      await Deno.mkdir(`${dir}/ro`);
      await Deno.chmod(`${dir}/ro`, 0o555);
      const target = `${dir}/ro/out.wav`;
      await assert.rejects(() => writeFileAtomic(target, enc("x")), (err: unknown) => {
        assert.ok(err instanceof WriteFileError);
        assert.equal(
          err.message,
          `Cannot write '${target}': permission denied to create files in '${dir}/ro'`,
        );
        assert.ok(err.cause instanceof Deno.errors.PermissionDenied);
        return true;
      });
      assert.deepEqual(await listDir(`${dir}/ro`), []);
    });
  },
});

Deno.test("removePendingWrites removes the temporary file of a write in progress; the target never appears", async () => {
  await withTempDir(async (dir) => {
    const write = writeFileAtomic(`${dir}/out.wav`, new Uint8Array(64 * 1024 * 1024));
    const settled = write.then(() => null, (e: unknown) => e);
    // Wait for the temporary file to exist (writing 64 MiB takes far longer).
    let names: string[] = [];
    while ((names = await listDir(dir)).length === 0) await new Promise((r) => setTimeout(r, 1));
    assert.match(names[0]!, /^\.ps-[0-9a-f]{8}\.tmp$/);
    // Nothing had been renamed into place, so nothing is left to put back.
    assert.deepEqual(removePendingWrites(), []);
    assert.deepEqual(await listDir(dir), []);
    const error = await settled;
    assert.ok(error instanceof WriteFileError, `expected a WriteFileError, got ${String(error)}`);
    assert.deepEqual(await listDir(dir), []);
    assert.deepEqual(removePendingWrites(), [], "nothing is pending any more");
  });
});
