using NegDistill.Data;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Method;

/// <summary>A Hugging Face LLaMA checkpoint folder as a run uses it: its config, the tokenizer that
/// goes with it and the precision its projections are stored in (the model is built in it, so 16-bit
/// weights stay 16-bit).</summary>
public sealed record BaseModel(string Dir, LlamaConfig Config, ITokenizer Tokenizer, DType Weights)
{
    /// <summary>Reads the folder; <paramref name="minPositions"/> raises max_position_embeddings when a
    /// training cut-off needs more. Errors name the file.</summary>
    public static BaseModel Open(string dir, int minPositions = 0)
    {
        var cfg = ModelIO.ReadConfig(dir);
        if (cfg.MaxSeq < minPositions) cfg = cfg with { MaxSeq = minPositions };
        var tok = TokenizerFor(dir, cfg);
        return new BaseModel(dir, cfg, tok, ModelIO.StorageDType(dir));
    }

    /// <summary>The tokenizer that goes with a checkpoint folder: tokenizer.model, else tokenizer.json
    /// (converted to SentencePiece), else the demo's phrase list (<see cref="PhraseTokenizer"/>), else the byte tokenizer when the vocabulary is the byte one. Its
    /// vocabulary must fit the embedding.</summary>
    public static ITokenizer TokenizerFor(string dir, LlamaConfig cfg)
    {
        string model = Path.Combine(dir, "tokenizer.model"), json = Path.Combine(dir, "tokenizer.json"), phrases = Path.Combine(dir, PhraseTokenizer.FileName);
        ITokenizer tok;
        string file;
        if (File.Exists(model)) (tok, file) = (Parse(model, () => LlamaSentencePieceTokenizer.FromModelFile(model)), model);
        else if (File.Exists(json)) (tok, file) = (Parse(json, () => LlamaSentencePieceTokenizer.FromHuggingFaceJson(json, out _)), json);
        else if (File.Exists(phrases)) (tok, file) = (PhraseTokenizer.Load(phrases), phrases);
        else
        {
            var bytes = new ByteTokenizer();
            if (cfg.Vocab == bytes.VocabSize) return bytes;
            throw new FileNotFoundException($"{dir}: no tokenizer.model or tokenizer.json, and vocab_size {cfg.Vocab} is not the byte tokenizer's {bytes.VocabSize}");
        }
        if (tok.VocabSize > cfg.Vocab)
            throw new InvalidDataException($"{file}: the tokenizer has {tok.VocabSize} ids but config.json's vocab_size is {cfg.Vocab} (the embedding has no row for the others)");
        return tok;
    }

    /// <summary>A tokenizer file that does not parse is bad input naming the file, whatever the parser threw.</summary>
    static ITokenizer Parse(string file, Func<ITokenizer> load)
    {
        try { return load(); }
        catch (Exception e) when (e is not (UnauthorizedAccessException or OutOfMemoryException))   // the protobuf parser's errors are IOExceptions too
        {
            throw new InvalidDataException($"{file}: not a usable tokenizer ({e.GetType().Name}: {e.Message.Split('\n')[0]})", e);
        }
    }

    /// <summary>The frozen base with no adapters, built in its storage precision.</summary>
    public LlamaModel Load(IBackend ops, ulong seed, bool recompute = false)
    {
        var m = new LlamaModel(ops, Config, Weights, trainBase: false, seed: seed) { Recompute = recompute };
        try { ModelIO.LoadBase(m, Dir); }
        catch { m.Dispose(); throw; }
        return m;
    }
}
