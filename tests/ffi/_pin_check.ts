// Run as its own process by library_test.ts: a Worker loads ONNX Runtime (this
// main realm never does), is terminated, and this prints whether the library
// is still mapped into the process afterwards.
const worker = new Worker(new URL("./_pin_worker.ts", import.meta.url), { type: "module" });
await new Promise((resolve) => {
  worker.onmessage = resolve;
  worker.postMessage(null);
});
const mapped = () => Deno.readTextFileSync("/proc/self/maps").includes("libonnxruntime");
const whileAlive = mapped();
worker.terminate();
// Deno closes the Worker's library handle as the Worker winds down: give it time.
let after = true;
for (let k = 0; k < 50 && after; k++) {
  await new Promise((r) => setTimeout(r, 20));
  after = mapped();
}
console.log(JSON.stringify({ whileAlive, after }));
