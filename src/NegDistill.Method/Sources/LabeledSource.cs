using NegDistill.Data;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Sources;

/// <summary>
/// Labelled batches for the heads that need them (UL, NT, CL, the ranking model). Every batch is a
/// pure function of (seed, index): resumable and identical across runs.
/// </summary>
public sealed class LabeledSource : IBatchSource
{
    public enum Layout
    {
        /// <summary>Any mix of positives and negatives (UL, NT).</summary>
        Mixed,
        /// <summary>Half positives, half negatives per batch (the ranking model, method.md: balanced).</summary>
        Balanced,
        /// <summary>Consecutive (positive, negative) pairs of the same question (CL).</summary>
        Pairs,
    }

    readonly Batcher _batcher;
    readonly IReadOnlyList<EncodedExample> _pos, _neg;
    readonly List<(int Pos, int Neg)> _pairs = new();
    readonly Layout _layout;
    readonly int _b;
    readonly ulong _seed;

    public LabeledSource(Batcher batcher, IReadOnlyList<Pair> pos, IReadOnlyList<Pair> neg, Layout layout, int batchSize, ulong seed)
    {
        if (pos.Count == 0 || neg.Count == 0) throw new ArgumentException($"a {layout} data set needs positives and negatives (have {pos.Count} and {neg.Count})");
        if (layout != Layout.Mixed && batchSize % 2 != 0) throw new ArgumentException($"{layout} batches need an even batch size (got {batchSize})");
        (_batcher, _layout, _b, _seed) = (batcher, layout, batchSize, seed);
        _pos = batcher.EncodeAll(pos); _neg = batcher.EncodeAll(neg);
        if (layout == Layout.Pairs)
        {
            var negByQ = neg.Select((p, i) => (p.Question, i)).GroupBy(x => x.Question).ToDictionary(g => g.Key, g => g.Select(x => x.i).ToList());
            for (int i = 0; i < pos.Count; i++)
                if (negByQ.TryGetValue(pos[i].Question, out var ns)) _pairs.Add((i, ns[i % ns.Count]));
            if (_pairs.Count == 0) throw new ArgumentException("CL needs questions with both a positive and a negative rationale; there are none");
        }
    }

    public long Count => _layout switch
    {
        Layout.Pairs => Math.Max(1, _pairs.Count * 2 / _b),
        Layout.Balanced => Math.Max(1, Math.Min(_pos.Count, _neg.Count) * 2 / _b),
        _ => Math.Max(1, (_pos.Count + _neg.Count) / _b),
    };

    public ModelBatch Get(long index)
    {
        var rng = new SplitMix64(_seed ^ ((ulong)index * 0x9E3779B97F4A7C15UL));
        var rows = new List<EncodedExample>(_b);
        var labels = new float[_b];
        for (int i = 0; i < _b; i++)
        {
            bool positive;
            switch (_layout)
            {
                case Layout.Pairs:
                {
                    var (p, n) = _pairs[rng.NextInt(_pairs.Count)];
                    rows.Add(_pos[p]); rows.Add(_neg[n]); labels[i] = 1; labels[i + 1] = 0; i++;
                    continue;
                }
                case Layout.Balanced: positive = i % 2 == 0; break;
                default: positive = rng.NextInt(_pos.Count + _neg.Count) < _pos.Count; break;
            }
            rows.Add(positive ? _pos[rng.NextInt(_pos.Count)] : _neg[rng.NextInt(_neg.Count)]);
            labels[i] = positive ? 1 : 0;
        }
        var b = _batcher.Collate(rows);
        return new ModelBatch(b.B, b.T, b.Tokens, b.Targets, b.AttentionMask) { Labels = labels };
    }
}
