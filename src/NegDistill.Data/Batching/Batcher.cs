namespace NegDistill.Data;

/// <summary>Which tokens carry the language-modelling loss.</summary>
public enum LossMaskMode
{
    /// <summary>Question and rationale (the authors train on inputs too: <c>loss_on_prefix=True</c>).</summary>
    QuestionAndRationale,

    /// <summary>Only the "\n" separator, the rationale and EOS.</summary>
    RationaleOnly,
}

/// <summary>Batching options.</summary>
public sealed record BatchingOptions
{
    /// <summary>Maximum tokens per sequence (BOS and EOS included); longer sequences keep their first tokens.</summary>
    public int CutoffLength { get; init; } = 256;

    public LossMaskMode LossMask { get; init; } = LossMaskMode.QuestionAndRationale;

    /// <summary>Sequences per batch.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Seed of the shuffle (combined with the epoch number).</summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>Group sequences of similar length into batches (less padding).</summary>
    public bool GroupByLength { get; init; } = true;

    /// <summary>With <see cref="GroupByLength"/>: a shuffled window of BatchSize × this many sequences is sorted by length, then cut into batches.</summary>
    public int LengthGroupFactor { get; init; } = 50;

    /// <summary>Drop a final batch smaller than <see cref="BatchSize"/>.</summary>
    public bool DropLast { get; init; }

    /// <summary>Pad every batch to <see cref="CutoffLength"/> instead of to its longest sequence.</summary>
    public bool PadToCutoff { get; init; }
}

/// <summary>One tokenised training example.</summary>
/// <param name="Tokens">BOS, tokens of question + "\n" + rationale, EOS — cut to the cut-off length.</param>
/// <param name="LossMask">1 where the token is a prediction target, per position.</param>
/// <param name="QuestionTokens">Tokens (BOS included) that belong to the question.</param>
/// <param name="Truncated">True when the cut-off removed tokens (then EOS is among them).</param>
/// <param name="SourceId">The pair's source id.</param>
public sealed record EncodedExample(int[] Tokens, byte[] LossMask, int QuestionTokens, bool Truncated, string SourceId);

/// <summary>
/// A padded batch, row-major [B, T].
/// </summary>
/// <param name="B">Rows.</param>
/// <param name="T">Columns (the longest row, or the cut-off with <see cref="BatchingOptions.PadToCutoff"/>).</param>
/// <param name="Tokens">Token ids; padding is <see cref="ITokenizer.PadId"/>.</param>
/// <param name="Targets">Targets[t] = Tokens[t+1] when position t+1 is in the loss mask and real, else -1 (so the last real position and all padding have -1).</param>
/// <param name="AttentionMask">1 for real positions, 0 for padding.</param>
/// <param name="Lengths">Real length of each row.</param>
/// <param name="SourceIds">Source id of each row.</param>
public sealed record Batch(int B, int T, int[] Tokens, int[] Targets, float[] AttentionMask, int[] Lengths, string[] SourceIds);

/// <summary>
/// Tokenises pairs (question + "\n" + rationale, BOS first, EOS last), cuts them off, builds loss
/// masks, and yields length-grouped, right-padded batches in a seed-determined order.
/// </summary>
public sealed class Batcher
{
    private readonly ITokenizer _tokenizer;

    public Batcher(ITokenizer tokenizer, BatchingOptions? options = null)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        Options = options ?? new BatchingOptions();
        if (Options.CutoffLength < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "CutoffLength must be at least 2");
        }

        if (Options.BatchSize < 1 || Options.LengthGroupFactor < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "BatchSize and LengthGroupFactor must be positive");
        }
    }

    public BatchingOptions Options { get; }

    /// <summary>Encodes one pair.</summary>
    public EncodedExample Encode(Pair pair) => Encode(pair.Question, pair.Rationale, pair.SourceId);

    /// <summary>
    /// Encodes <c>question + "\n" + rationale</c> with BOS and EOS. The question part is the longest
    /// common prefix of this encoding and the encoding of the question alone (for LLaMA, whose pieces
    /// never span a newline, that is exactly the question's tokens); the separator belongs to the
    /// rationale side.
    /// </summary>
    public EncodedExample Encode(string question, string rationale, string sourceId = "")
    {
        ArgumentNullException.ThrowIfNull(question);
        ArgumentNullException.ThrowIfNull(rationale);
        int[] full = _tokenizer.Encode(PromptFormat.TrainingText(question, rationale), addBos: true, addEos: true);
        int[] q = _tokenizer.Encode(question, addBos: true, addEos: false);
        int boundary = 0;
        while (boundary < q.Length && boundary < full.Length && q[boundary] == full[boundary])
        {
            boundary++;
        }

        int length = Math.Min(full.Length, Options.CutoffLength);
        int[] tokens = full.Length == length ? full : full[..length];
        byte[] mask = new byte[length];
        int firstLoss = Options.LossMask == LossMaskMode.RationaleOnly ? boundary : 0;
        for (int t = firstLoss; t < length; t++)
        {
            mask[t] = 1;
        }

        return new EncodedExample(tokens, mask, Math.Min(boundary, length), full.Length > length, sourceId);
    }

    /// <summary>Encodes all pairs, in order.</summary>
    public List<EncodedExample> EncodeAll(IEnumerable<Pair> pairs) => pairs.Select(Encode).ToList();

    /// <summary>
    /// The batch order of one epoch: a permutation of example indices cut into batches. Determined by
    /// <see cref="BatchingOptions.Seed"/>, the epoch and the lengths only.
    /// </summary>
    public List<int[]> PlanBatches(IReadOnlyList<EncodedExample> examples, int epoch = 0)
    {
        ArgumentNullException.ThrowIfNull(examples);
        var rng = new SplitMix64(Options.Seed ^ (0xD1B54A32D192ED03UL * (ulong)(epoch + 1)));
        int[] order = Enumerable.Range(0, examples.Count).ToArray();
        rng.Shuffle(order.AsSpan());
        int bs = Options.BatchSize;

        if (Options.GroupByLength)
        {
            // Sort each shuffled window by length (longest first, ties by position in the window so
            // the result stays determined), as Hugging Face's group_by_length sampler does.
            int window = bs * Options.LengthGroupFactor;
            for (int start = 0; start < order.Length; start += window)
            {
                int len = Math.Min(window, order.Length - start);
                var slice = order.AsSpan(start, len);
                int[] keys = new int[len];
                int[] pos = new int[len];
                for (int i = 0; i < len; i++)
                {
                    keys[i] = examples[slice[i]].Tokens.Length;
                    pos[i] = i;
                }

                Array.Sort(pos, (x, y) => keys[x] != keys[y] ? keys[y].CompareTo(keys[x]) : x.CompareTo(y));
                int[] copy = slice.ToArray();
                for (int i = 0; i < len; i++)
                {
                    slice[i] = copy[pos[i]];
                }
            }
        }

        var batches = new List<int[]>();
        for (int start = 0; start < order.Length; start += bs)
        {
            int len = Math.Min(bs, order.Length - start);
            if (len < bs && Options.DropLast)
            {
                break;
            }

            batches.Add(order.AsSpan(start, len).ToArray());
        }

        if (Options.GroupByLength)
        {
            // Batches of a window share a length; shuffle their order too.
            rng.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(batches));
        }

        return batches;
    }

    /// <summary>The padded batches of one epoch.</summary>
    public IEnumerable<Batch> Batches(IReadOnlyList<EncodedExample> examples, int epoch = 0)
    {
        foreach (int[] rows in PlanBatches(examples, epoch))
        {
            yield return Collate(rows.Select(i => examples[i]).ToList());
        }
    }

    /// <summary>Right-pads examples into a batch and builds targets and attention mask.</summary>
    public Batch Collate(IReadOnlyList<EncodedExample> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0)
        {
            throw new ArgumentException("a batch needs at least one row", nameof(rows));
        }

        int b = rows.Count;
        int t = Options.PadToCutoff ? Options.CutoffLength : rows.Max(r => r.Tokens.Length);
        int[] tokens = new int[b * t];
        int[] targets = new int[b * t];
        float[] attention = new float[b * t];
        int[] lengths = new int[b];
        string[] ids = new string[b];
        Array.Fill(tokens, _tokenizer.PadId);
        Array.Fill(targets, -1);
        for (int r = 0; r < b; r++)
        {
            EncodedExample ex = rows[r];
            int len = ex.Tokens.Length;
            if (len > t)
            {
                throw new ArgumentException($"row {r} ({ex.SourceId}) has {len} tokens, more than T={t}", nameof(rows));
            }

            int off = r * t;
            lengths[r] = len;
            ids[r] = ex.SourceId;
            for (int i = 0; i < len; i++)
            {
                tokens[off + i] = ex.Tokens[i];
                attention[off + i] = 1f;
            }

            for (int i = 0; i + 1 < len; i++)
            {
                if (ex.LossMask[i + 1] != 0)
                {
                    targets[off + i] = ex.Tokens[i + 1];
                }
            }
        }

        return new Batch(b, t, tokens, targets, attention, lengths, ids);
    }
}
