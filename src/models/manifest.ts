/**
 * `manifest.json` of a model folder: its schema, one validator, and the
 * check of a component's manifest entry against the session ORT opened.
 *
 * The schema is documented in models/README.md.
 *
 * @module
 */

import type { DataType, Session, TensorInfo } from "../../ffi/mod.ts";

/** A graph input or output as the manifest declares it. */
export interface IoSpec {
  readonly name: string;
  readonly dtype: DataType;
  /** Numbers where fixed, names where symbolic. */
  readonly dims: readonly (number | string)[];
}

/** One ONNX graph of a model folder. */
export interface ComponentSpec {
  /** File name relative to the folder. */
  readonly file: string;
  readonly inputs: readonly IoSpec[];
  readonly outputs: readonly IoSpec[];
}

/** A tokenizer folder and the limits the pipeline applies. */
export interface TokenizerSpec {
  /** Folder (relative) holding `tokenizer.json` and `tokenizer_config.json`. */
  readonly dir: string;
  readonly modelMaxLength: number;
  readonly padTokenId: number;
}

/** Default generation settings of a model. */
export interface ModelDefaults {
  readonly steps: number;
  readonly guidance: number;
  readonly warmup: number;
  /** Seconds of audio (audio families). */
  readonly duration: number;
}

/** A validated `manifest.json`. */
export interface Manifest {
  readonly format: "parastep-model";
  readonly formatVersion: 1;
  readonly name: string;
  readonly family: string;
  readonly dtype: "fp32" | "fp16";
  readonly components: Readonly<Record<string, ComponentSpec>>;
  /** diffusers' `scheduler_config.json`, checked by the scheduler that reads it. */
  readonly scheduler: Readonly<Record<string, unknown>>;
  readonly tokenizers: Readonly<Record<string, TokenizerSpec>>;
  /** Numbers the pipeline needs (sample rate, scale factors, ...), by name. */
  readonly config: Readonly<Record<string, number>>;
  readonly defaults: ModelDefaults;
  readonly versions: Readonly<Record<string, string | number>>;
}

/** A model folder whose manifest is missing, malformed, or disagrees with its graphs. */
export class ManifestError extends Error {
  override name = "ManifestError";
  /** The file the problem is in. */
  readonly file: string;

  /** `message` names the field and what was expected. */
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.file = file;
  }
}

const DTYPES: readonly DataType[] = ["float32", "float16", "int64", "int32", "bool"];

/** Narrows `unknown` JSON step by step, naming the path of any field that is wrong. */
class Reader {
  constructor(readonly file: string) {}

  fail(path: string, expected: string, got: unknown): never {
    const shown = got === undefined ? "missing" : JSON.stringify(got);
    throw new ManifestError(this.file, `'${path}' must be ${expected}: found ${shown}`);
  }

  object(v: unknown, path: string): Record<string, unknown> {
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.fail(path, "an object", v);
    return v as Record<string, unknown>;
  }

  string(v: unknown, path: string): string {
    if (typeof v !== "string" || v === "") this.fail(path, "a non-empty string", v);
    return v;
  }

  number(v: unknown, path: string, { integer = false, positive = false } = {}): number {
    const ok = typeof v === "number" && Number.isFinite(v) &&
      (!integer || Number.isInteger(v)) && (!positive || v > 0);
    if (!ok) {
      this.fail(path, `a ${positive ? "positive " : ""}${integer ? "integer" : "number"}`, v);
    }
    return v as number;
  }

  array(v: unknown, path: string): unknown[] {
    if (!Array.isArray(v)) this.fail(path, "an array", v);
    return v;
  }

  io(v: unknown, path: string): IoSpec {
    const o = this.object(v, path);
    const dtype = o.dtype;
    if (!DTYPES.includes(dtype as DataType)) this.fail(`${path}.dtype`, `one of ${DTYPES}`, dtype);
    return {
      name: this.string(o.name, `${path}.name`),
      dtype: dtype as DataType,
      dims: this.array(o.dims, `${path}.dims`).map((d, k) =>
        typeof d === "string" ? d : this.number(d, `${path}.dims[${k}]`, { integer: true })
      ),
    };
  }
}

/**
 * Validates a parsed `manifest.json`.
 *
 * @param raw the parsed JSON
 * @param file the file it came from, for messages
 * @throws {ManifestError} naming the first field that is wrong
 */
export function parseManifest(raw: unknown, file: string): Manifest {
  const r = new Reader(file);
  const o = r.object(raw, "(root)");
  if (o.format !== "parastep-model") r.fail("format", `"parastep-model"`, o.format);
  if (o.formatVersion !== 1) {
    r.fail(
      "formatVersion",
      "1 (re-export the model with this version's exporter)",
      o.formatVersion,
    );
  }
  if (o.dtype !== "fp32" && o.dtype !== "fp16") r.fail("dtype", `"fp32" or "fp16"`, o.dtype);
  const components: Record<string, ComponentSpec> = {};
  for (const [name, c] of Object.entries(r.object(o.components, "components"))) {
    const p = `components.${name}`;
    const co = r.object(c, p);
    components[name] = {
      file: r.string(co.file, `${p}.file`),
      inputs: r.array(co.inputs, `${p}.inputs`).map((v, k) => r.io(v, `${p}.inputs[${k}]`)),
      outputs: r.array(co.outputs, `${p}.outputs`).map((v, k) => r.io(v, `${p}.outputs[${k}]`)),
    };
  }
  const tokenizers: Record<string, TokenizerSpec> = {};
  for (const [name, t] of Object.entries(r.object(o.tokenizers ?? {}, "tokenizers"))) {
    const p = `tokenizers.${name}`;
    const to = r.object(t, p);
    tokenizers[name] = {
      dir: r.string(to.dir, `${p}.dir`),
      modelMaxLength: r.number(to.modelMaxLength, `${p}.modelMaxLength`, {
        integer: true,
        positive: true,
      }),
      padTokenId: r.number(to.padTokenId, `${p}.padTokenId`, { integer: true }),
    };
  }
  const config: Record<string, number> = {};
  for (const [name, v] of Object.entries(r.object(o.config ?? {}, "config"))) {
    config[name] = r.number(v, `config.${name}`);
  }
  const d = r.object(o.defaults, "defaults");
  return {
    format: "parastep-model",
    formatVersion: 1,
    name: r.string(o.name, "name"),
    family: r.string(o.family, "family"),
    dtype: o.dtype as "fp32" | "fp16",
    components,
    scheduler: r.object(o.scheduler, "scheduler"),
    tokenizers,
    config,
    defaults: {
      steps: r.number(d.steps, "defaults.steps", { integer: true, positive: true }),
      guidance: r.number(d.guidance, "defaults.guidance"),
      warmup: r.number(d.warmup, "defaults.warmup", { integer: true, positive: true }),
      duration: r.number(d.duration, "defaults.duration", { positive: true }),
    },
    versions: r.object(o.versions ?? {}, "versions") as Record<string, string | number>,
  };
}

/** A required `config` number, or a {@linkcode ManifestError} naming it. */
export function configNumber(manifest: Manifest, file: string, name: string): number {
  const v = manifest.config[name];
  if (v === undefined) {
    throw new ManifestError(file, `'config.${name}' must be a number: found missing`);
  }
  return v;
}

function describe(io: { name: string; dims: readonly (number | string)[] }, dtype: string) {
  return `${io.name} ${dtype} [${io.dims.join(", ")}]`;
}

/**
 * Checks that `session` has exactly the inputs and outputs the manifest
 * declares for `component`: same names, element types and ranks, and the same
 * size wherever both fix one.
 *
 * @throws {ManifestError} naming the component, the tensor and both versions
 */
export function checkComponent(
  file: string,
  component: string,
  spec: ComponentSpec,
  session: Pick<Session, "inputs" | "outputs">,
): void {
  const compare = (
    kind: "input" | "output",
    want: readonly IoSpec[],
    got: readonly TensorInfo[],
  ) => {
    const gotNames = got.map((g) => g.name).sort().join(", ");
    const wantNames = want.map((w) => w.name).sort().join(", ");
    if (gotNames !== wantNames) {
      throw new ManifestError(
        file,
        `component '${component}' (${spec.file}) has ${kind}s [${gotNames}] but the manifest declares [${wantNames}]; re-export the model`,
      );
    }
    for (const w of want) {
      const g = got.find((x) => x.name === w.name)!;
      const sameRank = g.dims.length === w.dims.length;
      const sameDims = sameRank &&
        w.dims.every((d, k) =>
          typeof d !== "number" || typeof g.dims[k] !== "number" || d === g.dims[k]
        );
      if (g.type !== w.dtype || !sameDims) {
        throw new ManifestError(
          file,
          `component '${component}' (${spec.file}) ${kind} is ${
            describe(g, g.type ?? `type ${g.elementType}`)
          } ` +
            `but the manifest declares ${describe(w, w.dtype)}; re-export the model`,
        );
      }
    }
  };
  compare("input", spec.inputs, session.inputs);
  compare("output", spec.outputs, session.outputs);
}
