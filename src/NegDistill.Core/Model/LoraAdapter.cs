using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>LoRA settings (method.md: r = 8, alpha = 16, dropout 0.05 on q_proj and v_proj).</summary>
public sealed record LoraConfig
{
    public int Rank { get; init; } = 8;
    public float Alpha { get; init; } = 16f;
    public float Dropout { get; init; } = 0.05f;
    public Proj[] Targets { get; init; } = [Proj.q_proj, Proj.v_proj];
    public float Scale => Alpha / Rank;

    public static Proj ParseTarget(string s) => Enum.TryParse<Proj>(s, out var p) ? p
        : throw new ArgumentException($"unknown LoRA target module '{s}' (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
}

/// <summary>
/// LoRA on one projection: Δy = s · B(A·drop(x)), s = alpha/r; A (r,in) Kaiming-uniform, B (out,r) zero.
/// Forward keeps xa = drop(x)·Aᵀ (N,r), and drop(x) (N,in) only while dropout is on (otherwise the
/// backward reads x itself), for the backward.
///   dB += s · dyᵀ·xa        dxa = s · dy·B        dA += dxaᵀ·drop(x)        dx += drop'(dxa·A)
/// </summary>
public sealed class LoraAdapter : IProjectionAdapter
{
    readonly IBackend _ops;
    readonly int _in, _out, _r;
    readonly float _scale, _p;
    readonly ulong _id;
    Tensor? _xd, _xa, _dxa, _dxd;
    int _capF, _capD, _capB;

    public LoraAdapter(IBackend ops, string prefix, int inFeatures, int outFeatures, LoraConfig cfg, ulong seed, ulong id, bool trainable = true)
    {
        (_ops, _in, _out, _r, _scale, _p, _id) = (ops, inFeatures, outFeatures, cfg.Rank, cfg.Scale, cfg.Dropout, id);
        A = new Param(ops, prefix + ".lora_A.weight", DType.F32, trainable, _r, _in);
        B = new Param(ops, prefix + ".lora_B.weight", DType.F32, trainable, _out, _r);
        ops.Upload(A.W, Init.KaimingUniform(A.Length, _in, CounterRng.Derive(seed, id, 0xA)));
    }

    public Param A { get; }
    public Param B { get; }
    public IEnumerable<Param> Parameters => [A, B];

    // Row buffers, allocated once for the most rows seen (or reserved): drop(x) and xa for the forward,
    // dxa and dxd only once a backward runs. With dropout off (inference, frozen adapters, p = 0) drop(x)
    // is x itself and no copy is kept.
    void EnsureForward(int n, bool dropout)
    {
        var f = ActivationSizes.LoraForward(n, _in, _r, dropout: true).ToDictionary(b => b.Name);   // shapes: ActivationSizes
        if (n > _capF) { _xa?.Dispose(); _xa = ActivationSizes.Alloc(_ops, A.Name + ".", f["xa"]); _capF = n; }
        if (dropout && n > _capD) { _xd?.Dispose(); _xd = ActivationSizes.Alloc(_ops, A.Name + ".", f["xd"]); _capD = n; }
    }

    void EnsureBackward(int n)
    {
        if (n <= _capB) return;
        _dxa?.Dispose(); _dxd?.Dispose();
        var b = ActivationSizes.Alloc(_ops, A.Name + ".", ActivationSizes.LoraBackward(n, _in, _r));
        (_dxa, _dxd) = (b["dxa"], b["dxd"]);
        _capB = n;
    }

    /// <inheritdoc/>
    public void Reserve(int rows, bool training)
    {
        EnsureForward(rows, training && _p > 0);
        if (training) EnsureBackward(rows);
    }

    ulong Seed(PassContext ctx) => CounterRng.Derive(ctx.StepSeed, _id, 0xD);
    float P(PassContext ctx) => ctx.Training ? _p : 0f;

    public void Forward(PassContext ctx, Tensor x, Tensor y, int n)
    {
        float p = P(ctx);
        EnsureForward(n, p > 0);
        var xd = x;
        if (p > 0) { xd = _xd!; _ops.DropoutForward(xd, x, p, Seed(ctx), (long)n * _in); }     // xd = drop(x)
        _ops.MatMul(_xa!, xd, A.W, n, _r, _in, false, true);                         // xa(N,r) = xd·Aᵀ
        _ops.MatMul(y, _xa!, B.W, n, _out, _r, false, true, _scale, 1f);            // y += s·xa·Bᵀ
    }

    public void Backward(PassContext ctx, Tensor x, Tensor dy, Tensor dx, int n)
    {
        float p = P(ctx);
        EnsureBackward(n);
        var xd = p > 0 ? _xd! : x;
        if (B.Trainable) _ops.MatMul(B.Grad!, dy, _xa!, _out, _r, n, true, false, _scale, 1f);   // dB += s·dyᵀ·xa
        _ops.MatMul(_dxa!, dy, B.W, n, _r, _out, false, false, _scale, 0f);                        // dxa = s·dy·B
        if (A.Trainable) _ops.MatMul(A.Grad!, _dxa!, xd, _r, _in, n, true, false, 1f, 1f);       // dA += dxaᵀ·xd
        _ops.MatMul(_dxd!, _dxa!, A.W, n, _in, _r, false, false);                                  // dxd = dxa·A
        _ops.DropoutBackward(dx, _dxd!, p, Seed(ctx), (long)n * _in);                              // dx += drop'(dxd)
    }

    public void Dispose()
    {
        A.Dispose(); B.Dispose();
        _xd?.Dispose(); _xa?.Dispose(); _dxa?.Dispose(); _dxd?.Dispose();
    }
}
