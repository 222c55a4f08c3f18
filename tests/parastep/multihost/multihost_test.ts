/**
 * Several hosts end to end: `parastep serve` processes and `parastep gen --nats` against a real
 * nats-server on 127.0.0.1 (started here at a free port; the tests are skipped, with the reason
 * printed, only when there is no nats-server binary). Outputs are compared bit for bit with
 * `gen --gpus N` on this host's Workers, the same seed.
 */

import { type NatsServer, skipNats, startNatsServer } from "../../support/nats_server.ts";
import { assert, assertEquals } from "../_assert.ts";
import { MODELS, parastepNet, readOrNull, startServe, tempDir } from "./_hosts.ts";

const ignore = skipNats();
const MODEL = "audioldm2-tiny";
const GEN = ["gen", "--model", MODEL, "--prompt", "rain on a tin roof", "--ep", "cpu"];

async function gen(args: string[], out: string) {
  const result = await parastepNet([...GEN, ...args, "--out", out]);
  return { ...result, bytes: await readOrNull(out) };
}

/** A test against a nats-server of its own (skipped, with the reason, where there is none). */
function natsTest(
  name: string,
  fn: (server: NatsServer) => Promise<void>,
  options: Parameters<typeof startNatsServer>[0] = {},
): void {
  Deno.test({
    name,
    ignore,
    sanitizeResources: false,
    async fn() {
      await using server = await startNatsServer(options);
      await fn(server);
    },
  });
}

natsTest(
  "gen --nats with two serving hosts equals gen --gpus N bit for bit: gather, " +
    "all-gather, 2 remote + 1 local, 1 remote + 2 local",
  async (server) => {
    await using dir = await tempDir();
    await using a = await startServe(server.url, "a");
    await using b = await startServe(server.url, "b");
    const cases: { name: string; local: string[]; nats: string[] }[] = [
      { name: "n2-gather", local: ["--gpus", "2"], nats: ["--gpus", "2"] },
      {
        name: "n2-allgather",
        local: ["--gpus", "2", "--exchange", "allgather"],
        nats: ["--gpus", "2", "--exchange", "allgather"],
      },
      { name: "n3-gather", local: ["--gpus", "3"], nats: ["--gpus", "3"] },
      {
        name: "n3-local2",
        local: ["--gpus", "3", "--exchange", "allgather"],
        nats: ["--gpus", "3", "--exchange", "allgather", "--local-ranks", "2"],
      },
    ];
    for (const c of cases) {
      const reference = await gen([...c.local, "--seed", "7"], `${dir.path}/${c.name}-ref.wav`);
      assertEquals(reference.code, 0, reference.stderr);
      const remote = await gen(
        [...c.nats, "--seed", "7", "--nats", server.url],
        `${dir.path}/${c.name}-nats.wav`,
      );
      assertEquals(remote.code, 0, `${c.name}: ${remote.stderr}`);
      assert(remote.bytes !== null && reference.bytes !== null);
      assertEquals(remote.bytes.length, reference.bytes.length);
      assert(
        remote.bytes.every((v, i) => v === reference.bytes![i]),
        `${c.name}: the NATS output differs from gen ${c.local.join(" ")}`,
      );
      assert(/ParaStep on [23] devices/.test(remote.stdout), remote.stdout);
    }
    // Every remote rank ran: both hosts opened sessions and ended them.
    assert(/session .*: ranks 1 \(device 0\)/.test(a.output()), a.output());
    assert(/session .*: ranks 2 \(device 0\)/.test(b.output()), b.output());
    assert(/ended/.test(b.output()));
  },
);

natsTest(
  "info --nats lists every serving host with its devices, EP and models with hashes",
  async (server) => {
    await using _a = await startServe(server.url, "a");
    await using _b = await startServe(server.url, "b", { extra: ["--gpus", "2"] });
    const { code, stdout, stderr } = await parastepNet(["info", "--nats", server.url, "--json"]);
    assertEquals(code, 0, stderr);
    const { hosts } = JSON.parse(stdout);
    assertEquals(hosts.map((h: { name: string }) => h.name), ["a", "b"]);
    assertEquals(hosts[1].devices, [
      { index: 0, ep: "cpu", busy: false },
      { index: 1, ep: "cpu", busy: false },
    ]);
    const tiny = hosts[0].models.find((m: { name: string }) => m.name === MODEL);
    assertEquals(tiny.family, "audioldm2");
    assert(/^[0-9a-f]{64}$/.test(tiny.hash));
    const text = await parastepNet(["info", "--nats", server.url]);
    assert(/host a: parastep .*devices cpu:0/.test(text.stdout), text.stdout);
    assert(/host b: .*devices cpu:0, cpu:1/.test(text.stdout), text.stdout);
  },
);

natsTest(
  "a host killed (-9) mid-run: exit 1 within the rank timeout naming host, rank and " +
    "step, no output; the other host serves the next generation",
  async (server) => {
    await using dir = await tempDir();
    await using a = await startServe(server.url, "a");
    const b = await startServe(server.url, "b");
    const out = `${dir.path}/lost.wav`;
    const running = gen(
      [
        "--gpus",
        "3",
        "--steps",
        "900",
        "--seed",
        "3",
        "--rank-timeout",
        "3",
        "--nats",
        server.url,
      ],
      out,
    );
    // Kill host b (rank 2) once its heartbeat shows step 20 or later.
    await b.waitFor(/rank 2 at step (\d+)/, (m) => Number(m[1]) >= 20);
    const killedAt = performance.now();
    assertEquals(await b.stop("SIGKILL"), 137);
    const result = await running;
    const afterKillMs = performance.now() - killedAt;
    assertEquals(result.code, 1, result.stderr);
    assert(
      /^parastep: Cannot run ParaStep as rank 2 was lost at step \d+: host b stopped answering \(no heartbeat for 3\.\d s\)\n$/
        .test(result.stderr),
      result.stderr,
    );
    // 3 s of silence, plus the shutdown of the other ranks; never the 10 s close timeout.
    assert(afterKillMs < 3000 + 6000, `gen took ${afterKillMs.toFixed(0)} ms after the kill`);
    assertEquals(result.bytes, null);
    await a.waitFor(/session \S+ ended/);
    // Host a is free again and serves the next generation.
    const next = await gen(
      ["--gpus", "2", "--seed", "3", "--nats", server.url],
      `${dir.path}/next.wav`,
    );
    assertEquals(next.code, 0, next.stderr);
    const reference = await gen(["--gpus", "2", "--seed", "3"], `${dir.path}/next-ref.wav`);
    assertEquals(next.bytes, reference.bytes);
  },
);

natsTest(
  "serve stopped with SIGTERM mid-run exits 0 after aborting its rank; gen exits 1 naming " +
    "the host",
  async (server) => {
    await using dir = await tempDir();
    const a = await startServe(server.url, "a");
    const running = gen(
      ["--gpus", "2", "--steps", "900", "--nats", server.url],
      `${dir.path}/stopped.wav`,
    );
    await a.waitFor(/rank 1 at step (\d+)/, (m) => Number(m[1]) >= 10);
    assertEquals(await a.stop("SIGTERM"), 0);
    assert(/rank 1 closed/.test(a.output()), a.output());
    assert(/parastep serve: stopped \(SIGTERM\)/.test(a.output()), a.output());
    const result = await running;
    assertEquals(result.code, 1);
    assert(
      /rank 1 was lost at step \d+: host a stopped answering \(host a is stopping\)/.test(
        result.stderr,
      ),
      result.stderr,
    );
    assertEquals(result.bytes, null);
  },
);

natsTest(
  "a host whose model folder has another manifest hash refuses in one line; gen exits 2 " +
    "naming the host, before any work",
  async (server) => {
    await using dir = await tempDir();
    const models = `${dir.path}/models`;
    await Deno.mkdir(`${models}/${MODEL}`, { recursive: true });
    for await (const entry of Deno.readDir(`${MODELS}/${MODEL}`)) {
      if (entry.isFile) {
        await Deno.copyFile(
          `${MODELS}/${MODEL}/${entry.name}`,
          `${models}/${MODEL}/${entry.name}`,
        );
      }
    }
    const manifest = JSON.parse(await Deno.readTextFile(`${models}/${MODEL}/manifest.json`));
    manifest.source.seed = 1;
    await Deno.writeTextFile(`${models}/${MODEL}/manifest.json`, JSON.stringify(manifest));
    await using _c = await startServe(server.url, "c", { models });
    const result = await gen(["--gpus", "2", "--nats", server.url], `${dir.path}/x.wav`);
    assertEquals(result.code, 2);
    assert(
      /^parastep: Cannot run ParaStep over NATS as host c: model audioldm2-tiny has content hash [0-9a-f]{12}…, the coordinator's is [0-9a-f]{12}…: export or copy the same folder to c's --models\n$/
        .test(result.stderr),
      result.stderr,
    );
    assertEquals(result.bytes, null);
    // A model the host does not have at all.
    await Deno.remove(`${models}/${MODEL}`, { recursive: true });
    const missing = await gen(["--gpus", "2", "--nats", server.url], `${dir.path}/y.wav`);
    assertEquals(missing.code, 2);
    assert(
      /as host c: model audioldm2-tiny cannot be served \(Cannot find model/.test(missing.stderr),
      missing.stderr,
    );
    // Too few hosts: one line listing what answered.
    const few = await gen(["--gpus", "3", "--nats", server.url], `${dir.path}/z.wav`);
    assertEquals(few.code, 2);
    assert(
      /only 1 free remote devices were found for ranks 1\.\.2: c \(1 free of 1\)/.test(
        few.stderr,
      ),
      few.stderr,
    );
  },
);

natsTest(
  "bad credentials: serve and gen say so in one line (exit 1); a creds file others may " +
    "read is refused (exit 2)",
  async (server) => {
    const bad = server.url.replace("nats://", "nats://alice:wrong@");
    const serve = await parastepNet(["serve", "--nats", bad, "--name", "a", "--ep", "cpu"]);
    assertEquals(serve.code, 1);
    assert(
      /^parastep: Cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+ as the server refused the credentials .*sent user and password\)/
        .test(serve.stderr),
      serve.stderr,
    );
    assert(!serve.stderr.includes("wrong"));
    const coordinator = await gen(["--gpus", "2", "--nats", bad], "/tmp/never-written.wav");
    assertEquals(coordinator.code, 1);
    assert(/refused the credentials/.test(coordinator.stderr), coordinator.stderr);
    await using dir = await tempDir();
    const creds = `${dir.path}/user.creds`;
    await Deno.writeTextFile(creds, "not creds\n", { mode: 0o644 });
    await Deno.chmod(creds, 0o644);
    const open = await parastepNet(["serve", "--nats", server.url, "--nats-creds", creds]);
    assertEquals(open.code, 2);
    assert(/group or others may read it \(mode 644\): chmod 600/.test(open.stderr), open.stderr);
    await Deno.chmod(creds, 0o600);
    const notCreds = await parastepNet(["serve", "--nats", server.url, "--nats-creds", creds]);
    assertEquals(notCreds.code, 2);
    assert(/holds no user JWT and NKey seed/.test(notCreds.stderr), notCreds.stderr);
    // Good credentials pass.
    const good = server.url.replace("nats://", "nats://alice:s3cret@");
    const info = await parastepNet(["info", "--nats", good]);
    assertEquals(info.code, 0, info.stderr);
  },
  { user: "alice", pass: "s3cret" },
);

natsTest(
  "two coordinators at the same time on one NATS server never mix: each equals its own " +
    "gen --gpus 2",
  async (server) => {
    await using dir = await tempDir();
    await using _a = await startServe(server.url, "a");
    await using _b = await startServe(server.url, "b");
    const [one, two] = await Promise.all([
      gen(
        ["--gpus", "2", "--seed", "11", "--steps", "60", "--hosts", "a", "--nats", server.url],
        `${dir.path}/1.wav`,
      ),
      gen(
        ["--gpus", "2", "--seed", "12", "--steps", "60", "--hosts", "b", "--nats", server.url],
        `${dir.path}/2.wav`,
      ),
    ]);
    assertEquals(one.code, 0, one.stderr);
    assertEquals(two.code, 0, two.stderr);
    const ref1 = await gen(
      ["--gpus", "2", "--seed", "11", "--steps", "60"],
      `${dir.path}/r1.wav`,
    );
    const ref2 = await gen(
      ["--gpus", "2", "--seed", "12", "--steps", "60"],
      `${dir.path}/r2.wav`,
    );
    assertEquals(one.bytes, ref1.bytes);
    assertEquals(two.bytes, ref2.bytes);
    assert(one.bytes !== null && two.bytes !== null);
    assert(!one.bytes.every((v, i) => v === two.bytes![i]));
  },
);

natsTest(
  "--on-rank-loss continue: a host killed mid-run, the ranks left finish; the output " +
    "equals the in-process engine told the same loss at the same step (gather, all-gather)",
  async (server) => {
    await using dir = await tempDir();
    await using _a = await startServe(server.url, "a");
    for (const exchange of ["gather", "allgather"]) {
      const b = await startServe(server.url, "b");
      const args = ["--gpus", "3", "--steps", "300", "--seed", "5", "--exchange", exchange];
      const running = gen(
        [...args, "--rank-timeout", "2", "--on-rank-loss", "continue", "--nats", server.url],
        `${dir.path}/${exchange}.wav`,
      );
      await b.waitFor(/rank 2 at step (\d+)/, (m) => Number(m[1]) >= 20);
      assertEquals(await b.stop("SIGKILL"), 137);
      const result = await running;
      assertEquals(result.code, 0, result.stderr);
      const loss = /\(rank 2 lost at step (\d+), the rest ran at N=2\)/.exec(result.stdout);
      assert(loss !== null, result.stdout);
      const step = Number(loss[1]);
      assertEquals((step - 5) % 3, 0, `step ${step} is a round start of W=5, N=3`);
      const reference = await gen(
        [...args, "--in-process", "--replay-loss", `${step}:2`],
        `${dir.path}/${exchange}-ref.wav`,
      );
      assertEquals(reference.code, 0, reference.stderr);
      assert(reference.stdout.includes(`(a rank lost at step ${step}, the rest ran at N=2)`));
      assert(result.bytes !== null && reference.bytes !== null);
      assertEquals(result.bytes, reference.bytes, `${exchange}: continue differs from replay`);
      // Not the unbroken run's output: the re-plan changed the trajectory.
      const unbroken = await gen([...args, "--in-process"], `${dir.path}/${exchange}-n3.wav`);
      assert(!unbroken.bytes!.every((v, i) => v === result.bytes![i]));
    }
  },
);

Deno.test({
  name: "nats-server killed mid-run: gen exits 1 at once naming the lost connection, nothing " +
    "written; serve stays up and ends the session",
  ignore,
  sanitizeResources: false,
  fn: async () => {
    await using dir = await tempDir();
    const server = await startNatsServer();
    await using a = await startServe(server.url, "a");
    const out = `${dir.path}/gone.wav`;
    const running = gen(["--gpus", "2", "--steps", "900", "--nats", server.url], out);
    await a.waitFor(/rank 1 at step (\d+)/, (m) => Number(m[1]) >= 10);
    const killedAt = performance.now();
    await server.kill();
    const result = await running;
    const ms = performance.now() - killedAt;
    assertEquals(result.code, 1);
    assert(
      /^parastep: Cannot run ParaStep as rank 0 failed \(exchange\): .*lost its connection to the NATS server at 127\.0\.0\.1:\d+/
        .test(result.stderr),
      result.stderr,
    );
    // No wait for a host that cannot be reached any more (the close timeout is 10 s).
    assert(ms < 8000, `gen took ${ms.toFixed(0)} ms after the server was killed`);
    assertEquals(result.bytes, null);
    await a.waitFor(/ending session \S+: the coordinator stopped answering/);
    await a.waitFor(/session \S+ ended/);
    assertEquals(await a.stop("SIGTERM"), 0);
  },
});
