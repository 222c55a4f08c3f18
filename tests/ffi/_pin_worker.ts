// Loads ONNX Runtime in this Worker's realm and replies (see _pin_check.ts).
import { ortLibrary } from "../../ffi/mod.ts";

const self = globalThis as unknown as Worker & typeof globalThis;
self.onmessage = () => {
  ortLibrary();
  self.postMessage(null);
};
