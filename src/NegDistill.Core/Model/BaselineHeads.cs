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

/// <summary>
/// CL, the contrastive baseline: positives keep their cross-entropy, and each question's positive
/// rationale is ranked above its negative one by a margin on the mean per-token log-likelihood
/// ℓ_b = −(1/n_b) Σ_t ce_bt:
///   L = (1/#tokens⁺) Σ_{pos tokens} ce + λ · (1/P) Σ_pairs max(0, m − (ℓ⁺ − ℓ⁻)).
/// Batches hold P pairs as consecutive sequences (2i = positive, 2i+1 = negative of the same
/// question; labels 1 and 0). The hinge needs ℓ for whole sequences before any gradient can be
/// written, so <see cref="Begin"/> runs the LM head once without gradients to get them; the chunks
/// then reuse the cross-entropy gradient g scaled per row: positive rows 1/#tokens⁺ + λ/(P·n_b) when
/// the pair's hinge is active, negative rows −λ/(P·n_b).
/// </summary>
public sealed class ContrastiveHead(float margin = 0.5f, float lambda = 1f) : ILossHead
{
    ModelBatch? _batch;
    double[] _rowWeight = [];
    double _loss;

    public void Begin(LlamaModel model, ModelBatch batch)
    {
        var labels = batch.Labels ?? throw new ArgumentException("CL batches need labels: consecutive (positive, negative) pairs");
        if (batch.B % 2 != 0) throw new ArgumentException($"CL batch has {batch.B} sequences; it needs (positive, negative) pairs");
        for (int i = 0; i < batch.B; i += 2)
            if (labels[i] < 0.5f || labels[i + 1] > 0.5f) throw new ArgumentException($"CL batch sequences {i},{i + 1} are not a (positive, negative) pair");
        _batch = batch;
        var ops = model.Ops;
        int n = model.Rows, v = model.Config.Vocab, c = model.Config.Dim;
        // pass 1: per-row cross-entropy through the LM head, no gradients
        var ce = new double[n];
        using (var chunk = ops.Alloc("cl.logits", DType.F32, model.ChunkRows, v))
            for (int r0 = 0; r0 < n; r0 += model.ChunkRows)
            {
                int rows = Math.Min(model.ChunkRows, n - r0);
                var z = ops.View(chunk, 0, rows, v);
                ops.MatMul(z, ops.View(model.Hidden, (long)r0 * c, rows, c), model.LmHead.W, rows, v, c, false, true);
                var lv = ops.View(model.LossesTensor, r0, rows);
                ops.CrossEntropyFused(z, lv, ops.View(model.TargetsTensor, r0, rows), rows, v, 1f, false);
                for (int r = 0; r < rows; r++) ce[r0 + r] = ops.Sum(ops.View(lv, r, 1), 1);
            }
        var count = new int[batch.B]; var sum = new double[batch.B];
        for (int row = 0; row < n; row++) if (batch.Targets[row] >= 0) { count[row / batch.T]++; sum[row / batch.T] += ce[row]; }
        int posTokens = 0;
        for (int b = 0; b < batch.B; b += 2) posTokens += count[b];
        int pairs = batch.B / 2;
        var seqW = new double[batch.B];
        _loss = 0;
        for (int b = 0; b < batch.B; b += 2)
        {
            _loss += posTokens > 0 ? sum[b] / posTokens : 0;
            seqW[b] = posTokens > 0 ? 1.0 / posTokens : 0;          // CE weight per positive token
            if (count[b] == 0 || count[b + 1] == 0) continue;
            double lPos = -sum[b] / count[b], lNeg = -sum[b + 1] / count[b + 1];
            double hinge = margin - (lPos - lNeg);
            if (hinge <= 0) continue;
            _loss += lambda * hinge / pairs;
            seqW[b] += lambda / (pairs * (double)count[b]);
            seqW[b + 1] = -lambda / (pairs * (double)count[b + 1]);
        }
        _rowWeight = new double[n];
        for (int row = 0; row < n; row++) _rowWeight[row] = batch.Targets[row] >= 0 ? seqW[row / batch.T] : 0;
    }

    public void Chunk(LlamaModel model, Tensor logits, int row0, int rows, bool backward)
    {
        if (!backward) return;
        var ops = model.Ops;
        int v = model.Config.Vocab;
        ops.CrossEntropyFused(logits, ops.View(model.LossesTensor, row0, rows), ops.View(model.TargetsTensor, row0, rows), rows, v, 1f, true);
        for (int r = 0; r < rows; r++) ops.Scale(ops.View(logits, (long)r * v, v), (float)_rowWeight[row0 + r], v);
    }

    public double End(LlamaModel model) => _loss;
}
