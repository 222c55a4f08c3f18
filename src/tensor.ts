/**
 * Host tensors for the pipelines: ORT's {@linkcode Tensor} plus the few
 * row-major operations the pipelines need between graphs.
 *
 * @module
 */

import { allocate, type DataType, elementCount, Tensor } from "../ffi/mod.ts";

export { type DataType, elementCount, Tensor };

/**
 * Joins tensors along dimension 0 (the batch): `[a; b]`.
 *
 * @throws {RangeError} when types or trailing dims differ
 */
export function concatBatch<T extends DataType>(parts: readonly Tensor<T>[]): Tensor<T> {
  const first = parts[0];
  if (first === undefined) throw new RangeError("Cannot concatenate zero tensors");
  const rest = first.dims.slice(1);
  let batch = 0;
  for (const p of parts) {
    if (p.type !== first.type || p.dims.slice(1).join() !== rest.join()) {
      throw new RangeError(
        `Cannot concatenate a ${p.type} [${p.dims}] tensor with a ${first.type} [${first.dims}] one`,
      );
    }
    batch += p.dims[0]!;
  }
  const out = allocate(first.type, batch * elementCount(rest));
  let offset = 0;
  for (const p of parts) {
    // deno-lint-ignore no-explicit-any -- one element type, checked above
    (out as any).set(p.data, offset);
    offset += p.size;
  }
  return new Tensor(first.type, out, [batch, ...rest]);
}

/** Repeats a tensor `times` along dimension 0: `[a; a; ...]`. */
export function repeatBatch<T extends DataType>(t: Tensor<T>, times: number): Tensor<T> {
  return concatBatch(Array.from({ length: times }, () => t));
}

/** Rows `start .. start + count` of dimension 0, copied. */
export function sliceBatch<T extends DataType>(
  t: Tensor<T>,
  start: number,
  count: number,
): Tensor<T> {
  const row = elementCount(t.dims.slice(1));
  return new Tensor(
    t.type,
    t.data.slice(start * row, (start + count) * row) as Tensor<T>["data"],
    [count, ...t.dims.slice(1)],
  );
}

/**
 * Along dimension 1 of a [batch, length, ...] tensor, the positions
 * `start .. start + count`, copied.
 */
export function sliceSequence<T extends DataType>(
  t: Tensor<T>,
  start: number,
  count: number,
): Tensor<T> {
  const [batch, length, ...inner] = t.dims;
  if (batch === undefined || length === undefined || start < 0 || start + count > length) {
    throw new RangeError(
      `Cannot take positions ${start}..${start + count} of a [${t.dims}] tensor`,
    );
  }
  const width = elementCount(inner);
  const out = allocate(t.type, batch * count * width);
  for (let b = 0; b < batch; b++) {
    const from = (b * length + start) * width;
    // deno-lint-ignore no-explicit-any -- same element type
    (out as any).set(t.data.subarray(from, from + count * width), b * count * width);
  }
  return new Tensor(t.type, out, [batch, count, ...inner]);
}

/**
 * Appends `extra` ([batch, k, ...]) after `t` ([batch, n, ...]) along
 * dimension 1, giving [batch, n + k, ...].
 */
export function concatSequence<T extends DataType>(t: Tensor<T>, extra: Tensor<T>): Tensor<T> {
  const [batch, n, ...inner] = t.dims;
  const [batch2, k, ...inner2] = extra.dims;
  if (batch !== batch2 || n === undefined || k === undefined || inner.join() !== inner2.join()) {
    throw new RangeError(`Cannot append a [${extra.dims}] tensor to a [${t.dims}] one along dim 1`);
  }
  const width = elementCount(inner);
  const out = allocate(t.type, batch! * (n + k) * width);
  for (let b = 0; b < batch!; b++) {
    // deno-lint-ignore no-explicit-any -- same element type
    const o = out as any;
    o.set(t.data.subarray(b * n * width, (b + 1) * n * width), b * (n + k) * width);
    o.set(extra.data.subarray(b * k * width, (b + 1) * k * width), (b * (n + k) + n) * width);
  }
  return new Tensor(t.type, out, [batch!, n + k, ...inner]);
}
