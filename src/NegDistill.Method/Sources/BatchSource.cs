using NegDistill.Data;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Sources;

/// <summary>Serves the data layer's length-grouped, seed-shuffled batches to the trainer by global index
/// (epoch = index / batches per epoch), so a resumed run sees the same batches.</summary>
public sealed class BatchSource : IBatchSource
{
    readonly Batcher _batcher;
    readonly IReadOnlyList<EncodedExample> _examples;
    readonly Dictionary<int, List<int[]>> _plans = new();
    readonly int _perEpoch;

    public BatchSource(Batcher batcher, IReadOnlyList<EncodedExample> examples)
    {
        if (examples.Count == 0) throw new ArgumentException("no training examples: the data set is empty after the split");
        (_batcher, _examples) = (batcher, examples);
        _perEpoch = batcher.PlanBatches(examples, 0).Count;
    }

    public long Count => _perEpoch;

    public ModelBatch Get(long index)
    {
        int epoch = (int)(index / _perEpoch);
        if (!_plans.TryGetValue(epoch, out var plan)) _plans[epoch] = plan = _batcher.PlanBatches(_examples, epoch);
        var rows = plan[(int)(index % _perEpoch)].Select(i => _examples[i]).ToList();
        var b = _batcher.Collate(rows);
        return new ModelBatch(b.B, b.T, b.Tokens, b.Targets, b.AttentionMask);
    }

    /// <summary>An epoch-0 view that never wraps: for evaluation.</summary>
    public long EpochLength => _perEpoch;
}
