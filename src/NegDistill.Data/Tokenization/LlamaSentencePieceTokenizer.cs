using Microsoft.ML.Tokenizers;

namespace NegDistill.Data;

/// <summary>
/// LLaMA's SentencePiece BPE tokenizer (32,000 pieces, byte fallback, BOS=1, EOS=2) through
/// Microsoft.ML.Tokenizers' <see cref="LlamaTokenizer"/>. Load it from a <c>tokenizer.model</c>, or from
/// a Hugging Face <c>tokenizer.json</c>, which is first converted to the equivalent model by
/// <see cref="HuggingFaceTokenizerConverter"/>.
/// </summary>
/// <remarks>
/// <para>The model is loaded by <see cref="LlamaTokenizer.Create(Stream, bool, bool, IReadOnlyDictionary{string, int}?)"/>,
/// which also decodes. Encoding defaults to <see cref="SentencePieceBpeEncoder"/>, because
/// Microsoft.ML.Tokenizers 2.0.1 breaks equal-score merges towards the rightmost pair and so differs
/// from SentencePiece and Hugging Face on runs like "ttt" or "}}}" (common in LaTeX); pass
/// <see cref="LlamaEncodingEngine.MicrosoftMl"/> to encode with the library as it is.</para>
/// <para>LLaMA has no padding token; <see cref="PadId"/> is 0 (<c>&lt;unk&gt;</c>), the id the authors'
/// loader pads with (TDG <c>code/dataset.py</c>: <c>pad_tokens = [0] * ...</c>). Padded positions
/// carry attention mask 0 and no target, so the choice does not reach the loss. Text that looks like
/// a special token (e.g. "&lt;s&gt;") is encoded as ordinary text, as SentencePiece itself does.</para>
/// </remarks>
public sealed class LlamaSentencePieceTokenizer : ITokenizer
{
    private readonly LlamaTokenizer _tokenizer;
    private readonly SentencePieceBpeEncoder _encoder;

    private LlamaSentencePieceTokenizer(LlamaTokenizer tokenizer, SentencePieceBpeEncoder encoder, int padId, LlamaEncodingEngine engine)
    {
        _tokenizer = tokenizer;
        _encoder = encoder;
        Engine = engine;
        VocabSize = tokenizer.Vocabulary.Count;
        BosId = tokenizer.BeginningOfSentenceId;
        EosId = tokenizer.EndOfSentenceId;
        PadId = padId;
    }

    public int VocabSize { get; }

    public int BosId { get; }

    public int EosId { get; }

    public int PadId { get; }

    /// <summary>Which implementation encodes.</summary>
    public LlamaEncodingEngine Engine { get; }

    /// <summary>The underlying Microsoft.ML.Tokenizers tokenizer.</summary>
    public LlamaTokenizer Inner => _tokenizer;

    /// <summary>Loads a SentencePiece <c>tokenizer.model</c> stream.</summary>
    public static LlamaSentencePieceTokenizer FromModel(Stream tokenizerModel, int padId = 0, LlamaEncodingEngine engine = LlamaEncodingEngine.SentencePiece)
    {
        ArgumentNullException.ThrowIfNull(tokenizerModel);
        using var ms = new MemoryStream();
        tokenizerModel.CopyTo(ms);
        return FromBytes(ms.ToArray(), padId, engine);
    }

    /// <summary>Loads a SentencePiece <c>tokenizer.model</c> file.</summary>
    public static LlamaSentencePieceTokenizer FromModelFile(string path, int padId = 0, LlamaEncodingEngine engine = LlamaEncodingEngine.SentencePiece) =>
        FromBytes(File.ReadAllBytes(path), padId, engine);

    /// <summary>Loads an in-memory model (e.g. one produced by <see cref="HuggingFaceTokenizerConverter"/>).</summary>
    public static LlamaSentencePieceTokenizer FromModel(SentencePieceModelProto model, int padId = 0, LlamaEncodingEngine engine = LlamaEncodingEngine.SentencePiece)
    {
        ArgumentNullException.ThrowIfNull(model);
        return FromBytes(model.ToBytes(), padId, engine);
    }

    /// <summary>Converts a Hugging Face <c>tokenizer.json</c> and loads the result.</summary>
    public static LlamaSentencePieceTokenizer FromHuggingFaceJson(string tokenizerJsonPath, out ConversionReport report, int padId = 0, LlamaEncodingEngine engine = LlamaEncodingEngine.SentencePiece)
    {
        SentencePieceModelProto model = HuggingFaceTokenizerConverter.ConvertFile(tokenizerJsonPath, out report);
        return FromModel(model, padId, engine);
    }

    private static LlamaSentencePieceTokenizer FromBytes(byte[] bytes, int padId, LlamaEncodingEngine engine)
    {
        LlamaTokenizer t = LlamaTokenizer.Create(new MemoryStream(bytes, writable: false), addBeginOfSentence: false, addEndOfSentence: false);
        var encoder = new SentencePieceBpeEncoder(SentencePieceModelProto.Parse(bytes));
        return new LlamaSentencePieceTokenizer(t, encoder, padId, engine);
    }

    public int[] Encode(string text, bool addBos, bool addEos)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos)
        {
            ids.Add(BosId);
        }

        if (Engine == LlamaEncodingEngine.SentencePiece)
        {
            ids.AddRange(_encoder.Encode(text));
        }
        else if (text.Length > 0)
        {
            ids.AddRange(_tokenizer.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false, considerPreTokenization: true, considerNormalization: true));
        }

        if (addEos)
        {
            ids.Add(EosId);
        }

        return [.. ids];
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var filtered = new List<int>(ids.Length);
        foreach (int id in ids)
        {
            if (id == BosId || id == EosId || id == PadId)
            {
                continue;
            }

            if ((uint)id >= (uint)VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the vocabulary (0..{VocabSize - 1})");
            }

            filtered.Add(id);
        }

        return _tokenizer.Decode(filtered, considerSpecialTokens: false);
    }
}

/// <summary>Which implementation <see cref="LlamaSentencePieceTokenizer.Encode"/> uses.</summary>
public enum LlamaEncodingEngine
{
    /// <summary><see cref="SentencePieceBpeEncoder"/>: SentencePiece's merge order, leftmost on ties (matches LLaMA's ids).</summary>
    SentencePiece,

    /// <summary>Microsoft.ML.Tokenizers' own encoder (rightmost on ties in 2.0.1).</summary>
    MicrosoftMl,
}
