using System.Text;
using System.Text.Json;
using NegDistill.Data;

namespace NegDistill.Data.Tests;

public class TokenizerTests
{
    /// <summary>MATH-style text: LaTeX, unicode, digits, whitespace runs, tabs, newlines, astral characters.</summary>
    internal static readonly string[] MathCorpus =
    [
        "Problem:\nIf $\\frac{1}{x} + \\frac{1}{y} = 3$ and $\\frac{1}{x} - \\frac{1}{y} = -7$, what is $x + y$?",
        "Solution:\nAdding the equations gives $\\frac{2}{x}=-4$, so $x=-\\frac{1}{2}$. Thus $x+y=\\boxed{-\\frac{3}{10}}$.",
        "Let $f(x) = 3x^2 - 5x + 2$. Find $f(-1) + f(2)$.",
        "The area is $\\pi r^2 = 16\\pi$ square units, so $r = 4$.",
        "$\\sqrt{2} \\approx 1.41421356$ and $\\sqrt[3]{27} = 3$",
        "We compute $\\binom{10}{3} = \\dfrac{10!}{3!\\,7!} = 120$.",
        "\\begin{align*}\n2x + 3y &= 12 \\\\\n4x - y &= 5\n\\end{align*}",
        "\\[\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}\\]",
        "Since $\\angle ABC = 90^\\circ$, triangle $ABC$ is right.",
        "The probability is $\\tfrac{3}{8} = 0.375 = 37.5\\%$.",
        "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 1,000,000 3.14159 -273.15 1e-9 0x1F",
        "2024 + 1999 = 4023; 12345678901234567890 is large.",
        "Unicode math: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ ≤ ∞; π ≈ 3.14; √2; ≠ ≡ ⊂ ∪ ∩ ∅",
        "Greek: α β γ δ ε ζ η θ λ μ ξ π ρ σ τ φ χ ψ ω Ω Δ Σ",
        "Accents: café naïve résumé Ångström Gödel Erdős Poincaré",
        "CJK: 数学 問題 수학 — and Cyrillic: задача, решение.",
        "Emoji and astral: 🦙 🎉 𝑥 𝔽 𝟙 and Ꙋ",
        "  leading spaces and trailing spaces  ",
        "tabs\tbetween\t\twords\n\nand blank lines\n\n\n",
        "multiple     spaces     inside",
        "\nstarts with a newline",
        " starts with one space",
        "ends with a newline\n",
        "Windows line\r\nendings\r\n",
        "Mixed: $x_{n+1} = \\frac{x_n}{2}$ if $x_n$ is even; otherwise $3x_n+1$.",
        "Answer: $\\boxed{\\left(\\frac{1}{2}, -\\frac{\\sqrt{3}}{2}\\right)}$",
        "Code-like: f(x) := {x | x mod 3 == 0} && (a[i] != b[j]) || c->d;",
        "Quotes: \"double\" 'single' `back` «guillemets» „low“",
        "Control-ish: \u0001\u0007 and zero-width \u200b joiner \u200d here",
        "Combining: e\u0301 a\u0308 n\u0303",
        "#### 72",
        "a",
        "1",
        "ab\ncd",
    ];

    // ---- byte tokenizer ----

    [Test]
    public void Byte_tokenizer_ids_are_documented_values()
    {
        var t = new ByteTokenizer();
        Assert.That((t.VocabSize, t.BosId, t.EosId, t.PadId), Is.EqualTo((259, 256, 257, 258)));
        Assert.That(t.Encode("Ab", addBos: true, addEos: true), Is.EqualTo(new[] { 256, 65, 98, 257 }));
        Assert.That(t.Encode("é", addBos: false, addEos: false), Is.EqualTo(new[] { 0xC3, 0xA9 }));
        Assert.That(t.Encode("", addBos: true, addEos: false), Is.EqualTo(new[] { 256 }));
        Assert.That(t.Decode([256, 72, 105, 257, 258, 258]), Is.EqualTo("Hi"));
    }

    [Test]
    public void Byte_tokenizer_round_trips_the_corpus()
    {
        var t = new ByteTokenizer();
        foreach (string s in MathCorpus)
        {
            int[] ids = t.Encode(s, addBos: true, addEos: true);
            Assert.That(ids.All(i => i >= 0 && i < t.VocabSize), Is.True);
            Assert.That(ids.Length, Is.EqualTo(Encoding.UTF8.GetByteCount(s) + 2));
            Assert.That(t.Decode(ids), Is.EqualTo(s));
        }
    }

    [Test]
    public void Byte_tokenizer_rejects_invalid_input()
    {
        var t = new ByteTokenizer();
        Assert.Throws<EncoderFallbackException>(() => t.Encode("lone \uD800 surrogate", false, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([65, 300]));
        Assert.That(t.Decode([0xE2, 0x82]), Is.EqualTo("\uFFFD")); // a cut-off character decodes to U+FFFD
    }

    // ---- SentencePiece protobuf ----

    [Test]
    public void Model_proto_round_trips_through_its_own_reader()
    {
        var m = new SentencePieceModelProto { ByteFallback = true, SplitDigits = true, PadId = -1, AddDummyPrefix = true, RemoveExtraWhitespaces = false };
        m.Pieces.Add(new SentencePieceEntry("<unk>", 0, SentencePieceType.Unknown));
        m.Pieces.Add(new SentencePieceEntry("<s>", 0, SentencePieceType.Control));
        m.Pieces.Add(new SentencePieceEntry("▁héllo", -12.5f, SentencePieceType.Normal));
        m.Pieces.Add(new SentencePieceEntry("<0x0A>", 0, SentencePieceType.Byte));
        SentencePieceModelProto back = SentencePieceModelProto.Parse(m.ToBytes());

        Assert.That(back.Pieces, Is.EqualTo(m.Pieces));
        Assert.That((back.ModelType, back.ByteFallback, back.SplitDigits, back.PadId, back.UnkId, back.BosId, back.EosId),
            Is.EqualTo((SentencePieceModelType.Bpe, true, true, -1, 0, 1, 2)));
        Assert.That((back.AddDummyPrefix, back.RemoveExtraWhitespaces, back.EscapeWhitespaces, back.NormalizerName),
            Is.EqualTo((true, false, true, "identity")));
    }

    [Test]
    public void Model_proto_reader_applies_proto2_defaults_to_absent_fields()
    {
        SentencePieceModelProto empty = SentencePieceModelProto.Parse([]);
        Assert.That((empty.ModelType, empty.RemoveExtraWhitespaces, empty.AddDummyPrefix, empty.PadId),
            Is.EqualTo((SentencePieceModelType.Unigram, true, true, -1)));
        Assert.Throws<InvalidDataException>(() => SentencePieceModelProto.Parse([0x0A, 0x05, 0x01]));
    }

    // ---- tokenizer.json conversion on a small synthetic tokenizer (no download needed) ----

    internal static string TinyTokenizerJson()
    {
        var vocab = new List<string> { "<unk>", "<s>", "</s>" };
        for (int b = 0; b < 256; b++)
        {
            vocab.Add($"<0x{b:X2}>");
        }

        string[] chars = ["▁", "a", "b", "c", "d", "e", "1", "2", "\\", "{", "}", "é"];
        vocab.AddRange(chars);
        // Merges in priority order; whitespace runs last, as in LLaMA.
        string[][] merges =
        [
            ["a", "b"], ["▁", "a"], ["c", "d"], ["▁", "ab"], ["ab", "cd"], ["▁a", "b"], ["1", "2"], ["\\", "{"],
            ["▁ab", "cd"], ["▁abcd", "e"], ["e", "é"], ["d", "e"], ["▁", "cd"], ["▁", "▁"], ["▁▁", "▁▁"], ["▁▁", "▁"], ["▁", "▁▁"],
            ["▁", "▁▁▁"], ["▁▁▁", "▁"],
        ];
        foreach (string[] m in merges)
        {
            string merged = m[0] + m[1];
            if (!vocab.Contains(merged))
            {
                vocab.Add(merged);
            }
        }

        var root = new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["added_tokens"] = new object[]
            {
                new { id = 0, content = "<unk>", special = true },
                new { id = 1, content = "<s>", special = true },
                new { id = 2, content = "</s>", special = true },
            },
            ["normalizer"] = new
            {
                type = "Sequence",
                normalizers = new object[]
                {
                    new { type = "Prepend", prepend = "▁" },
                    new { type = "Replace", pattern = new { String = " " }, content = "▁" },
                },
            },
            ["pre_tokenizer"] = null,
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE",
                ["unk_token"] = "<unk>",
                ["byte_fallback"] = true,
                ["vocab"] = vocab.Select((p, i) => (p, i)).ToDictionary(x => x.p, x => x.i),
                ["merges"] = merges.Select(m => m[0] + " " + m[1]).ToArray(),
            },
        };
        return JsonSerializer.Serialize(root);
    }

    [Test]
    public void Converter_assigns_types_scores_and_normaliser()
    {
        string json = TinyTokenizerJson();
        SentencePieceModelProto model = HuggingFaceTokenizerConverter.Convert(new MemoryStream(Encoding.UTF8.GetBytes(json)), out ConversionReport report);

        Assert.That(model.Pieces[0], Is.EqualTo(new SentencePieceEntry("<unk>", 0, SentencePieceType.Unknown)));
        Assert.That(model.Pieces[1].Type, Is.EqualTo(SentencePieceType.Control));
        Assert.That(model.Pieces[3 + 0x41], Is.EqualTo(new SentencePieceEntry("<0x41>", 0, SentencePieceType.Byte)));
        SentencePieceEntry ab = model.Pieces.Single(p => p.Piece == "ab");
        SentencePieceEntry spaceRun = model.Pieces.Single(p => p.Piece == "▁▁");
        Assert.That(ab.Score, Is.EqualTo(0f));                     // first merge
        Assert.That(spaceRun.Score, Is.EqualTo(-13f));             // rank 13
        Assert.That(model.Pieces.Single(p => p.Piece == "▁▁▁▁").Score, Is.EqualTo(-14f));
        Assert.That(model.Pieces.Single(p => p.Piece == "▁▁▁").Score, Is.EqualTo(-15f));   // first of its three merges
        Assert.That(model.Pieces.Single(p => p.Piece == "a").Score, Is.LessThan(-18f));   // below every merge
        Assert.That((model.ByteFallback, model.AddDummyPrefix, model.EscapeWhitespaces, model.RemoveExtraWhitespaces),
            Is.EqualTo((true, true, true, false)));
        Assert.That((model.UnkId, model.BosId, model.EosId, model.PadId), Is.EqualTo((0, 1, 2, -1)));
        Assert.That(report.BytePieces, Is.EqualTo(256));
        Assert.That(report.ControlPieces, Is.EqualTo(2));
        Assert.That(report.Merges, Is.EqualTo(19));
        // "abcd" = "ab"+"cd" has a merge; "▁abcd" can also be split "▁"+"abcd" and "▁a"+"bcd"? ("bcd" is not a piece)
        Assert.That(report.MissingSplitMerges, Is.GreaterThan(0));
        Assert.That(report.Exact, Is.False);
    }

    [Test]
    public void Converter_refuses_what_it_cannot_express()
    {
        string nfkc = TinyTokenizerJson().Replace("\"type\":\"Prepend\"", "\"type\":\"NFKC\"", StringComparison.Ordinal);
        Assert.Throws<NotSupportedException>(() => HuggingFaceTokenizerConverter.Convert(new MemoryStream(Encoding.UTF8.GetBytes(nfkc)), out _));
        string wordPiece = TinyTokenizerJson().Replace("\"type\":\"BPE\"", "\"type\":\"WordPiece\"", StringComparison.Ordinal);
        Assert.Throws<NotSupportedException>(() => HuggingFaceTokenizerConverter.Convert(new MemoryStream(Encoding.UTF8.GetBytes(wordPiece)), out _));
        string badMerge = TinyTokenizerJson().Replace("\"a b\"", "\"a zz\"", StringComparison.Ordinal);
        Assert.Throws<InvalidDataException>(() => HuggingFaceTokenizerConverter.Convert(new MemoryStream(Encoding.UTF8.GetBytes(badMerge)), out _));
    }

    [Test]
    public void Converted_tiny_model_encodes_like_reference_bpe_and_round_trips()
    {
        string json = TinyTokenizerJson();
        using var dir = new TempDir();
        string jsonPath = dir.File("tokenizer.json", json);
        string modelPath = Path.Combine(dir.Path, "tokenizer.model");
        HuggingFaceTokenizerConverter.ConvertFile(jsonPath, modelPath);
        var tok = LlamaSentencePieceTokenizer.FromModelFile(modelPath);
        var reference = ReferenceBpe.FromJson(json);

        string[] alphabet = ["a", "b", "c", "d", "e", "1", "2", "\\", "{", "}", "é", " ", "x", "\n", "🦙"];
        var rng = new SplitMix64(99);
        int compared = 0;
        for (int i = 0; i < 2_000; i++)
        {
            var sb = new StringBuilder();
            int len = 1 + rng.NextInt(14);
            for (int k = 0; k < len; k++)
            {
                sb.Append(alphabet[rng.NextInt(alphabet.Length)]);
            }

            string s = sb.ToString();
            int[] ids = tok.Encode(s, addBos: false, addEos: false);
            if (!ContainsMissingSplitPiece(s))
            {
                Assert.That(ids, Is.EqualTo(reference.Encode(s)), s);
                compared++;
            }

            Assert.That(tok.Decode(tok.Encode(s, addBos: true, addEos: true)), Is.EqualTo(s), s);
        }

        Assert.That(compared, Is.GreaterThan(1_000));
        Assert.That(tok.Encode("ab", true, true), Is.EqualTo(new[] { 1, ReferenceId(json, "▁ab"), 2 }));
    }

    [Test]
    public void Equal_score_merges_go_leftmost_as_in_sentencepiece()
    {
        var model = new SentencePieceModelProto { ByteFallback = true };
        model.Pieces.Add(new SentencePieceEntry("<unk>", 0, SentencePieceType.Unknown));
        model.Pieces.Add(new SentencePieceEntry("<s>", 0, SentencePieceType.Control));
        model.Pieces.Add(new SentencePieceEntry("</s>", 0, SentencePieceType.Control));
        for (int b = 0; b < 256; b++)
        {
            model.Pieces.Add(new SentencePieceEntry($"<0x{b:X2}>", 0, SentencePieceType.Byte));
        }

        model.Pieces.Add(new SentencePieceEntry("xx", 0, SentencePieceType.Normal));   // 259
        model.Pieces.Add(new SentencePieceEntry("▁", -10, SentencePieceType.Normal));  // 260
        model.Pieces.Add(new SentencePieceEntry("x", -11, SentencePieceType.Normal));  // 261

        // "▁xxx": the pairs x+x at 1-2 and 2-3 tie; SentencePiece (and HF BPE) merge the leftmost.
        var encoder = new SentencePieceBpeEncoder(model);
        Assert.That(encoder.Encode("xxx"), Is.EqualTo(new[] { 260, 259, 261 }));
        Assert.That(encoder.Encode("xxxxx"), Is.EqualTo(new[] { 260, 259, 259, 261 }));
        Assert.That(encoder.Encode("xy"), Is.EqualTo(new[] { 260, 261, 3 + 'y' }));          // byte fallback
        Assert.That(encoder.Encode(""), Is.Empty);

        var tok = LlamaSentencePieceTokenizer.FromModel(model);
        Assert.That(tok.Encode("xxx", true, true), Is.EqualTo(new[] { 1, 260, 259, 261, 2 }));
        Assert.That(tok.Decode(tok.Encode("xxx xy", true, true)), Is.EqualTo("xxx xy"));

        // Microsoft.ML.Tokenizers 2.0.1 takes the rightmost pair on ties ("x" + "xx"): the reason
        // encoding does not default to it.
        var ml = LlamaSentencePieceTokenizer.FromModel(model, engine: LlamaEncodingEngine.MicrosoftMl);
        Assert.That(ml.Encode("xxx", false, false), Is.EqualTo(new[] { 260, 261, 259 }));
    }

    // The tiny vocabulary has pieces reachable by a split that has no merge ("▁abcd" = "▁" + "abcd"),
    // where SentencePiece and HF legitimately differ; strings that can form them are not compared.
    private static bool ContainsMissingSplitPiece(string s) => s.Contains("abcd", StringComparison.Ordinal) || s.Contains("cde", StringComparison.Ordinal) || s.Contains("eé", StringComparison.Ordinal);

    private static int ReferenceId(string json, string piece)
    {
        using JsonDocument doc = JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("model").GetProperty("vocab").GetProperty(piece).GetInt32();
    }
}
