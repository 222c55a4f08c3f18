/**
 * Text to token ids with Hugging Face's rules for padding and truncation,
 * on top of tokenizers.js (which implements the models but neither pads nor
 * truncates).
 *
 * @module
 */

import { Tokenizer } from "@huggingface/tokenizers";
import { ManifestError, type TokenizerSpec } from "../models/manifest.ts";

/** Token ids and attention mask of one text, as int64 for ORT. */
export interface Encoding {
  readonly ids: BigInt64Array<ArrayBuffer>;
  readonly mask: BigInt64Array<ArrayBuffer>;
  /** Content tokens truncation cut off (0 when the text fits). */
  readonly dropped: number;
}

/** How to pad: to the text's own length, or to a fixed length. */
export type Padding = "longest" | { readonly length: number };

/** A tokenizer folder (`tokenizer.json` + `tokenizer_config.json`) and its limits. */
export class TextTokenizer {
  readonly #tokenizer: Tokenizer;
  /** Truncation limit, special tokens included (`model_max_length`). */
  readonly maxLength: number;
  /** The id padding uses. */
  readonly padId: number;
  /** Special tokens the template puts before and after the content ("<s> $A </s>": 1 and 1). */
  readonly #template: { before: number; after: number };

  private constructor(tokenizer: Tokenizer, spec: TokenizerSpec) {
    this.#tokenizer = tokenizer;
    this.maxLength = spec.modelMaxLength;
    this.padId = spec.padTokenId;
    const probe = "a";
    const full = tokenizer.encode(probe).ids;
    const content = tokenizer.encode(probe, { add_special_tokens: false }).ids;
    const before = full.findIndex((_, k) => content.every((id, j) => full[k + j] === id));
    if (before < 0) {
      throw new Error("Cannot find the content tokens inside the tokenizer's template");
    }
    this.#template = { before, after: full.length - before - content.length };
  }

  /**
   * Reads the tokenizer files from `dir/spec.dir`.
   *
   * @throws {ManifestError} when a file cannot be read or is not a tokenizer
   */
  static async load(dir: string, spec: TokenizerSpec): Promise<TextTokenizer> {
    const base = `${dir}/${spec.dir}`;
    const [json, config] = await Promise.all(
      ["tokenizer.json", "tokenizer_config.json"].map(async (name) => {
        const path = `${base}/${name}`;
        try {
          return await Deno.readTextFile(path);
        } catch (e) {
          throw unreadable(path, e);
        }
      }),
    );
    return TextTokenizer.#parse(base, spec, json!, config!);
  }

  /**
   * {@linkcode TextTokenizer.load}, reading the files synchronously (for request checks, which
   * are synchronous).
   *
   * @throws {ManifestError} when a file cannot be read or is not a tokenizer
   */
  static loadSync(dir: string, spec: TokenizerSpec): TextTokenizer {
    const base = `${dir}/${spec.dir}`;
    const [json, config] = ["tokenizer.json", "tokenizer_config.json"].map((name) => {
      const path = `${base}/${name}`;
      try {
        return Deno.readTextFileSync(path);
      } catch (e) {
        throw unreadable(path, e);
      }
    });
    return TextTokenizer.#parse(base, spec, json!, config!);
  }

  static #parse(base: string, spec: TokenizerSpec, jsonText: string, configText: string) {
    // Each file is parsed on its own, so a message names the file that is broken.
    const parse = (name: string, text: string): unknown => {
      try {
        return JSON.parse(text);
      } catch (e) {
        throw unreadable(`${base}/${name}`, e);
      }
    };
    const json = parse("tokenizer.json", jsonText);
    const config = parse("tokenizer_config.json", configText);
    try {
      // deno-lint-ignore no-explicit-any -- tokenizers.js takes the two parsed JSON objects as is
      return new TextTokenizer(new Tokenizer(json as any, config as any), spec);
    } catch (e) {
      throw new ManifestError(
        `${base}/tokenizer.json`,
        `cannot be loaded as a tokenizer with ${base}/tokenizer_config.json: ${
          (e as Error).message
        }; re-export the model`,
      );
    }
  }

  /**
   * Encodes `text` like `tokenizer(text, padding=…, max_length=…, truncation=True)`:
   * the content is cut so that content plus special tokens fit in
   * {@linkcode TextTokenizer.maxLength} (or a fixed padding length, if
   * shorter), then padded on the right with mask 0.
   */
  encode(text: string, padding: Padding): Encoding {
    const full = this.#tokenizer.encode(text).ids;
    const { before: b, after: a } = this.#template;
    const before = full.slice(0, b);
    const content = full.slice(b, full.length - a);
    const after = full.slice(full.length - a);
    const limit = typeof padding === "object"
      ? Math.min(padding.length, this.maxLength)
      : this.maxLength;
    const room = Math.max(0, limit - before.length - after.length);
    const ids = [...before, ...content.slice(0, room), ...after];
    const length = typeof padding === "object" ? Math.max(padding.length, ids.length) : ids.length;
    const out = {
      ids: new BigInt64Array(length),
      mask: new BigInt64Array(length),
      dropped: content.length - Math.min(content.length, room),
    };
    for (let k = 0; k < length; k++) {
      out.ids[k] = BigInt(k < ids.length ? ids[k]! : this.padId);
      out.mask[k] = k < ids.length ? 1n : 0n;
    }
    return out;
  }
}

function unreadable(path: string, e: unknown): ManifestError {
  return new ManifestError(
    path,
    `cannot be read as JSON: ${(e as Error).message}; re-export the model`,
  );
}
