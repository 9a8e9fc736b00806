/**
 * Tests of the WordPiece tokenizer against (1) reference tokenizations committed under data/fixtures/ and
 * (2) transformers' BertTokenizerFast run live from the project's venv (.venv/bin/python) on AG News rows,
 * hand-picked nasty strings and seeded random strings.
 * @module
 */

import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert";
import { pythonJson } from "../tests/helpers.ts";
import { mulberry32 as prng } from "../util/random.ts";
import { BertTokenizer, type Encoding } from "./tokenizer.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);
const BUNDLED_VOCAB = new URL("./vocab/bert-base-uncased-vocab.txt", import.meta.url);
const VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3";

const tokenizer = await BertTokenizer.bundled();

// ---------------------------------------------------------------------------------------------------------
// Helpers: fixtures, AG News CSV, the Python reference.
// ---------------------------------------------------------------------------------------------------------

async function readFixture<T>(name: string): Promise<T> {
  return JSON.parse(await Deno.readTextFile(new URL(name, FIXTURES)));
}

/** Parses one line of AG News CSV: every field quoted, `""` for a quote inside a field, no line breaks. */
function parseCsvLine(line: string): string[] {
  const fields: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] !== '"') {
      const end = line.indexOf(",", i);
      fields.push(line.slice(i, end < 0 ? line.length : end));
      i = end < 0 ? line.length + 1 : end + 1;
      continue;
    }
    let field = "";
    i++;
    for (;;) {
      const quote = line.indexOf('"', i);
      if (quote < 0) throw new Error(`unterminated quoted field in CSV line: ${line.slice(0, 80)}`);
      field += line.slice(i, quote);
      if (line[quote + 1] === '"') {
        field += '"';
        i = quote + 2;
      } else {
        i = quote + 1;
        break;
      }
    }
    fields.push(field);
    if (i < line.length && line[i] !== ",") throw new Error(`junk after quoted field: ${line.slice(0, 80)}`);
    i++;
  }
  return fields;
}

/** AG News rows as the model sees them: title + " " + description. */
function agNewsTexts(csv: string): string[] {
  return csv.split("\n").filter((line) => line !== "").map((line) => {
    const fields = parseCsvLine(line);
    if (fields.length !== 3) {
      throw new Error(`expected 3 CSV fields, got ${fields.length}: ${line.slice(0, 80)}`);
    }
    return `${fields[1]} ${fields[2]}`;
  });
}

async function readGzipText(path: string): Promise<string> {
  const file = await Deno.open(path);
  const stream = file.readable.pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

/** The full AG News test split, when available (it is not committed: 1.8 MB and non-commercial terms). */
function agNewsTestPath(): string | undefined {
  const candidates = [Deno.env.get("DISTRINEWS_AG_NEWS_TEST"), "/work/shared/data/ag_news/test.csv.gz"];
  for (const path of candidates) {
    if (!path) continue;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // try the next candidate
    }
  }
  return undefined;
}

/**
 * The reference: transformers' BertTokenizerFast on the same vocab.txt, or AutoTokenizer on a saved folder.
 * Note transformers 5 accepts but ignores `vocab_file=` (it silently builds a 5-token vocab), so the vocab
 * is passed as a dict there; the script refuses to run if the vocab did not load.
 */
const PYTHON_REFERENCE = `
import inspect, json, sys
from transformers import AutoTokenizer, BertTokenizerFast

def from_vocab(path):
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:
        from transformers.models.bert.tokenization_bert import load_vocab
        return BertTokenizerFast(vocab=load_vocab(path))
    return BertTokenizerFast(vocab_file=path)

req = json.load(sys.stdin)
tok = AutoTokenizer.from_pretrained(req["dir"]) if req.get("dir") else from_vocab(req["vocab"])
if len(tok) != 30522 or tok.convert_tokens_to_ids("the") != 1996 or tok.cls_token_id != 101:
    sys.exit(f"reference tokenizer did not load the vocab (size {len(tok)})")
out = {"class": type(tok).__name__, "do_lower_case": getattr(tok, "do_lower_case", None),
       "model_max_length": tok.model_max_length, "input_ids": [], "attention_mask": [], "decoded": []}
if req["texts"]:
    max_length = req.get("max_length")
    enc = tok(req["texts"], truncation=max_length is not None, max_length=max_length)
    out["input_ids"], out["attention_mask"] = enc["input_ids"], enc["attention_mask"]
for ids in req.get("decode", []):
    out["decoded"].append([tok.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
                           for skip in (False, True) for clean in (False, True)])
json.dump(out, sys.stdout)
`;

interface ReferenceRequest {
  texts: string[];
  maxLength?: number | null;
  /** Id sequences to decode four ways: (skip, cleanup) = (F,F), (F,T), (T,F), (T,T). */
  decode?: number[][];
  /** Load this folder with AutoTokenizer instead of BertTokenizerFast on the bundled vocab. */
  dir?: string;
}

interface ReferenceResult {
  class: string;
  do_lower_case: boolean | null;
  model_max_length: number;
  input_ids: number[][];
  attention_mask: number[][];
  decoded: string[][];
}

async function pythonReference(req: ReferenceRequest): Promise<ReferenceResult> {
  const body = {
    texts: req.texts,
    max_length: req.maxLength === undefined ? 128 : req.maxLength,
    decode: req.decode ?? [],
    dir: req.dir,
    vocab: BUNDLED_VOCAB.pathname,
  };
  return await pythonJson(PYTHON_REFERENCE, body) as ReferenceResult;
}

/** Fails listing the first few texts whose ids or masks differ from Python's. */
function expectSameAsPython(texts: string[], ours: Encoding[], python: ReferenceResult, what: string): void {
  strictEqual(python.input_ids.length, texts.length, `${what}: Python returned a different number of rows`);
  const mismatches: string[] = [];
  texts.forEach((text, i) => {
    const sameIds = JSON.stringify(ours[i].ids) === JSON.stringify(python.input_ids[i]);
    const sameMask = JSON.stringify(ours[i].attentionMask) === JSON.stringify(python.attention_mask[i]);
    if (sameIds && sameMask) return;
    if (mismatches.length >= 5) return;
    mismatches.push(
      `text ${JSON.stringify(text).slice(0, 300)}\n  ours:   ${ours[i].ids.join(" ")}` +
        `\n  python: ${python.input_ids[i].join(" ")}` +
        `\n  ours:   ${tokenizer.convertIdsToTokens(ours[i].ids).join(" ")}` +
        `\n  python: ${tokenizer.convertIdsToTokens(python.input_ids[i]).join(" ")}` +
        (sameMask ? "" : "\n  (attention masks differ)"),
    );
  });
  if (mismatches.length > 0) {
    throw new Error(`${what}: differs from BertTokenizerFast:\n${mismatches.join("\n")}`);
  }
}

/** Our decode of each id sequence, in the order of the reference's four variants. */
function ourDecodings(ids: number[]): string[] {
  return [false, true].flatMap((skipSpecialTokens) =>
    [false, true].map((cleanUpTokenizationSpaces) =>
      tokenizer.decode(ids, { skipSpecialTokens, cleanUpTokenizationSpaces })
    )
  );
}

// ---------------------------------------------------------------------------------------------------------
// Inputs for the Python comparisons.
// ---------------------------------------------------------------------------------------------------------

const LONG_WORD = "supercalifragilistic".repeat(5) + "x"; // 101 letters: one [UNK]
const NASTY_STRINGS: string[] = [
  "",
  " ",
  " \t\n\r\u00a0\u3000\u2028\u2029 ",
  "\u200b\u200d\ufeff",
  "Hello, World! It's 3:45pm — isn't it?",
  "caf\u00e9 cafe\u0301 na\u00efve CR\u00c8ME br\u00fbl\u00e9e \u00c5ngstr\u00f6m",
  "e\u0301\u0327 a\u0308\u0304 \u0301leading mark",
  "Stra\u00dfe STRASSE \u1e9e \u01c5 \u0130stanbul I\u0307 \u03a3\u0391\u03a3 \u1f08\u0345",
  "\u{1f600} \u{1f44d}\u{1f3fd} \u{1f468}\u200d\u{1f469}\u200d\u{1f467} \u{1f1fa}\u{1f1f8} \u2764\ufe0f emoji\u{1f525}text",
  "\u751f\u6d3b\u7684\u771f\u8c1b\u662f \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4 \u{20000}\u{2b820}\u{2b920}",
  "\uf900\uf901 \u{2f800} \u3400\u4dbf \u9fff\u{2a6df}",
  "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u061f \u0634\u0643\u0631\u0627\u064b",
  "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd \u05e2\u05d5\u05dc\u05dd! \u200fRTL\u200e mark",
  "a\u0000b\u0001c\u0007d\u001be\u007ff\u0085g\u009fh \u000b\u000c tab\tnew\nline\r\n",
  "soft\u00adhyphen zero\u200bwidth join\u200dner non\u200cjoiner bom\ufeffchar",
  "NBSP\u00a0between\u00a0words and\u202fnarrow\u2009thin\u200ahair\u205fmath",
  "replacement \ufffd char \ue000private\u{f0000}use",
  "\u037e \u0387 \u1fef \u2e43 \u2e5d \u061d \u07fd \u0e3f \u20c0 \u00bf\u00a1",
  "\u2160\u216b \u24b6\u24d0 \uff21\uff22\uff23 \uff11\uff12\uff13 \ufb01 \u2126 \u212a \u00b5",
  LONG_WORD,
  LONG_WORD.slice(0, 100),
  "\u00e9".repeat(101),
  "e\u0301".repeat(60),
  "\u{1f600}".repeat(101),
  "word " + "x".repeat(250) + " word",
  "token ".repeat(200),
  "a, ".repeat(100),
  "[CLS] hello [SEP] world [MASK] [PAD] [UNK]",
  "[cls] [Cls] [unk] [ CLS ] [CLS [CLS]] [[MASK]] [MASK][MASK]x[SEP]y",
  "a[CLS]b [UNK]'s don't[SEP]. \u00e9[MASK]\u00e9 [CLS]\u0301",
  "\uff3b\uff23\uff2c\uff33\uff3d [\u200bCLS] [C\u0000LS]",
  "#hashtag @user $100 50% a+b=c <tag> x^2 `code` a|b ~tilde",
  "U.S. Dept. of Defense; e-mail: foo@bar.com (http://example.com/a?b=c&d=e)",
  "\u201cSmart quotes\u201d \u2018single\u2019 \u00abguillemets\u00bb \u2014 \u2013 \u2026",
  "\u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 \u1c90\u1c91",
  "\u13a0\u13a1 \uab70 \u0410\u0411\u0412 \u0401\u0419",
];

/** Characters the random strings are drawn from: each kind of thing the normalizer treats specially. */
const FUZZ_POOL: string[] = [
  ..."abcXYZ019 ,.!?'\"-()[]#$%&*+/:;<=>@\\^_`{|}~",
  "\t",
  "\n",
  "\r",
  "\u000b",
  "\u0000",
  "\u0085",
  "\u00a0",
  "\u00ad",
  "\u00e9",
  "\u00c9",
  "\u0301",
  "\u0327",
  "\u03a3",
  "\u03c2",
  "\u0130",
  "\u1e9e",
  "\u01c5",
  "\u037e",
  "\u2e43",
  "\u2e5d",
  "\u07fd",
  "\u200b",
  "\u200d",
  "\u2028",
  "\u3000",
  "\u180e",
  "\ufeff",
  "\ufffd",
  "\ue000",
  "\u4e2d",
  "\uf900",
  "\ud55c",
  "\u3042",
  "\u0645",
  "\u05e9",
  "\u{1f600}",
  "\u{1f3fd}",
  "\u{20000}",
  "\u{2b820}",
  "\u{1d400}",
  "[CLS]",
  "[UNK]",
  "[cls]",
  "[MASK",
  "SEP]",
];

function randomCodePoint(rand: () => number): string {
  for (;;) {
    // Mostly the BMP, where nearly all scripts live; sometimes anywhere in the code space.
    const cp = rand() < 0.8 ? Math.floor(rand() * 0x10000) : Math.floor(rand() * 0x110000);
    if (cp < 0xd800 || cp > 0xdfff) return String.fromCodePoint(cp); // Python cannot take lone surrogates
  }
}

function fuzzStrings(count: number, seed: number): string[] {
  const rand = prng(seed);
  const texts: string[] = [];
  for (let n = 0; n < count; n++) {
    const length = Math.floor(rand() * 40);
    let text = "";
    for (let k = 0; k < length; k++) {
      text += rand() < 0.7 ? FUZZ_POOL[Math.floor(rand() * FUZZ_POOL.length)] : randomCodePoint(rand);
    }
    texts.push(text);
  }
  return texts;
}

// ---------------------------------------------------------------------------------------------------------
// Vocab and API.
// ---------------------------------------------------------------------------------------------------------

Deno.test("bundled vocab is the verified bert-base-uncased vocab.txt", async () => {
  const bytes = await Deno.readFile(BUNDLED_VOCAB);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  strictEqual(Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""), VOCAB_SHA256);
  strictEqual(tokenizer.vocabSize, 30522);
  deepStrictEqual(
    [tokenizer.padId, tokenizer.unkId, tokenizer.clsId, tokenizer.sepId, tokenizer.maskId],
    [0, 100, 101, 102, 103],
  );
  strictEqual(tokenizer.tokenToId("the"), 1996);
  strictEqual(tokenizer.idToToken(30521), "##\uff5e");
  strictEqual(tokenizer.tokenToId("not-a-token"), undefined);
  strictEqual(tokenizer.idToToken(30522), undefined);
  deepStrictEqual(tokenizer.convertTokensToIds(["the", "not-a-token"]), [1996, 100]);
  throws(() => tokenizer.convertIdsToTokens([30522]), RangeError);
});

Deno.test("fromVocabText reads LF and CRLF files and rejects a vocab without special tokens", () => {
  const lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "##s"];
  for (const eol of ["\n", "\r\n"]) {
    const t = BertTokenizer.fromVocabText(lines.join(eol) + eol);
    strictEqual(t.vocabSize, 7);
    deepStrictEqual(t.encode("Hellos").ids, [2, 5, 6, 3]);
  }
  throws(() => BertTokenizer.fromVocabText("hello\nworld\n"), /lacks the special token \[PAD\]/);
});

Deno.test("encode: truncation keeps [CLS] and [SEP], padding, options", () => {
  const text = "one two three four five six";
  deepStrictEqual(tokenizer.encode(text, { maxLength: 5 }).ids, [101, 2028, 2048, 2093, 102]);
  deepStrictEqual(tokenizer.encode(text, { maxLength: 2 }).ids, [101, 102]);
  deepStrictEqual(tokenizer.encode(text, { maxLength: 3, addSpecialTokens: false }).ids, [2028, 2048, 2093]);
  deepStrictEqual(tokenizer.encode("[CLS] hi", { addSpecialTokens: false }).ids, [101, 7632]);
  const padded = tokenizer.encode("hello world", { maxLength: 6, padding: "max_length", returnTokens: true });
  deepStrictEqual(padded.ids, [101, 7592, 2088, 102, 0, 0]);
  deepStrictEqual(padded.attentionMask, [1, 1, 1, 1, 0, 0]);
  deepStrictEqual(padded.tokens, ["[CLS]", "hello", "world", "[SEP]", "[PAD]", "[PAD]"]);
  strictEqual(tokenizer.encode("x ".repeat(1000), { maxLength: Infinity }).ids.length, 1002);
  strictEqual(tokenizer.encode("x ".repeat(1000)).ids.length, 128);
  throws(() => tokenizer.encode(text, { maxLength: 1 }), RangeError);
  throws(() => tokenizer.encode(text, { maxLength: 2.5 }), RangeError);
  throws(() => tokenizer.encode(text, { maxLength: Infinity, padding: "max_length" }), RangeError);
  throws(() => tokenizer.tokenize("a [FOO] b", { neverSplit: ["[FOO]"] }), /not in the vocab/);
});

Deno.test("encodeBatch pads to the longest row", () => {
  const batch = tokenizer.encodeBatch(["hello", "hello big world"], { padding: "longest" });
  deepStrictEqual(batch.map((e) => e.ids), [[101, 7592, 102, 0, 0], [101, 7592, 2502, 2088, 102]]);
  deepStrictEqual(batch.map((e) => e.attentionMask), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]);
  deepStrictEqual(tokenizer.encodeBatch(["a", "b c"]).map((e) => e.ids.length), [3, 4]);
});

Deno.test("the word cache does not change results", () => {
  const text = "Caf\u00e9 CAF\u00c9 caf\u00e9 Hello hello HELLO";
  const first = tokenizer.tokenize(text);
  deepStrictEqual(tokenizer.tokenize(text), first);
  deepStrictEqual(first, ["cafe", "cafe", "cafe", "hello", "hello", "hello"]);
});

Deno.test("lone surrogates are dropped like U+FFFD (a UTF-8 round trip would make them U+FFFD)", () => {
  deepStrictEqual(tokenizer.tokenize("a\ud800b \udc00c"), ["ab", "c"]);
});

// ---------------------------------------------------------------------------------------------------------
// Committed reference tokenizations.
// ---------------------------------------------------------------------------------------------------------

interface HfCase {
  input: string;
  encoded: { input_ids: number[]; token_type_ids: number[]; attention_mask: number[] };
  decoded_with_special: string;
  decoded_without_special: string;
}

Deno.test("HF reference: 18 bert-base-uncased cases (ids, mask, decode)", async () => {
  const cases = (await readFixture<Record<string, HfCase[]>>("hf_tokenizer_tests_bert_base_uncased.json"))[
    "bert-base-uncased"
  ];
  strictEqual(cases.length, 18);
  for (const c of cases) {
    const { ids, attentionMask } = tokenizer.encode(c.input);
    deepStrictEqual(ids, c.encoded.input_ids, `ids of ${JSON.stringify(c.input)}`);
    deepStrictEqual(attentionMask, c.encoded.attention_mask, `mask of ${JSON.stringify(c.input)}`);
    ok(c.encoded.token_type_ids.every((t) => t === 0));
    strictEqual(tokenizer.decode(ids), c.decoded_with_special, `decode of ${JSON.stringify(c.input)}`);
    strictEqual(tokenizer.decode(ids, { skipSpecialTokens: true }), c.decoded_without_special);
  }
});

Deno.test("HF reference: long French paragraph with accents (190 ids)", async () => {
  const ref = await readFixture<
    { text: string; bpe_tokens: string[]; token_ids: number[]; decoded_text: string }
  >(
    "hf_bert_uncased_encoded.json",
  );
  deepStrictEqual(tokenizer.tokenize(ref.text), ref.bpe_tokens);
  const { ids } = tokenizer.encode(ref.text, { maxLength: Infinity });
  deepStrictEqual(ids, ref.token_ids);
  strictEqual(ids.length, 190);
  strictEqual(tokenizer.decode(ids), ref.decoded_text);
});

interface TorchtextCase {
  text: string;
  tokens: string[];
  ids: number[];
}

Deno.test("torchtext reference: plain BERT splitting of [UNK] with neverSplit: [] (7 cases)", async () => {
  const cases = await readFixture<TorchtextCase[]>("torchtext_bert_uncased.json");
  strictEqual(cases.length, 7);
  for (const c of cases) {
    deepStrictEqual(tokenizer.tokenize(c.text, { neverSplit: [] }), c.tokens, JSON.stringify(c.text));
    deepStrictEqual(tokenizer.encode(c.text, { neverSplit: [], addSpecialTokens: false }).ids, c.ids);
  }
});

Deno.test("torchtext reference: never_split [UNK] and [CLS] (7 cases)", async () => {
  const cases = await readFixture<TorchtextCase[]>("torchtext_bert_uncased_never_split_UNK_CLS.json");
  strictEqual(cases.length, 7);
  for (const c of cases) {
    const neverSplit = ["[UNK]", "[CLS]"];
    deepStrictEqual(tokenizer.tokenize(c.text, { neverSplit }), c.tokens, JSON.stringify(c.text));
    deepStrictEqual(tokenizer.encode(c.text, { neverSplit, addSpecialTokens: false }).ids, c.ids);
  }
});

// ---------------------------------------------------------------------------------------------------------
// Live comparison with transformers' BertTokenizerFast.
// ---------------------------------------------------------------------------------------------------------

Deno.test("same as BertTokenizerFast: 300 committed AG News rows, ids and masks, decode", async () => {
  const texts = agNewsTexts(await Deno.readTextFile(new URL("ag_news_test_head300.csv", FIXTURES)));
  strictEqual(texts.length, 300);
  const ours = tokenizer.encodeBatch(texts);
  const python = await pythonReference({ texts, decode: ours.map((e) => e.ids) });
  expectSameAsPython(texts, ours, python, "AG News fixture");
  ours.forEach((e, i) => deepStrictEqual(ourDecodings(e.ids), python.decoded[i], `decode of row ${i}`));
});

Deno.test(`same as BertTokenizerFast: ${NASTY_STRINGS.length} nasty strings at max lengths 128, 16, none`, async () => {
  for (const maxLength of [128, 16, null]) {
    const ours = tokenizer.encodeBatch(NASTY_STRINGS, { maxLength: maxLength ?? Infinity });
    const python = await pythonReference({ texts: NASTY_STRINGS, maxLength, decode: ours.map((e) => e.ids) });
    expectSameAsPython(NASTY_STRINGS, ours, python, `nasty strings, maxLength ${maxLength}`);
    ours.forEach((e, i) =>
      deepStrictEqual(ourDecodings(e.ids), python.decoded[i], `decode of ${JSON.stringify(NASTY_STRINGS[i])}`)
    );
  }
});

Deno.test("same as BertTokenizerFast: 3000 seeded random strings", async () => {
  const texts = fuzzStrings(3000, 20240601);
  const ours = tokenizer.encodeBatch(texts, { maxLength: Infinity });
  expectSameAsPython(texts, ours, await pythonReference({ texts, maxLength: null }), "random strings");
});

Deno.test("same as BertTokenizerFast: every code point of planes 0-3 and 14, alone, in a word, before a mark", async () => {
  // Pins down the Unicode tables (Rust's, V8's ICU) character by character, e.g. after a Deno upgrade.
  const texts: string[] = [];
  const add = (cp: number) => {
    const c = String.fromCodePoint(cp);
    texts.push(`A${c}b ${c}\u0301 ${c}${c}`);
  };
  for (let cp = 0; cp < 0x40000; cp++) if (cp < 0xd800 || cp > 0xdfff) add(cp);
  for (let cp = 0xe0000; cp < 0xe1000; cp++) add(cp);
  [0xf0000, 0xffffd, 0x100000, 0x10fffd, 0x10ffff].forEach(add);
  const ours = tokenizer.encodeBatch(texts, { maxLength: Infinity });
  expectSameAsPython(texts, ours, await pythonReference({ texts, maxLength: null }), "single code points");
});

Deno.test("same decode as transformers: 500 random id sequences", async () => {
  const rand = prng(7);
  const sequences = Array.from({ length: 500 }, () => {
    const length = Math.floor(rand() * 12);
    // Half from the low ids (specials, [unusedN], punctuation such as . , ' ! ?), half from anywhere.
    return Array.from({ length }, () => Math.floor(rand() * (rand() < 0.5 ? 2100 : tokenizer.vocabSize)));
  });
  const python = await pythonReference({ texts: [], decode: sequences });
  sequences.forEach((ids, i) => deepStrictEqual(ourDecodings(ids), python.decoded[i], `decode of ${ids}`));
});

const AG_NEWS_TEST = agNewsTestPath();

Deno.test({
  name: AG_NEWS_TEST
    ? "same as BertTokenizerFast: all 7,600 AG News test rows"
    : "same as BertTokenizerFast: all 7,600 AG News test rows (SKIPPED: set DISTRINEWS_AG_NEWS_TEST to test.csv.gz)",
  ignore: AG_NEWS_TEST === undefined,
  fn: async () => {
    const texts = agNewsTexts(await readGzipText(AG_NEWS_TEST!));
    strictEqual(texts.length, 7600);
    const ours = tokenizer.encodeBatch(texts);
    expectSameAsPython(texts, ours, await pythonReference({ texts }), "AG News test split");
  },
});

// ---------------------------------------------------------------------------------------------------------
// Hugging Face folder round trip.
// ---------------------------------------------------------------------------------------------------------

Deno.test("saveHuggingFace: AutoTokenizer loads it as DistilBertTokenizer and gives the same ids", async () => {
  const dir = await Deno.makeTempDir({ prefix: "distrinews_tok_" });
  try {
    await tokenizer.saveHuggingFace(dir);
    deepStrictEqual(await Deno.readFile(`${dir}/vocab.txt`), await Deno.readFile(BUNDLED_VOCAB));
    const texts = [...NASTY_STRINGS, ...fuzzStrings(200, 99)];
    const python = await pythonReference({ texts, dir });
    ok(python.class.startsWith("DistilBertTokenizer"), `loaded as ${python.class}`);
    strictEqual(python.do_lower_case, true);
    strictEqual(python.model_max_length, 512);
    expectSameAsPython(texts, tokenizer.encodeBatch(texts), python, "saved folder");

    const reloaded = await BertTokenizer.fromHuggingFaceDir(dir);
    strictEqual(reloaded.vocabSize, tokenizer.vocabSize);
    deepStrictEqual(reloaded.encodeBatch(texts), tokenizer.encodeBatch(texts));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fromHuggingFaceDir rejects cased configs and folders without vocab.txt", async () => {
  const dir = await Deno.makeTempDir({ prefix: "distrinews_tok_" });
  try {
    await rejects(BertTokenizer.fromHuggingFaceDir(dir), /no readable vocab\.txt/);
    await tokenizer.saveHuggingFace(dir);
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ do_lower_case: false }));
    await rejects(BertTokenizer.fromHuggingFaceDir(dir), /do_lower_case: false/);
    await Deno.remove(`${dir}/tokenizer_config.json`); // vocab.txt alone: the uncased defaults
    strictEqual((await BertTokenizer.fromHuggingFaceDir(dir)).vocabSize, 30522);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
