/**
 * Graph precision at the boundary: the host side of every pipeline computes in float32 (tensor
 * glue, guidance, scheduler steps), and a graph exported in float16 (manifest `dtype: "fp16"`)
 * gets its float inputs converted to float16 and gives its float16 outputs back as float32.
 *
 * Which inputs are float16 is read from the session (the graph's declared element types, which
 * the manifest check compared with the manifest), so one code path serves fp32 and fp16 folders,
 * and fp32 graphs see exactly the tensors they saw before. float16 to float32 is exact, and
 * float32 to float16 rounds to nearest, ties to even (`Float16Array`'s conversion, as torch's
 * `.half()`), so a value that came out of an fp16 graph goes back in unchanged.
 *
 * @module
 */

import {
  type AsyncRunOptions,
  type Feeds,
  type RunOptions,
  type Session,
  Tensor,
} from "../../ffi/mod.ts";

/** `t` in the element type the session's input `name` declares, when that is another float type. */
export function asInput(session: Session, name: string, t: Tensor): Tensor {
  const want = session.inputs.find((i) => i.name === name)?.type;
  if (want === "float16" && t.type === "float32") {
    return new Tensor("float16", Float16Array.from(t.data as Float32Array), t.dims);
  }
  if (want === "float32" && t.type === "float16") return asFloat32(t);
  return t;
}

/** A float16 tensor as float32 (exact); any other tensor unchanged. */
export function asFloat32<T extends Tensor>(t: T): T | Tensor<"float32"> {
  if (t.type !== "float16") return t;
  return new Tensor("float32", Float32Array.from(t.data as Float16Array), t.dims);
}

function convertFeeds(session: Session, feeds: Feeds): Feeds {
  let out: Record<string, Feeds[string]> | undefined;
  for (const [name, feed] of Object.entries(feeds)) {
    if (!(feed instanceof Tensor)) continue;
    const converted = asInput(session, name, feed);
    if (converted !== feed) (out ??= { ...feeds })[name] = converted;
  }
  return out ?? feeds;
}

function convertOutputs(outputs: Record<string, Tensor>): Record<string, Tensor> {
  for (const [name, t] of Object.entries(outputs)) outputs[name] = asFloat32(t);
  return outputs;
}

/** {@linkcode Session.run} with host float32 on both sides of a graph of any float precision. */
export function runFloat32(
  session: Session,
  feeds: Feeds,
  options?: RunOptions,
): Record<string, Tensor> {
  return convertOutputs(session.run(convertFeeds(session, feeds), options));
}

/** {@linkcode Session.runAsync} with host float32 on both sides of a graph of any float precision. */
export async function runFloat32Async(
  session: Session,
  feeds: Feeds,
  options?: AsyncRunOptions,
): Promise<Record<string, Tensor>> {
  return convertOutputs(await session.runAsync(convertFeeds(session, feeds), options));
}
