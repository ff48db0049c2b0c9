using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>Final normed hidden states of a teacher, kept for a loss head.</summary>
public static class TeacherHidden
{
    /// <summary>Runs <paramref name="teacher"/>'s decoder over the batch with dropout off and returns a
    /// copy of its hidden states (N,C), owned by the caller. The teacher may be the student's own model
    /// with the teacher's adapters in force (<see cref="LlamaModel.WithAdapters"/>, as NCE runs it): the
    /// copy is taken before the student's forward overwrites the activations. It must be on the
    /// student's backend.</summary>
    public static Tensor Capture(LlamaModel teacher, ModelBatch batch)
    {
        teacher.ForwardHidden(batch, training: false);
        var ops = teacher.Ops;
        var h = ActivationSizes.Alloc(ops, "", ActivationSizes.TeacherHidden(teacher.Rows, teacher.Config.Dim));
        ops.Copy(h, teacher.Hidden);
        return h;
    }
}

/// <summary>
/// NCE's loss head (method.md, Step 2): L = (1 − a)·L_ce + a·L_kd, with L_kd the NAT model's
/// distillation weighted per sequence by 0.5 + β_b, β_b = tanh(mean over the sequence's real tokens of
/// KL(p_neg ‖ p_nat)). Math and gradient: src/NegDistill.Core/Ops/Nce.cs.
///
/// The teachers enter as their final normed hidden states (N,C) — the NAT model's and the LoRA_neg
/// model's — and share the student's frozen LM head (one base model), so their logits are
/// hidden·W_headᵀ, computed here in row chunks of the model's <see cref="LlamaModel.ChunkRows"/>:
///   Begin: z_nat and z_neg chunk by chunk → KL_t (N) → β per sequence on the host → w_t (N) uploaded.
///   Chunk: z_nat of the chunk again (a matmul is cheaper than keeping N×V), then the fused op turns the
///          student's logits chunk into dL/dz_s.
/// At most three rows×V chunks exist at once (student, nat, neg). As method.md writes them, CE averages
/// over the tokens with a next-token target (ceScale = 1/count) and KD over the attention mask
/// (kdScale = 1/Σ m): a sequence's last real token has a KD term but no CE term.
/// </summary>
public sealed class NceHead : ILossHead, IDisposable
{
    readonly Func<ModelBatch, (Tensor Nat, Tensor Neg)> _teachers;
    readonly Tensor? _headWeight;
    Tensor? _nat, _neg, _kl, _w, _ce, _kd;       // two rows×V chunks (z_nat, z_neg) and four (N) vectors
    Tensor? _natHidden;                          // the NAT hidden states of the current batch (not owned)
    int _n, _chunk, _v;
    int _count;
    double _scale, _kdScale;
    double _maskSum;

    /// <summary>Teachers given per batch: <paramref name="teachers"/> returns the NAT and the neg hidden
    /// states (N,C) of the batch passed to <see cref="Begin"/> (the head does not own them).</summary>
    /// <param name="headWeight">the frozen LM head (V,C) the teachers share; null: the student's own
    /// <see cref="LlamaModel.LmHead"/> (the base is shared).</param>
    /// <param name="calibrate">false: β = 0 for every sequence (the ablation "NCE without calibration":
    /// plain distillation from the NAT model at weight 0.5, LoRA_neg's logits never computed).</param>
    public NceHead(Func<ModelBatch, (Tensor Nat, Tensor Neg)> teachers, float a = 0.5f, float temperature = 1f, Tensor? headWeight = null, bool calibrate = true)
    {
        if (!(a >= 0f && a <= 1f)) throw new ArgumentOutOfRangeException(nameof(a), $"NCE mixing weight a must be in [0, 1] (got {a})");
        if (!(temperature > 0f) || !float.IsFinite(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), $"temperature must be positive (got {temperature})");
        (_teachers, A, Temperature, _headWeight, Calibrate) = (teachers, a, temperature, headWeight, calibrate);
    }

    /// <summary>Fixed teachers for one batch: NAT and neg hidden states (N,C).</summary>
    public NceHead(Tensor natHidden, Tensor negHidden, float a = 0.5f, float temperature = 1f, Tensor? headWeight = null, bool calibrate = true)
        : this(_ => (natHidden, negHidden), a, temperature, headWeight, calibrate) { }

    public float A { get; }
    public float Temperature { get; }
    /// <summary>β from KL(p_neg ‖ p_nat) (method.md); false: β = 0.</summary>
    public bool Calibrate { get; }
    /// <summary>β_b of each sequence of the last batch (for logging).</summary>
    public double[] Beta { get; private set; } = [];
    /// <summary>Mean cross-entropy over the loss tokens of the last batch.</summary>
    public double LastCe { get; private set; }
    /// <summary>L_kd of the last batch (mean over the loss tokens, weights and τ² included).</summary>
    public double LastKd { get; private set; }
    public int LossTokens => _count;

    public void Begin(LlamaModel model, ModelBatch batch)
    {
        var ops = model.Ops;
        int n = model.Rows, c = model.Config.Dim, v = model.Config.Vocab, chunk = model.ChunkRows;
        if (n != batch.B * batch.T) throw new InvalidOperationException($"NCE head: the model holds {n} rows, the batch has {batch.B}×{batch.T}");
        var (nat, neg) = _teachers(batch);
        nat.Expect((long)n * c, "NCE NAT hidden states"); neg.Expect((long)n * c, "NCE neg hidden states");
        _natHidden = nat;
        var w = HeadWeight(model);
        Ensure(ops, n, chunk, v);
        for (int r0 = 0; Calibrate && r0 < n; r0 += chunk)
        {
            int rows = Math.Min(chunk, n - r0);
            var zNat = ops.View(_nat!, 0, rows, v);
            var zNeg = ops.View(_neg!, 0, rows, v);
            ops.MatMul(zNat, ops.View(nat, (long)r0 * c, rows, c), w, rows, v, c, false, true);   // z_nat(rows,V) = h_nat·Wᵀ
            ops.MatMul(zNeg, ops.View(neg, (long)r0 * c, rows, c), w, rows, v, c, false, true);   // z_neg(rows,V) = h_neg·Wᵀ
            ops.NceKl(zNat, zNeg, ops.View(_kl!, r0, rows), rows, v, Temperature);
        }
        var kl = new float[n];
        if (Calibrate) ops.Download(_kl!, kl);
        Beta = Calibrate ? Nce.SequenceBeta<float>(kl, batch.Mask, batch.B, batch.T) : new double[batch.B];
        ops.Upload(_w!, Nce.RowWeights(Beta, batch.T, batch.Mask));
        _count = batch.LossTokens;
        _scale = _count > 0 ? 1.0 / _count : 0;
        _maskSum = 0;
        foreach (float m in batch.Mask.AsSpan(0, n)) _maskSum += m;
        _kdScale = _maskSum > 0 ? 1 / _maskSum : 0;
    }

    public void Chunk(LlamaModel model, Tensor logits, int row0, int rows, bool backward)
    {
        var ops = model.Ops;
        int c = model.Config.Dim, v = model.Config.Vocab;
        var zNat = ops.View(_nat!, 0, rows, v);
        ops.MatMul(zNat, ops.View(_natHidden!, (long)row0 * c, rows, c), HeadWeight(model), rows, v, c, false, true);
        ops.NceDistillFused(logits, zNat, ops.View(model.TargetsTensor, row0, rows), ops.View(_w!, row0, rows),
            ops.View(_ce!, row0, rows), ops.View(_kd!, row0, rows), rows, v, Temperature, A, _scale, _kdScale, backward);
    }

    public double End(LlamaModel model)
    {
        LastCe = _count > 0 ? model.Ops.Sum(_ce!, _n) / _count : 0;
        LastKd = _maskSum > 0 ? model.Ops.Sum(_kd!, _n) / _maskSum : 0;
        return (1 - A) * LastCe + A * LastKd;
    }

    Tensor HeadWeight(LlamaModel model) => _headWeight ?? model.LmHead.W;

    void Ensure(IBackend ops, int n, int chunk, int v)
    {
        if (_nat != null && n == _n && chunk == _chunk && v == _v) return;
        Free();
        (_n, _chunk, _v) = (n, chunk, v);
        var t = ActivationSizes.Alloc(ops, "", ActivationSizes.NceHead(n, chunk, v));
        (_nat, _neg, _kl, _w, _ce, _kd) = (t["nce.z_nat"], t["nce.z_neg"], t["nce.kl"], t["nce.row_weight"], t["nce.loss_ce"], t["nce.loss_kd"]);
    }

    void Free()
    {
        foreach (var t in new[] { _nat, _neg, _kl, _w, _ce, _kd }) t?.Dispose();
        _nat = _neg = _kl = _w = _ce = _kd = null;
    }

    public void Dispose() => Free();
}
