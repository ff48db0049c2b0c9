using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>How a baseline treats the tokens of negative rationales.</summary>
public enum NegativeObjective
{
    /// <summary>UL, unlikelihood (Welleck et al. 2020): L = −log(1 − p(y)) on each negative token.</summary>
    Unlikelihood,
    /// <summary>NT, negative training (He and Glass 2020): L = log p(y) on each negative token — the
    /// likelihood pushed down — bounded: a token stops contributing once −log p(y) ≥ Tau
    /// (p(y) ≤ e^−Tau), so the loss cannot diverge to −∞.</summary>
    NegativeTraining,
}

/// <summary>
/// The UL and NT baselines of the paper's comparison, as one head over mixed batches: sequences with
/// label 1 (D_pos) get next-token cross-entropy, sequences with label 0 (D_neg) get the negative
/// objective. Both objectives are functions of p(y) alone, so their gradient with respect to the
/// logits is the cross-entropy gradient g = softmax − onehot scaled per row:
///   CE:  dL/dz = g                 UL: dL/dz = −p/(1−p) · g            NT: dL/dz = −g (0 once bounded)
/// which reuses the fused cross-entropy kernel plus one row scaling. Every term is averaged over the
/// batch's loss tokens (both polarities).
/// </summary>
public sealed class PolarityHead(NegativeObjective objective, float tau = 5f) : ILossHead
{
    ModelBatch? _batch;
    int _count;
    double _loss;

    public void Begin(LlamaModel model, ModelBatch batch)
    {
        if (batch.Labels == null) throw new ArgumentException("UL/NT batches need per-sequence labels (1 = positive, 0 = negative)");
        (_batch, _count, _loss) = (batch, batch.LossTokens, 0);
    }

    public void Chunk(LlamaModel model, Tensor logits, int row0, int rows, bool backward)
    {
        var ops = model.Ops;
        var b = _batch!;
        int v = model.Config.Vocab;
        var lossView = ops.View(model.LossesTensor, row0, rows);
        ops.CrossEntropyFused(logits, lossView, ops.View(model.TargetsTensor, row0, rows), rows, v, 1f, backward);
        for (int r = 0; r < rows; r++)
        {
            int row = row0 + r;
            if (b.Targets[row] < 0) continue;
            double ce = ops.Sum(ops.View(lossView, r, 1), 1);             // the row's loss at the backend's precision
            double w, l;
            if (b.Labels![row / b.T] > 0.5f) { l = ce; w = 1; }
            else if (objective == NegativeObjective.Unlikelihood)
            {
                double p = Math.Exp(-ce), q = Math.Max(1 - p, 1e-6);   // 1−p floored: p → 1 must not blow up
                l = -Math.Log(q); w = -p / q;
            }
            else if (ce < tau) { l = -ce; w = -1; }
            else { l = -tau; w = 0; }
            _loss += l;
            if (backward) ops.Scale(ops.View(logits, (long)r * v, v), (float)(w / _count), v);
        }
    }

    public double End(LlamaModel model) => _count > 0 ? _loss / _count : 0;
}
