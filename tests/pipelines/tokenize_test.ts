import assert from "node:assert/strict";
import { resolveModel } from "../../src/models/model.ts";
import { TextTokenizer } from "../../src/pipelines/tokenize.ts";

const TINY = new URL("../../models/audioldm2-tiny", import.meta.url).pathname;

interface Ids {
  inputIds: number[];
  attentionMask: number[];
}
interface TokenCase {
  prompt: string;
  negativePrompt: string;
  clap: Ids;
  t5: Ids;
  negativeClap: Ids;
  negativeT5: Ids;
}

Deno.test("token ids and masks match diffusers' tokenizers, including empty, truncated and non-ASCII prompts", async () => {
  const model = resolveModel(TINY);
  const { cases } = JSON.parse(await Deno.readTextFile(`${TINY}/reference/tokens.json`)) as {
    cases: TokenCase[];
  };
  const clap = await TextTokenizer.load(model.dir, model.manifest.tokenizers.clap!);
  const t5 = await TextTokenizer.load(model.dir, model.manifest.tokenizers.t5!);
  const asNumbers = (a: BigInt64Array) => Array.from(a, Number);
  const same = (label: string, got: { ids: BigInt64Array; mask: BigInt64Array }, want: Ids) => {
    assert.deepEqual(asNumbers(got.ids), want.inputIds, `${label}: ids`);
    assert.deepEqual(asNumbers(got.mask), want.attentionMask, `${label}: mask`);
  };
  assert.ok(cases.some((c) => c.t5.inputIds.length === t5.maxLength), "a case is truncated");
  for (const c of cases) {
    const label = JSON.stringify(c.prompt).slice(0, 40);
    same(`${label} clap`, clap.encode(c.prompt, { length: clap.maxLength }), c.clap);
    const prompt = t5.encode(c.prompt, "longest");
    same(`${label} t5`, prompt, c.t5);
    same(
      `${label} negative clap`,
      clap.encode(c.negativePrompt, { length: clap.maxLength }),
      c.negativeClap,
    );
    same(
      `${label} negative t5`,
      t5.encode(c.negativePrompt, { length: prompt.ids.length }),
      c.negativeT5,
    );
  }
});
