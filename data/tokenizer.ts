/**
 * BERT uncased WordPiece tokenizer in pure TypeScript, matching transformers' `BertTokenizerFast`
 * (HF `tokenizers` in Rust) for distilbert-base-uncased / bert-base-uncased id for id.
 *
 * The pipeline, applied to each stretch of text between literal special tokens:
 * 1. BertNormalizer: drop NUL, U+FFFD and control/format/private-use chars; map whitespace to ' ';
 *    pad CJK ideographs with spaces; NFD and drop non-spacing marks (accents); lowercase per code point.
 * 2. BertPreTokenizer: split on whitespace (dropped) and punctuation (kept as one-char words).
 * 3. WordPiece: greedy longest-match-first with the `##` continuation prefix; a word longer than 100
 *    code points, or one that cannot be covered by vocab pieces, becomes a single `[UNK]`.
 * 4. Post-processing: `[CLS] … [SEP]`, truncated from the right to `maxLength`.
 *
 * Before normalization the raw text is split on literal occurrences of `[PAD] [UNK] [CLS] [SEP] [MASK]`,
 * which are kept whole (HF's "added tokens" with normalized=false: case-sensitive, so `[cls]` is split).
 * @module
 */

// ---------------------------------------------------------------------------------------------------------
// Character classes.
//
// HF tokenizers decides "control" (Cc/Cf/Co), "punctuation" (P*) and "non-spacing mark" (Mn) with the
// `unicode_categories` crate 0.1.1, whose tables date from Unicode 8.0. Characters that were assigned or
// re-categorised later (e.g. U+2E43..U+2E5D punctuation, U+07FD marks) are NOT treated as such by the Rust
// code, so we embed the same tables instead of using today's `\p{...}` from V8. Ranges are hex code points.
// Cc is U+0000-001F and U+007F-009F; Co is E000-F8FF, F0000-FFFFD, 100000-10FFFD (hard-coded in the crate).
// ---------------------------------------------------------------------------------------------------------

const FORMAT_RANGES = [
  "AD 600-605 61C 6DD 70F 180E 200B-200F 202A-202E 2060-2064 2066-206F FEFF FFF9-FFFB 110BD",
  "1BCA0-1BCA3 1D173-1D17A E0001 E0020-E007F",
].join(" ");
const NONSPACING_MARK_RANGES = [
  "300-36F 483-487 591-5BD 5BF 5C1-5C2 5C4-5C5 5C7 610-61A 64B-65F 670 6D6-6DC 6DF-6E4 6E7-6E8",
  "6EA-6ED 711 730-74A 7A6-7B0 7EB-7F3 816-819 81B-823 825-827 829-82D 859-85B 8E3-902 93A 93C",
  "941-948 94D 951-957 962-963 981 9BC 9C1-9C4 9CD 9E2-9E3 A01-A02 A3C A41-A42 A47-A48 A4B-A4D A51",
  "A70-A71 A75 A81-A82 ABC AC1-AC5 AC7-AC8 ACD AE2-AE3 B01 B3C B3F B41-B44 B4D B56 B62-B63 B82 BC0",
  "BCD C00 C3E-C40 C46-C48 C4A-C4D C55-C56 C62-C63 C81 CBC CBF CC6 CCC-CCD CE2-CE3 D01 D41-D44 D4D",
  "D62-D63 DCA DD2-DD4 DD6 E31 E34-E3A E47-E4E EB1 EB4-EB9 EBB-EBC EC8-ECD F18-F19 F35 F37 F39",
  "F71-F7E F80-F84 F86-F87 F8D-F97 F99-FBC FC6 102D-1030 1032-1037 1039-103A 103D-103E 1058-1059",
  "105E-1060 1071-1074 1082 1085-1086 108D 109D 135D-135F 1712-1714 1732-1734 1752-1753 1772-1773",
  "17B4-17B5 17B7-17BD 17C6 17C9-17D3 17DD 180B-180D 18A9 1920-1922 1927-1928 1932 1939-193B",
  "1A17-1A18 1A1B 1A56 1A58-1A5E 1A60 1A62 1A65-1A6C 1A73-1A7C 1A7F 1AB0-1ABD 1B00-1B03 1B34",
  "1B36-1B3A 1B3C 1B42 1B6B-1B73 1B80-1B81 1BA2-1BA5 1BA8-1BA9 1BAB-1BAD 1BE6 1BE8-1BE9 1BED",
  "1BEF-1BF1 1C2C-1C33 1C36-1C37 1CD0-1CD2 1CD4-1CE0 1CE2-1CE8 1CED 1CF4 1CF8-1CF9 1DC0-1DF5",
  "1DFC-1DFF 20D0-20DC 20E1 20E5-20F0 2CEF-2CF1 2D7F 2DE0-2DFF 302A-302D 3099-309A A66F A674-A67D",
  "A69E-A69F A6F0-A6F1 A802 A806 A80B A825-A826 A8C4 A8E0-A8F1 A926-A92D A947-A951 A980-A982 A9B3",
  "A9B6-A9B9 A9BC A9E5 AA29-AA2E AA31-AA32 AA35-AA36 AA43 AA4C AA7C AAB0 AAB2-AAB4 AAB7-AAB8",
  "AABE-AABF AAC1 AAEC-AAED AAF6 ABE5 ABE8 ABED FB1E FE00-FE0F FE20-FE2F 101FD 102E0 10376-1037A",
  "10A01-10A03 10A05-10A06 10A0C-10A0F 10A38-10A3A 10A3F 10AE5-10AE6 11001 11038-11046 1107F-11081",
  "110B3-110B6 110B9-110BA 11100-11102 11127-1112B 1112D-11134 11173 11180-11181 111B6-111BE",
  "111CA-111CC 1122F-11231 11234 11236-11237 112DF 112E3-112EA 11300-11301 1133C 11340 11366-1136C",
  "11370-11374 114B3-114B8 114BA 114BF-114C0 114C2-114C3 115B2-115B5 115BC-115BD 115BF-115C0",
  "115DC-115DD 11633-1163A 1163D 1163F-11640 116AB 116AD 116B0-116B5 116B7 1171D-1171F 11722-11725",
  "11727-1172B 16AF0-16AF4 16B30-16B36 16F8F-16F92 1BC9D-1BC9E 1D167-1D169 1D17B-1D182 1D185-1D18B",
  "1D1AA-1D1AD 1D242-1D244 1DA00-1DA36 1DA3B-1DA6C 1DA75 1DA84 1DA9B-1DA9F 1DAA1-1DAAF 1E8D0-1E8D6",
  "E0100-E01EF",
].join(" ");
const PUNCTUATION_RANGES = [
  "21-23 25-2A 2C-2F 3A-3B 3F-40 5B-5D 5F 7B 7D A1 A7 AB B6-B7 BB BF 37E 387 55A-55F 589-58A 5BE",
  "5C0 5C3 5C6 5F3-5F4 609-60A 60C-60D 61B 61E-61F 66A-66D 6D4 700-70D 7F7-7F9 830-83E 85E 964-965",
  "970 AF0 DF4 E4F E5A-E5B F04-F12 F14 F3A-F3D F85 FD0-FD4 FD9-FDA 104A-104F 10FB 1360-1368 1400",
  "166D-166E 169B-169C 16EB-16ED 1735-1736 17D4-17D6 17D8-17DA 1800-180A 1944-1945 1A1E-1A1F",
  "1AA0-1AA6 1AA8-1AAD 1B5A-1B60 1BFC-1BFF 1C3B-1C3F 1C7E-1C7F 1CC0-1CC7 1CD3 2010-2027 2030-2043",
  "2045-2051 2053-205E 207D-207E 208D-208E 2308-230B 2329-232A 2768-2775 27C5-27C6 27E6-27EF",
  "2983-2998 29D8-29DB 29FC-29FD 2CF9-2CFC 2CFE-2CFF 2D70 2E00-2E2E 2E30-2E42 3001-3003 3008-3011",
  "3014-301F 3030 303D 30A0 30FB A4FE-A4FF A60D-A60F A673 A67E A6F2-A6F7 A874-A877 A8CE-A8CF",
  "A8F8-A8FA A8FC A92E-A92F A95F A9C1-A9CD A9DE-A9DF AA5C-AA5F AADE-AADF AAF0-AAF1 ABEB FD3E-FD3F",
  "FE10-FE19 FE30-FE52 FE54-FE61 FE63 FE68 FE6A-FE6B FF01-FF03 FF05-FF0A FF0C-FF0F FF1A-FF1B",
  "FF1F-FF20 FF3B-FF3D FF3F FF5B FF5D FF5F-FF65 10100-10102 1039F 103D0 1056F 10857 1091F 1093F",
  "10A50-10A58 10A7F 10AF0-10AF6 10B39-10B3F 10B99-10B9C 11047-1104D 110BB-110BC 110BE-110C1",
  "11140-11143 11174-11175 111C5-111C9 111CD 111DB 111DD-111DF 11238-1123D 112A9 114C6 115C1-115D7",
  "11641-11643 1173C-1173E 12470-12474 16A6E-16A6F 16AF5 16B37-16B3B 16B44 1BC9F 1DA87-1DA8B",
].join(" ");
/** Whitespace as Rust's `char::is_whitespace` (the Unicode White_Space property). */
const WHITESPACE_RANGES = "9-D 20 85 A0 1680 2000-200A 2028-2029 202F 205F 3000";
/** HF's `is_chinese_char` ranges (note the gap at 2B820-2B91F, kept as in the Rust source). */
const CJK_RANGES =
  "4E00-9FFF 3400-4DBF 20000-2A6DF 2A700-2B73F 2B740-2B81F 2B920-2CEAF F900-FAFF 2F800-2FA1F";
/** ASCII punctuation (33-47, 58-64, 91-96, 123-126); includes symbols such as $ + < = > ^ ` | ~. */
const ASCII_PUNCTUATION_RANGES = "21-2F 3A-40 5B-60 7B-7E";

/** Removed by clean_text: NUL, U+FFFD, Cc, Cf, Co, except \t \n \r (those are whitespace). */
const F_REMOVE = 1;
/** Mapped to ' ' by clean_text, then a word separator. */
const F_SPACE = 2;
/** A word of its own (BertPreTokenizer isolates it). */
const F_PUNCT = 4;
/** A word of its own (handle_chinese_chars pads it with spaces). */
const F_CJK = 8;
/** Dropped after NFD by strip_accents. Not a word boundary. */
const F_MARK = 16;
/** Flags that end the current word. */
const F_BOUNDARY = F_REMOVE | F_SPACE | F_PUNCT | F_CJK;

function forEachRange(spec: string, fn: (first: number, last: number) => void): void {
  for (const item of spec.split(" ")) {
    const [a, b] = item.split("-");
    fn(parseInt(a, 16), parseInt(b ?? a, 16));
  }
}

/**
 * One byte of flags per code point (1.1 MB): a table lookup per character is far cheaper than a regex
 * or a binary search, and the text loop below does one for every character it sees.
 */
function buildCharFlags(): Uint8Array {
  const flags = new Uint8Array(0x110000);
  const set = (spec: string, flag: number) =>
    forEachRange(spec, (first, last) => {
      for (let cp = first; cp <= last; cp++) flags[cp] |= flag;
    });
  // Cc except \t \n \r, U+FFFD, Co (private use).
  set("0-8 B-C E-1F 7F-9F FFFD E000-F8FF F0000-FFFFD 100000-10FFFD", F_REMOVE);
  set(FORMAT_RANGES, F_REMOVE);
  // Surrogate code units only show up here when unpaired (paired ones are combined into a code point).
  // Rust strings cannot hold them; we treat them as U+FFFD (what a UTF-8 round trip makes of them): dropped.
  set("D800-DFFF", F_REMOVE);
  // clean_text filters before it maps whitespace, so \v \f and NEL (White_Space but Cc) are dropped.
  forEachRange(WHITESPACE_RANGES, (first, last) => {
    for (let cp = first; cp <= last; cp++) if (!(flags[cp] & F_REMOVE)) flags[cp] |= F_SPACE;
  });
  set(ASCII_PUNCTUATION_RANGES, F_PUNCT);
  set(PUNCTUATION_RANGES, F_PUNCT);
  set(CJK_RANGES, F_CJK);
  set(NONSPACING_MARK_RANGES, F_MARK);
  return flags;
}

const CHAR_FLAGS = buildCharFlags();

/** Lowercasing one code point at a time, like Rust's `char::to_lowercase` (no final-sigma rule). */
const lowerCache = new Map<number, string>();
function lowerCodePoint(cp: number): string {
  if (cp < 0x80) return String.fromCharCode(cp >= 65 && cp <= 90 ? cp + 32 : cp);
  let lower = lowerCache.get(cp);
  if (lower === undefined) {
    lower = String.fromCodePoint(cp).toLowerCase();
    lowerCache.set(cp, lower);
  }
  return lower;
}

/** NFD, drop non-spacing marks, lowercase: the non-ASCII half of BertNormalizer for one cleaned word. */
function normalizeNonAscii(word: string): string {
  const nfd = word.normalize("NFD");
  let out = "";
  for (let i = 0; i < nfd.length;) {
    const cp = nfd.codePointAt(i)!;
    i += cp > 0xffff ? 2 : 1;
    if (!(CHAR_FLAGS[cp] & F_MARK)) out += lowerCodePoint(cp);
  }
  return out;
}

function isHighSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdbff;
}

function isLowSurrogate(unit: number): boolean {
  return unit >= 0xdc00 && unit <= 0xdfff;
}

/** Code points in a string (what Rust's `chars().count()` sees). */
function codePointLength(s: string): number {
  let n = s.length;
  for (let i = 0; i + 1 < s.length; i++) {
    if (isHighSurrogate(s.charCodeAt(i)) && isLowSurrogate(s.charCodeAt(i + 1))) {
      n--;
      i++;
    }
  }
  return n;
}

/** transformers' `clean_up_tokenization` (applied to the joined string). */
function cleanUpTokenization(text: string): string {
  return text.replaceAll(" .", ".").replaceAll(" ?", "?").replaceAll(" !", "!").replaceAll(" ,", ",")
    .replaceAll(" ' ", "'").replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

/** The Rust WordPiece decoder's `cleanup`, which it applies to each token (with its leading space). */
function cleanUpPiece(piece: string): string {
  if (!piece.includes(" ")) return piece; // every pattern starts with ' '
  return piece.replaceAll(" .", ".").replaceAll(" ?", "?").replaceAll(" !", "!").replaceAll(" ,", ",")
    .replaceAll(" ' ", "'").replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(" do not", " don't")
    .replaceAll(" 's", "'s").replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

// ---------------------------------------------------------------------------------------------------------
// Public types.
// ---------------------------------------------------------------------------------------------------------

/** The special tokens BERT's vocab defines, in the order of their conventional ids (0, 100, 101, 102, 103). */
export const SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] as const;

/** Options of {@link BertTokenizer.tokenize}. */
export interface TokenizeOptions {
  /**
   * Literal strings kept whole where they occur in the raw text (case-sensitive, matched before
   * normalization, leftmost-longest), like HF's added tokens. Each must be a vocab token.
   * Default: the five special tokens, as `BertTokenizerFast` does. Pass `[]` for plain BERT basic
   * tokenization, which splits `[UNK]` into `[`, `un`, `##k`, `]`. (The slow Python tokenizer's
   * `never_split` only matches whole whitespace-separated words; this matches anywhere, as added tokens do.)
   */
  neverSplit?: readonly string[];
}

/** Options of {@link BertTokenizer.encode} and {@link BertTokenizer.encodeBatch}. */
export interface EncodeOptions extends TokenizeOptions {
  /**
   * Maximum number of ids including `[CLS]` and `[SEP]` (default 128); the text is truncated from the right,
   * like HF with `truncation=True, max_length=maxLength`. `Infinity` disables truncation.
   */
  maxLength?: number;
  /** Wrap the ids in `[CLS] … [SEP]` (default true). */
  addSpecialTokens?: boolean;
  /**
   * `"none"` (default): no padding. `"longest"`: pad every encoding of a batch to the longest one.
   * `"max_length"`: pad to `maxLength` (which must then be finite). Padding uses `[PAD]` with mask 0.
   */
  padding?: "none" | "longest" | "max_length";
  /** Also return the wordpiece strings (default false). */
  returnTokens?: boolean;
}

/** Options of {@link BertTokenizer.decode}. */
export interface DecodeOptions {
  /** Leave out `[PAD] [UNK] [CLS] [SEP] [MASK]` (default false). */
  skipSpecialTokens?: boolean;
  /**
   * Apply transformers' `clean_up_tokenization` (" ." → "." … " 's" → "'s"; default true, as transformers
   * 4.x did for BERT and as the tokenizer_config.json written by {@link BertTokenizer.saveHuggingFace} says).
   */
  cleanUpTokenizationSpaces?: boolean;
}

/** The result of encoding one text. */
export interface Encoding {
  /** Vocab ids, `[CLS] … [SEP]` unless `addSpecialTokens` is false, then any padding. */
  ids: number[];
  /** 1 for real tokens, 0 for padding. */
  attentionMask: number[];
  /** The tokens of `ids`, present when `returnTokens` was set. */
  tokens?: string[];
}

// ---------------------------------------------------------------------------------------------------------
// The tokenizer.
// ---------------------------------------------------------------------------------------------------------

/** Words up to this many UTF-16 units are cached; longer ones are rare and would bloat the cache. */
const CACHE_MAX_KEY = 48;
/** Entries before the word cache is cleared; AG News has ~40k distinct words, so this rarely triggers. */
const CACHE_CAPACITY = 100_000;
/** WordPiece gives up on words longer than this (in code points) and emits `[UNK]`. */
const MAX_INPUT_CHARS_PER_WORD = 100;
const CONTINUATION_PREFIX = "##";
const VOCAB_FILE = "vocab.txt";

/**
 * BERT uncased WordPiece tokenizer (bert-base-uncased / distilbert-base-uncased), equal to transformers'
 * `BertTokenizerFast` in ids, attention masks and decoded text.
 *
 * Each instance keeps a bounded cache of raw word → ids (frequent words skip normalization and WordPiece);
 * it only speeds things up and never changes a result.
 */
export class BertTokenizer {
  readonly #idToToken: readonly string[];
  /** Whole-word tokens (no `##`). */
  readonly #vocab: Map<string, number>;
  /** Continuation tokens keyed without their `##`, so lookups need no string concatenation. */
  readonly #continuations: Map<string, number>;
  /** Longest token in UTF-16 units (without `##`): the longest substring worth looking up. */
  readonly #maxPieceLength: number;
  readonly #specialIds: ReadonlySet<number>;
  /** Cleaned raw word → ids after normalization, punctuation split and WordPiece. */
  readonly #wordCache = new Map<string, readonly number[]>();

  /** Id of `[PAD]` (0 in bert-base-uncased). */
  readonly padId: number;
  /** Id of `[UNK]` (100). */
  readonly unkId: number;
  /** Id of `[CLS]` (101). */
  readonly clsId: number;
  /** Id of `[SEP]` (102). */
  readonly sepId: number;
  /** Id of `[MASK]` (103). */
  readonly maskId: number;

  /** Use the static factories; `tokens[i]` is the token with id `i`. */
  private constructor(tokens: readonly string[]) {
    this.#idToToken = tokens;
    this.#vocab = new Map();
    this.#continuations = new Map();
    let maxLength = 0;
    // As transformers' load_vocab: a duplicated token maps to its last line.
    tokens.forEach((token, id) => {
      this.#vocab.set(token, id);
      if (token.startsWith(CONTINUATION_PREFIX)) {
        this.#continuations.set(token.slice(CONTINUATION_PREFIX.length), id);
        maxLength = Math.max(maxLength, token.length - CONTINUATION_PREFIX.length);
      } else {
        maxLength = Math.max(maxLength, token.length);
      }
    });
    this.#maxPieceLength = maxLength;
    const idOf = (token: string): number => {
      const id = this.#vocab.get(token);
      if (id === undefined) throw new Error(`BERT vocab lacks the special token ${token}`);
      return id;
    };
    [this.padId, this.unkId, this.clsId, this.sepId, this.maskId] = SPECIAL_TOKENS.map(idOf);
    this.#specialIds = new Set(SPECIAL_TOKENS.map(idOf));
  }

  /**
   * Builds a tokenizer from the text of a vocab.txt: one token per line, the id is the 0-based line number.
   * Lines end in LF, CRLF or CR, as Python's text mode reads them.
   */
  static fromVocabText(text: string): BertTokenizer {
    const lines = text.split(/\r\n|\r|\n/);
    if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop(); // the newline after the last line
    return new BertTokenizer(lines);
  }

  /** Reads a vocab.txt file (path or file URL). */
  static async fromVocabFile(path: string | URL): Promise<BertTokenizer> {
    return BertTokenizer.fromVocabText(await Deno.readTextFile(path));
  }

  /** The bert-base-uncased vocab bundled with this module (data/vocab/bert-base-uncased-vocab.txt). */
  static async bundled(): Promise<BertTokenizer> {
    return await BertTokenizer.fromVocabFile(new URL("./vocab/bert-base-uncased-vocab.txt", import.meta.url));
  }

  /**
   * Loads a transformers tokenizer folder: vocab.txt, plus tokenizer_config.json when present. Only the
   * uncased BERT pipeline is implemented, so a config asking for `do_lower_case: false`, `strip_accents: false`
   * or `tokenize_chinese_chars: false` is rejected rather than silently tokenized differently.
   */
  static async fromHuggingFaceDir(dir: string): Promise<BertTokenizer> {
    const config = await readJsonIfPresent(joinPath(dir, "tokenizer_config.json"));
    if (config !== undefined) checkUncasedConfig(config, dir);
    let vocabText: string;
    try {
      vocabText = await Deno.readTextFile(joinPath(dir, VOCAB_FILE));
    } catch (err) {
      throw new Error(
        `${dir} has no readable ${VOCAB_FILE} (a tokenizer.json-only folder is not supported)`,
        {
          cause: err,
        },
      );
    }
    return BertTokenizer.fromVocabText(vocabText);
  }

  /**
   * Writes vocab.txt, tokenizer_config.json and special_tokens_map.json, which transformers'
   * `AutoTokenizer.from_pretrained(dir)` loads as a DistilBertTokenizer(Fast) with do_lower_case true and
   * model_max_length 512. Creates `dir` if needed and overwrites those three files.
   */
  async saveHuggingFace(dir: string): Promise<void> {
    await Deno.mkdir(dir, { recursive: true });
    const [pad, unk, cls, sep, mask] = SPECIAL_TOKENS;
    const specialTokens = {
      cls_token: cls,
      mask_token: mask,
      pad_token: pad,
      sep_token: sep,
      unk_token: unk,
    };
    const config = {
      tokenizer_class: "DistilBertTokenizer",
      do_lower_case: true,
      tokenize_chinese_chars: true,
      strip_accents: null,
      model_max_length: 512,
      clean_up_tokenization_spaces: true,
      padding_side: "right",
      truncation_side: "right",
      model_input_names: ["input_ids", "attention_mask"],
      ...specialTokens,
    };
    await Deno.writeTextFile(joinPath(dir, VOCAB_FILE), this.#idToToken.join("\n") + "\n");
    await Deno.writeTextFile(joinPath(dir, "tokenizer_config.json"), JSON.stringify(config, null, 2) + "\n");
    await Deno.writeTextFile(
      joinPath(dir, "special_tokens_map.json"),
      JSON.stringify(specialTokens, null, 2) + "\n",
    );
  }

  /** Number of ids (30522 for bert-base-uncased). */
  get vocabSize(): number {
    return this.#idToToken.length;
  }

  /** The id of a token, or undefined when it is not in the vocab. */
  tokenToId(token: string): number | undefined {
    return this.#vocab.get(token);
  }

  /** The token of an id, or undefined when the id is out of range. */
  idToToken(id: number): string | undefined {
    return this.#idToToken[id];
  }

  /** Ids of tokens; tokens missing from the vocab map to `[UNK]`. */
  convertTokensToIds(tokens: readonly string[]): number[] {
    return tokens.map((token) => this.#vocab.get(token) ?? this.unkId);
  }

  /** Tokens of ids; throws on an id outside the vocab. */
  convertIdsToTokens(ids: ArrayLike<number>): string[] {
    return Array.from(ids, (id) => {
      const token = this.#idToToken[id];
      if (token === undefined) {
        throw new RangeError(`token id ${id} is outside the vocab (size ${this.vocabSize})`);
      }
      return token;
    });
  }

  /** Wordpieces of a text, without `[CLS]`/`[SEP]` and without truncation (HF's `tokenizer.tokenize`). */
  tokenize(text: string, options: TokenizeOptions = {}): string[] {
    const ids: number[] = [];
    this.#appendTextIds(text, ids, Infinity, options.neverSplit ?? SPECIAL_TOKENS);
    return this.convertIdsToTokens(ids);
  }

  /**
   * Encodes one text like `tokenizer(text, truncation=True, max_length=maxLength)`: ids `[CLS] … [SEP]`
   * truncated to `maxLength` (default 128) and an attention mask. Throws a RangeError when `maxLength` cannot
   * even hold `[CLS]` and `[SEP]` (HF logs an error and returns the text untruncated instead).
   */
  encode(text: string, options: EncodeOptions = {}): Encoding {
    const { maxLength = 128, addSpecialTokens = true, padding = "none", returnTokens = false } = options;
    const reserved = addSpecialTokens ? 2 : 0;
    checkMaxLength(maxLength, reserved, padding);
    const ids: number[] = addSpecialTokens ? [this.clsId] : [];
    this.#appendTextIds(text, ids, maxLength - reserved + ids.length, options.neverSplit ?? SPECIAL_TOKENS);
    if (addSpecialTokens) ids.push(this.sepId);
    const encoding: Encoding = { ids, attentionMask: new Array<number>(ids.length).fill(1) };
    if (padding === "max_length") this.#pad(encoding, maxLength);
    if (returnTokens) encoding.tokens = this.convertIdsToTokens(encoding.ids);
    return encoding;
  }

  /** Encodes many texts; with `padding: "longest"` they are padded to the longest encoding of the batch. */
  encodeBatch(texts: readonly string[], options: EncodeOptions = {}): Encoding[] {
    const { padding = "none", returnTokens = false } = options;
    const encodings = texts.map((text) => this.encode(text, { ...options, returnTokens: false }));
    if (padding === "longest") {
      const longest = encodings.reduce((max, e) => Math.max(max, e.ids.length), 0);
      for (const encoding of encodings) this.#pad(encoding, longest);
    }
    if (returnTokens) { for (const e of encodings) e.tokens = this.convertIdsToTokens(e.ids); }
    return encodings;
  }

  /**
   * Turns ids back into text like transformers' `decode`: wordpieces joined with spaces, `##` pieces glued
   * to the previous one, the WordPiece decoder's cleanup and (by default) `clean_up_tokenization`.
   * Ids outside the vocab are skipped, as HF does.
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const { skipSpecialTokens = false, cleanUpTokenizationSpaces = true } = options;
    let text = "";
    let first = true;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const token = this.#idToToken[id];
      if (token === undefined || (skipSpecialTokens && this.#specialIds.has(id))) continue;
      let piece = token;
      if (!first) {
        piece = token.startsWith(CONTINUATION_PREFIX) ? token.slice(CONTINUATION_PREFIX.length) : " " + token;
      }
      text += cleanUpPiece(piece);
      first = false;
    }
    return cleanUpTokenizationSpaces ? cleanUpTokenization(text) : text;
  }

  #pad(encoding: Encoding, length: number): void {
    while (encoding.ids.length < length) {
      encoding.ids.push(this.padId);
      encoding.attentionMask.push(0);
    }
  }

  /**
   * Appends the ids of `text` to `out` until `out` holds `limit` ids. Literal `neverSplit` strings become
   * their own id; the stretches between them go through the normal pipeline.
   */
  #appendTextIds(text: string, out: number[], limit: number, neverSplit: readonly string[]): void {
    if (neverSplit.length === 0) {
      this.#appendSegmentIds(text, 0, text.length, out, limit);
      return;
    }
    const matcher = new LiteralMatcher(text, neverSplit);
    let pos = 0;
    while (pos < text.length && out.length < limit) {
      const match = matcher.next(pos);
      if (match === undefined) break;
      this.#appendSegmentIds(text, pos, match.index, out, limit);
      if (out.length >= limit) return;
      const id = this.#vocab.get(match.token);
      if (id === undefined) {
        throw new Error(`neverSplit token ${JSON.stringify(match.token)} is not in the vocab`);
      }
      out.push(id);
      pos = match.index + match.token.length;
    }
    this.#appendSegmentIds(text, pos, text.length, out, limit);
  }

  /**
   * Normalizes, pre-tokenizes and WordPiece-encodes `text[from, to)` in one pass over its code units.
   *
   * A "word" is a maximal run of characters that are neither whitespace nor punctuation nor CJK; removed
   * (control) characters inside a run join its two halves, as clean_text deletes them before splitting.
   * ASCII words only need lowercasing; the rest go through NFD + mark stripping + lowercasing, which can
   * create punctuation (U+037E → ';'), so the normalized word is split again.
   */
  #appendSegmentIds(text: string, from: number, to: number, out: number[], limit: number): void {
    let wordStart = -1; // start of the current run of word characters, -1 when none
    let prefix = ""; // earlier parts of the current word, cut off by removed characters
    let ascii = true;
    let i = from;
    while (i < to) {
      if (out.length >= limit) return;
      let cp = text.charCodeAt(i);
      let width = 1;
      if (isHighSurrogate(cp) && i + 1 < to && isLowSurrogate(text.charCodeAt(i + 1))) {
        cp = ((cp - 0xd800) << 10) + (text.charCodeAt(i + 1) - 0xdc00) + 0x10000;
        width = 2;
      }
      const flags = CHAR_FLAGS[cp];
      if ((flags & F_BOUNDARY) === 0) {
        if (wordStart < 0) wordStart = i;
        if (cp >= 0x80) ascii = false;
        i += width;
        continue;
      }
      if (flags & F_REMOVE) {
        if (wordStart >= 0) prefix += text.slice(wordStart, i);
        wordStart = -1;
        i += width;
        continue;
      }
      if (wordStart >= 0 || prefix !== "") {
        this.#appendWordIds(prefix + (wordStart >= 0 ? text.slice(wordStart, i) : ""), ascii, out, limit);
      }
      wordStart = -1;
      prefix = "";
      ascii = true;
      if (flags & (F_PUNCT | F_CJK)) this.#appendWordIds(text.slice(i, i + width), cp < 0x80, out, limit);
      i += width;
    }
    if (wordStart >= 0 || prefix !== "") {
      this.#appendWordIds(prefix + (wordStart >= 0 ? text.slice(wordStart, to) : ""), ascii, out, limit);
    }
  }

  /** Appends the ids of one cleaned, not yet normalized word (up to `limit` ids in `out`). */
  #appendWordIds(word: string, ascii: boolean, out: number[], limit: number): void {
    let ids = this.#wordCache.get(word);
    if (ids === undefined) {
      ids = ascii ? this.#wordPiece(word.toLowerCase()) : this.#nonAsciiWordIds(word);
      if (word.length <= CACHE_MAX_KEY) {
        if (this.#wordCache.size >= CACHE_CAPACITY) this.#wordCache.clear();
        this.#wordCache.set(word, ids);
      }
    }
    for (let k = 0; k < ids.length && out.length < limit; k++) out.push(ids[k]);
  }

  #nonAsciiWordIds(word: string): number[] {
    const normalized = normalizeNonAscii(word);
    const ids: number[] = [];
    let start = 0;
    for (let i = 0; i < normalized.length; i++) {
      const cp = normalized.codePointAt(i)!;
      const width = cp > 0xffff ? 2 : 1;
      if (CHAR_FLAGS[cp] & F_PUNCT) {
        if (i > start) ids.push(...this.#wordPiece(normalized.slice(start, i)));
        ids.push(...this.#wordPiece(normalized.slice(i, i + width)));
        start = i + width;
      }
      i += width - 1;
    }
    if (start < normalized.length) ids.push(...this.#wordPiece(normalized.slice(start)));
    return ids;
  }

  /** WordPiece on one normalized word: greedy longest-match-first, or a single `[UNK]`. */
  #wordPiece(word: string): number[] {
    if (word.length > MAX_INPUT_CHARS_PER_WORD && codePointLength(word) > MAX_INPUT_CHARS_PER_WORD) {
      return [this.unkId];
    }
    const whole = this.#vocab.get(word); // the common case, and the first candidate of the loop below
    if (whole !== undefined) return [whole];
    const ids: number[] = [];
    let start = 0;
    while (start < word.length) {
      const pieces = start === 0 ? this.#vocab : this.#continuations;
      let end = Math.min(word.length, start + this.#maxPieceLength);
      if (
        end < word.length && isLowSurrogate(word.charCodeAt(end)) && isHighSurrogate(word.charCodeAt(end - 1))
      ) {
        end--; // never cut a surrogate pair in half
      }
      let id: number | undefined;
      while (end > start) {
        id = pieces.get(word.slice(start, end));
        if (id !== undefined) break;
        const pair = end - start >= 2 && isLowSurrogate(word.charCodeAt(end - 1)) &&
          isHighSurrogate(word.charCodeAt(end - 2));
        end -= pair ? 2 : 1;
      }
      if (id === undefined) return [this.unkId];
      ids.push(id);
      start = end;
    }
    return ids;
  }
}

/** Finds literal tokens in a text, leftmost first and longest on ties (HF's added-token matching). */
class LiteralMatcher {
  readonly #text: string;
  readonly #tokens: readonly string[];
  /** Next known occurrence of each token at or after the last query position (-1: none left). */
  readonly #next: number[];

  constructor(text: string, tokens: readonly string[]) {
    this.#text = text;
    this.#tokens = tokens.filter((t) => t.length > 0);
    this.#next = this.#tokens.map(() => -2); // -2: not searched yet
  }

  next(from: number): { index: number; token: string } | undefined {
    let best: { index: number; token: string } | undefined;
    for (let k = 0; k < this.#tokens.length; k++) {
      const token = this.#tokens[k];
      if (this.#next[k] !== -1 && this.#next[k] < from) this.#next[k] = this.#text.indexOf(token, from);
      const index = this.#next[k];
      if (index < 0) continue;
      if (
        best === undefined || index < best.index || (index === best.index && token.length > best.token.length)
      ) {
        best = { index, token };
      }
    }
    return best;
  }
}

function checkMaxLength(maxLength: number, reserved: number, padding: string): void {
  if (!(maxLength === Infinity || (Number.isInteger(maxLength) && maxLength >= reserved))) {
    throw new RangeError(`maxLength must be an integer >= ${reserved} or Infinity, got ${maxLength}`);
  }
  if (padding === "max_length" && maxLength === Infinity) {
    throw new RangeError(`padding "max_length" needs a finite maxLength`);
  }
}

function checkUncasedConfig(config: Record<string, unknown>, dir: string): void {
  const unsupported: string[] = [];
  if (config.do_lower_case === false) unsupported.push("do_lower_case: false (cased BERT)");
  if (config.strip_accents === false) unsupported.push("strip_accents: false");
  if (config.tokenize_chinese_chars === false) unsupported.push("tokenize_chinese_chars: false");
  if (unsupported.length > 0) {
    throw new Error(
      `${dir}/tokenizer_config.json asks for ${unsupported.join(", ")}; ` +
        `only the uncased BERT tokenizer is implemented`,
    );
  }
}

async function readJsonIfPresent(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  return JSON.parse(text);
}

function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}
