import assert from "node:assert/strict";
import {
  createHeartbeats,
  type Heartbeat,
  HeartbeatWriter,
  readHeartbeat,
  StallDetector,
  stallTimeout,
} from "../../src/parastep/heartbeat.ts";

/** Readings for a detector: rank -> heartbeat, edited by the test between checks. */
function ranks(n: number): Heartbeat[] {
  return Array.from({ length: n }, () => ({ beat: 0, step: null, phase: "idle", slowestMs: 0 }));
}

Deno.test("a heartbeat writer's calls show in the reader: beats, step, phase, slowest call", async () => {
  const buffer = createHeartbeats(3);
  assert.deepEqual(readHeartbeat(buffer, 1), { beat: 0, step: null, phase: "idle", slowestMs: 0 });
  const writer = new HeartbeatWriter(buffer, 1);
  writer.modelStart(4);
  assert.deepEqual(readHeartbeat(buffer, 1), { beat: 1, step: 4, phase: "model", slowestMs: 0 });
  await new Promise((r) => setTimeout(r, 30));
  writer.modelEnd();
  const after = readHeartbeat(buffer, 1);
  assert.equal(after.beat, 2);
  assert.equal(after.step, 4);
  assert.equal(after.phase, "idle");
  assert.ok(after.slowestMs >= 30, `slowest ${after.slowestMs} ms`);
  writer.hostStart(5);
  assert.deepEqual(readHeartbeat(buffer, 1).phase, "host");
  writer.hostEnd();
  writer.hostStart(null);
  assert.equal(readHeartbeat(buffer, 1).step, 5, "guidance keeps the last step");
  writer.hostEnd();
  writer.done();
  assert.equal(readHeartbeat(buffer, 1).phase, "done");
  assert.equal(readHeartbeat(buffer, 1).beat, 7);
  // The other ranks' slots are untouched.
  assert.deepEqual(readHeartbeat(buffer, 0), { beat: 0, step: null, phase: "idle", slowestMs: 0 });
  assert.deepEqual(readHeartbeat(buffer, 2), { beat: 0, step: null, phase: "idle", slowestMs: 0 });
  assert.throws(() => new HeartbeatWriter(buffer, 3), RangeError);
});

Deno.test("the default stall timeout is max(60 s, 10 x the slowest call); an explicit one is kept", () => {
  assert.equal(stallTimeout(undefined, 0), 60_000);
  assert.equal(stallTimeout(undefined, 5_999), 60_000);
  assert.equal(stallTimeout(undefined, 8_000), 80_000);
  assert.equal(stallTimeout(1_500, 8_000), 1_500);
});

Deno.test("a rank inside its model call past the timeout is stalled, whatever the others do", () => {
  const beats = ranks(3);
  const detector = new StallDetector(3, 1000, 0);
  beats[1] = { beat: 5, step: 7, phase: "model", slowestMs: 20 };
  assert.equal(detector.check((r) => beats[r]!, 100), null);
  // Rank 0 keeps moving; rank 1 does not.
  for (let t = 200; t < 1100; t += 100) {
    beats[0] = { ...beats[0]!, beat: t, phase: t % 200 === 0 ? "model" : "idle" };
    assert.equal(detector.check((r) => beats[r]!, t), null, `at ${t} ms`);
  }
  beats[0] = { ...beats[0]!, beat: 1100 };
  assert.deepEqual(detector.check((r) => beats[r]!, 1100), {
    rank: 1,
    step: 7,
    phase: "model",
    stillMs: 1000,
    timeoutMs: 1000,
  });
});

Deno.test("ranks waiting for a message are not stalled while another rank progresses", () => {
  const beats = ranks(3);
  const detector = new StallDetector(3, 1000, 0);
  // Ranks 1 and 2 wait through a long warm-up while rank 0 keeps computing.
  for (let t = 0; t <= 10_000; t += 250) {
    beats[0] = { beat: t, step: t / 250, phase: "model", slowestMs: 250 };
    assert.equal(detector.check((r) => beats[r]!, t), null, `at ${t} ms`);
  }
});

Deno.test("no running rank moving for the timeout, none busy, is a stall naming the stillest rank", () => {
  const beats = ranks(3);
  const detector = new StallDetector(3, 1000, 0);
  beats[0] = { beat: 1, step: 4, phase: "idle", slowestMs: 10 };
  assert.equal(detector.check((r) => beats[r]!, 100), null);
  beats[2] = { beat: 1, step: 3, phase: "idle", slowestMs: 10 };
  assert.equal(detector.check((r) => beats[r]!, 300), null);
  // Rank 1 never moved since the start; the others stopped at 100 and 300 ms.
  assert.equal(detector.check((r) => beats[r]!, 999), null);
  const stall = detector.check((r) => beats[r]!, 1300);
  assert.deepEqual(stall, { rank: 1, step: null, phase: "idle", stillMs: 1300, timeoutMs: 1000 });
});

Deno.test("finished ranks are not watched, and the adaptive timeout follows the slowest call", () => {
  const beats = ranks(2);
  const detector = new StallDetector(2, undefined, 0);
  beats[0] = { beat: 9, step: 11, phase: "done", slowestMs: 7_000 };
  beats[1] = { beat: 3, step: 10, phase: "model", slowestMs: 100 };
  assert.equal(detector.check((r) => beats[r]!, 1), null);
  // 10 x 7 s = 70 s: not yet at 69 s, stalled at 70 s; rank 0 (done) is never named.
  assert.equal(detector.check((r) => beats[r]!, 69_001), null);
  assert.deepEqual(detector.check((r) => beats[r]!, 70_001), {
    rank: 1,
    step: 10,
    phase: "model",
    stillMs: 70_000,
    timeoutMs: 70_000,
  });
  const allDone = new StallDetector(1, 10, 0);
  assert.equal(
    allDone.check(() => ({ beat: 1, step: 3, phase: "done", slowestMs: 1 }), 1e6),
    null,
  );
});
