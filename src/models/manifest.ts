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

/**
 * Default generation settings of a model: `steps` and `warmup` for every family, then the
 * family's own (guidance, duration, frames, ...), checked by the family.
 */
export type ModelDefaults = Readonly<Record<string, number>> & {
  /** Denoising steps T. */
  readonly steps: number;
  /** ParaStep's sequential warm-up steps W. */
  readonly warmup: number;
};

/** A `config` value: a number, or a list of numbers (e.g. per-channel means). */
export type ConfigValue = number | readonly number[];

/** The float types a model folder may be exported in. */
export type ModelDtype = "fp32" | "fp16" | "bf16";

/** Every {@linkcode ModelDtype}. */
export const MODEL_DTYPES: readonly ModelDtype[] = ["fp32", "fp16", "bf16"];

/** The largest fixed dimension a manifest may declare: ORT's tensors index with int32 here. */
const MAX_DIM = 2 ** 31 - 1;
/** The most tokens a tokenizer may be asked to pad to (real text encoders use 77 to 512). */
export const MAX_TOKENIZER_LENGTH = 65_536;
/** The most steps a model's defaults may ask for. */
const MAX_DEFAULT_STEPS = 10_000;

/** The model in another float type, inside a folder of several (see `Manifest.variants`). */
export interface Variant {
  /** The components whose graphs differ in this type, as the JSON has them (checked). */
  readonly components: Readonly<Record<string, unknown>>;
  /** Top-level manifest fields whose values differ in this type. */
  readonly fields: Readonly<Record<string, unknown>>;
}

/** The top-level fields a variant's `fields` may not replace (its type and graphs have their own). */
const VARIANT_FIXED = [
  "format",
  "formatVersion",
  "name",
  "family",
  "dtype",
  "components",
  "variants",
];

/** A validated `manifest.json`. */
export interface Manifest {
  readonly format: "parastep-model";
  readonly formatVersion: 1;
  readonly name: string;
  readonly family: string;
  /** The float type of the denoiser's float inputs and outputs. */
  readonly dtype: ModelDtype;
  readonly components: Readonly<Record<string, ComponentSpec>>;
  /**
   * The same model in other float types (e.g. a real model exported with `--dtype fp32,fp16`):
   * each names, for every component it replaces, the graph in that type, and in `fields` the
   * top-level fields whose values differ in that type (e.g. a constant read from fp16 weights).
   * Empty for a folder of one type. {@linkcode withDtype} gives the manifest of one of them.
   */
  readonly variants: Readonly<Partial<Record<ModelDtype, Variant>>>;
  /** diffusers' `scheduler_config.json`, checked by the scheduler that reads it. */
  readonly scheduler: Readonly<Record<string, unknown>>;
  readonly tokenizers: Readonly<Record<string, TokenizerSpec>>;
  /** Numbers the pipeline needs (sample rate, scale factors, ...), by name; checked by the family. */
  readonly config: Readonly<Record<string, ConfigValue>>;
  readonly defaults: ModelDefaults;
  readonly versions: Readonly<Record<string, string | number>>;
  /** The whole parsed JSON, for a family's own top-level fields (checked by the family). */
  readonly raw: Readonly<Record<string, unknown>>;
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

  number(v: unknown, path: string, rule: NumberRule = {}): number {
    if (!satisfies(v, rule)) this.fail(path, describeRule(rule), v);
    return v as number;
  }

  array(v: unknown, path: string): unknown[] {
    if (!Array.isArray(v)) this.fail(path, "an array", v);
    return v;
  }

  /** A path inside the model folder: relative, no `..`, no empty or absolute parts. */
  relativePath(v: unknown, path: string): string {
    const s = this.string(v, path);
    const parts = s.split("/");
    if (s.startsWith("/") || s.includes("\\") || parts.some((p) => p === ".." || p === "")) {
      this.fail(path, "a path inside the model folder (relative, without '..')", s);
    }
    return s;
  }

  components(v: unknown, path: string): Record<string, ComponentSpec> {
    const components: Record<string, ComponentSpec> = {};
    for (const [name, c] of Object.entries(this.object(v, path))) {
      const p = `${path}.${name}`;
      const co = this.object(c, p);
      components[name] = {
        file: this.relativePath(co.file, `${p}.file`),
        inputs: this.array(co.inputs, `${p}.inputs`).map((v, k) => this.io(v, `${p}.inputs[${k}]`)),
        outputs: this.array(co.outputs, `${p}.outputs`).map((v, k) =>
          this.io(v, `${p}.outputs[${k}]`)
        ),
      };
    }
    return components;
  }

  io(v: unknown, path: string): IoSpec {
    const o = this.object(v, path);
    const dtype = o.dtype;
    if (!DTYPES.includes(dtype as DataType)) this.fail(`${path}.dtype`, `one of ${DTYPES}`, dtype);
    return {
      name: this.string(o.name, `${path}.name`),
      dtype: dtype as DataType,
      dims: this.array(o.dims, `${path}.dims`).map((d, k) =>
        typeof d === "string"
          ? d
          : this.number(d, `${path}.dims[${k}]`, { integer: true, min: 1, max: MAX_DIM })
      ),
    };
  }
}

/** The range a manifest number must lie in. */
export interface NumberRule {
  /** Must be an integer. @default false */
  readonly integer?: boolean;
  /** The least value allowed. */
  readonly min?: number;
  /** Whether `min` itself is excluded (e.g. a scale factor > 0). @default false */
  readonly minExclusive?: boolean;
  /** The largest value allowed. */
  readonly max?: number;
  /** Must be a power of two (VAE scale factors). @default false */
  readonly powerOfTwo?: boolean;
}

function satisfies(v: unknown, rule: NumberRule): boolean {
  if (typeof v !== "number" || !Number.isFinite(v)) return false;
  if (rule.integer && !Number.isInteger(v)) return false;
  if (rule.min !== undefined && (rule.minExclusive ? v <= rule.min : v < rule.min)) return false;
  if (rule.max !== undefined && v > rule.max) return false;
  if (rule.powerOfTwo && !(v > 0 && Number.isInteger(Math.log2(v)))) return false;
  return true;
}

function describeRule(rule: NumberRule): string {
  const kind = rule.powerOfTwo ? "a power of two" : rule.integer ? "an integer" : "a number";
  const { min, max } = rule;
  if (min !== undefined && max !== undefined) {
    return `${kind} ${rule.minExclusive ? `> ${min} and <= ${max}` : `in ${min}..${max}`}`;
  }
  if (min !== undefined) return `${kind} ${rule.minExclusive ? ">" : ">="} ${min}`;
  if (max !== undefined) return `${kind} <= ${max}`;
  return kind;
}

/**
 * Validates a parsed `manifest.json`: the schema every family shares, with ranges. The
 * family-specific `config` and `defaults` entries are checked by the family
 * ({@linkcode checkNumbers}).
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
  if (!MODEL_DTYPES.includes(o.dtype as ModelDtype)) {
    r.fail(
      "dtype",
      MODEL_DTYPES.map((d) => `"${d}"`).join(", ").replace(/, ([^,]*)$/, " or $1"),
      o.dtype,
    );
  }
  const components = r.components(o.components, "components");
  const variants: Partial<Record<ModelDtype, Variant>> = {};
  for (const [dtype, v] of Object.entries(r.object(o.variants ?? {}, "variants"))) {
    const p = `variants.${dtype}`;
    if (!MODEL_DTYPES.includes(dtype as ModelDtype) || dtype === o.dtype) {
      r.fail(p, `named by a float type other than the folder's "${o.dtype}"`, dtype);
    }
    const vo = r.object(v, p);
    const replaced = r.components(vo.components, `${p}.components`);
    for (const name of Object.keys(replaced)) {
      if (!(name in components)) {
        r.fail(`${p}.components.${name}`, "a component of 'components'", name);
      }
    }
    const fields = r.object(vo.fields ?? {}, `${p}.fields`);
    for (const name of Object.keys(fields)) {
      if (VARIANT_FIXED.includes(name)) {
        r.fail(`${p}.fields.${name}`, "absent (a variant's type and graphs are given apart)", name);
      }
    }
    variants[dtype as ModelDtype] = {
      components: vo.components as Record<string, unknown>,
      fields,
    };
  }
  const tokenizers: Record<string, TokenizerSpec> = {};
  for (const [name, t] of Object.entries(r.object(o.tokenizers ?? {}, "tokenizers"))) {
    const p = `tokenizers.${name}`;
    const to = r.object(t, p);
    tokenizers[name] = {
      dir: r.relativePath(to.dir, `${p}.dir`),
      modelMaxLength: r.number(to.modelMaxLength, `${p}.modelMaxLength`, {
        integer: true,
        min: 1,
        max: MAX_TOKENIZER_LENGTH,
      }),
      padTokenId: r.number(to.padTokenId, `${p}.padTokenId`, { integer: true, min: 0 }),
    };
  }
  const config: Record<string, ConfigValue> = {};
  for (const [name, v] of Object.entries(r.object(o.config ?? {}, "config"))) {
    config[name] = Array.isArray(v)
      ? v.map((x, k) => r.number(x, `config.${name}[${k}]`))
      : r.number(v, `config.${name}`);
  }
  const d = r.object(o.defaults, "defaults");
  const defaults: Record<string, number> = {};
  for (const [name, v] of Object.entries(d)) defaults[name] = r.number(v, `defaults.${name}`);
  const steps = r.number(d.steps, "defaults.steps", {
    integer: true,
    min: 1,
    max: MAX_DEFAULT_STEPS,
  });
  const warmup = r.number(d.warmup, "defaults.warmup", {
    integer: true,
    min: 1,
    max: MAX_DEFAULT_STEPS,
  });
  return {
    format: "parastep-model",
    formatVersion: 1,
    name: r.string(o.name, "name"),
    family: r.string(o.family, "family"),
    dtype: o.dtype as ModelDtype,
    components,
    variants,
    scheduler: r.object(o.scheduler, "scheduler"),
    tokenizers,
    config,
    defaults: { ...defaults, steps, warmup },
    versions: r.object(o.versions ?? {}, "versions") as Record<string, string | number>,
    raw: o,
  };
}

/** The float types a folder holds its model in: its own `dtype` first, then its variants'. */
export function manifestDtypes(manifest: Manifest): ModelDtype[] {
  return [manifest.dtype, ...(Object.keys(manifest.variants) as ModelDtype[])];
}

/** The refusal of a float type the folder does not hold, naming those it holds. */
export function missingDtype(manifest: Manifest, dtype: ModelDtype, file: string): ManifestError {
  return new ManifestError(
    file,
    `the model has no ${dtype} graphs (it holds ${manifestDtypes(manifest).join(", ")}); ` +
      `use --dtype ${manifest.dtype}, or re-export it with --dtype ${
        dtype === "bf16" ? "bf16" : "fp32,fp16"
      }`,
  );
}

/**
 * The manifest of the model in `dtype`: the folder's own when that is its `dtype`, else the
 * folder's with the variant's fields and components in place of the ones they replace (and
 * `dtype` set), without variants, validated as any manifest.
 *
 * @throws {ManifestError} when the folder holds no such variant ({@linkcode missingDtype}), or
 *   when the manifest it gives is invalid
 */
export function withDtype(manifest: Manifest, dtype: ModelDtype, file: string): Manifest {
  if (dtype === manifest.dtype) return manifest;
  const variant = manifest.variants[dtype];
  if (variant === undefined) throw missingDtype(manifest, dtype, file);
  const { variants: _, ...raw } = manifest.raw;
  return parseManifest({
    ...raw,
    ...variant.fields,
    dtype,
    components: { ...(raw.components as Record<string, unknown>), ...variant.components },
  }, file);
}

/**
 * Checks the manifest's `section` numbers against `rules` (one rule per required name), naming
 * the first that is missing or out of range; returns them by name.
 *
 * @throws {ManifestError}
 */
export function checkNumbers<K extends string>(
  manifest: Manifest,
  file: string,
  section: "config" | "defaults",
  rules: Readonly<Record<K, NumberRule>>,
): Record<K, number> {
  const r = new Reader(file);
  const values = manifest[section] as Readonly<Record<string, unknown>>;
  const out = {} as Record<K, number>;
  for (const name of Object.keys(rules) as K[]) {
    out[name] = r.number(values[name], `${section}.${name}`, rules[name]);
  }
  return out;
}

/**
 * A `config` list of numbers of the given length, or a {@linkcode ManifestError} naming it.
 */
export function configList(
  manifest: Manifest,
  file: string,
  name: string,
  length: number,
  rule: NumberRule = {},
): number[] {
  const r = new Reader(file);
  const v = manifest.config[name];
  if (!Array.isArray(v) || v.length !== length) {
    r.fail(`config.${name}`, `a list of ${length} numbers`, v);
  }
  return (v as readonly number[]).map((x, k) => r.number(x, `config.${name}[${k}]`, rule));
}

/** A required `config` number, or a {@linkcode ManifestError} naming it. */
export function configNumber(manifest: Manifest, file: string, name: string): number {
  const v = manifest.config[name];
  if (typeof v !== "number") {
    throw new ManifestError(
      file,
      `'config.${name}' must be a number: found ${v === undefined ? "missing" : JSON.stringify(v)}`,
    );
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
