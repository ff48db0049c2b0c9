using NegDistill.Checkpoints;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>Which part of a <see cref="NatAdapter"/> runs. The same mode must be in force for a
/// forward and the backward that follows it.</summary>
public enum NatMode
{
    /// <summary>NAT: y = Wx + (1−α)·v_pos + α·v_neg (method.md Step 1.2).</summary>
    Integrated,
    /// <summary>y = Wx + LoRA_neg(x): the negative model alone (NCE's z_neg).</summary>
    NegOnly,
    /// <summary>y = Wx + LoRA_pos(x): the positive LoRA alone, no integration unit.</summary>
    PosOnly,
}

/// <summary>Hyper-parameters of the integration unit (method.md: 128 features, β = 0.5, T = 1).</summary>
public sealed record NatOptions
{
    /// <summary>Output width of Q, K and U1 (input width of U2).</summary>
    public int UnitDim { get; init; } = Integration.UnitDim;
    /// <summary>α = 2β·a_neg − β ∈ [−β, β].</summary>
    public float Beta { get; init; } = 0.5f;
    /// <summary>Softmax temperature of the two scores q·k_i.</summary>
    public float Temperature { get; init; } = 1f;
    /// <summary>The ablation "NAT without attention": α held at this value for every row (inside (−β, β)),
    /// Q and K unused and untrained; null: α from the attention (method.md).</summary>
    public float? FixedAlpha { get; init; }

    public void Validate()
    {
        if (UnitDim <= 0) throw new ArgumentException($"NAT unit width must be positive (got {UnitDim})");
        if (!float.IsFinite(Beta) || Beta < 0) throw new ArgumentException($"NAT β must be finite and ≥ 0 (got {Beta})");
        if (!(Temperature > 0) || !float.IsFinite(Temperature)) throw new ArgumentException($"NAT temperature must be positive (got {Temperature})");
        if (FixedAlpha is { } a && !(Math.Abs(a) < Beta)) throw new ArgumentException($"a fixed NAT α must lie strictly inside (−β, β) = (−{Beta}, {Beta}) (got {a})");
    }
}

/// <summary>
/// Negative Assistant Training on one projection with frozen W (method.md Step 1.2):
/// <code>
///   h_pos = Wx + s_pos·B_pos A_pos drop(x)      (trainable LoRA_pos, LoRA dropout on)
///   h_neg = Wx + s_neg·B_neg A_neg x            (frozen LoRA_neg; dropout OFF: it is a fixed model)
///   q = Q x,  k_i = K h_i,  v_i = U2·GELU(U1 h_i),  a = softmax_i(q·k_i / T),  α = 2β·a_neg − β
///   y = Wx + (1−α)·v_pos + α·v_neg  =  Wx + U2·((1−α)·GELU(U1 h_pos) + α·GELU(U1 h_neg))
/// </code>
/// The last form (U2 is linear) is what runs: matmuls for h, q, k, u = U1 h and the final U2, and the
/// fused per-row op <see cref="IBackend.IntegrationForward"/> in between (see Ops/Integration.cs).
/// Trainable: A_pos, B_pos, Q, K, U1, U2 (<see cref="Parameters"/>, in that order, under PEFT-style
/// names: "&lt;module&gt;.lora_A.weight", "&lt;module&gt;.lora_B.weight", "&lt;module&gt;.integration.{Q,K,U1,U2}.weight",
/// shapes as torch Linear weights (out, in)). Q, K, U1 are Kaiming-uniform, U2 zero, B_pos zero: the
/// adapter starts as y = Wx exactly. LoRA_neg is <see cref="Neg"/>, frozen and not in Parameters (it
/// lives in the negative stage's own adapter folder).
///
/// Because W appears inside both h_i, the adapter's backward also adds (dh_pos + dh_neg)·W to dx (and
/// to dW when W is trainable); it keeps a reference to the model's W for that.
///
/// Kept for backward (N rows, in/out = the projection's widths, D = unit width): h_pos, h_neg (2N,out)
/// for dK, dU1; q (N,D), k_pos, k_neg, u_pos, u_neg (2N,D), a_neg (N), mix (N,D); plus what the two
/// LoRA adapters keep (their dropped input and rank-r activations).
/// </summary>
public sealed class NatAdapter : IProjectionAdapter
{
    readonly IBackend _ops;
    readonly Param _w;
    readonly int _in, _out, _d;
    readonly float _beta, _invTemp;
    Tensor? _h, _q, _k, _u, _mix, _aNeg, _dmix, _dq, _dk, _du, _dh;
    int _capF, _capB, _lastRows;

    /// <param name="prefix">PEFT module prefix, e.g. base_model.model.model.layers.3.self_attn.q_proj</param>
    /// <param name="baseWeight">The model's frozen (or trainable) W of this projection, shape (out, in).</param>
    /// <param name="negConfig">LoRA_neg's rank and alpha (its dropout is ignored: LoRA_neg runs without).
    /// Its weights start random; copy the trained ones into <see cref="Neg"/>.</param>
    /// <param name="posConfig">LoRA_pos's rank, alpha and dropout.</param>
    /// <param name="trainable">false builds a frozen teacher: no gradients or optimiser moments, forward only.</param>
    public NatAdapter(IBackend ops, string prefix, Param baseWeight, LoraConfig negConfig, LoraConfig posConfig, ulong seed, ulong id, NatOptions? options = null,
        bool trainable = true)
    {
        var opt = options ?? new NatOptions();
        opt.Validate();
        if (baseWeight.Shape.Length != 2) throw new ArgumentException($"{prefix}: base weight {baseWeight.Name} must be 2-D (out, in)");
        (_ops, _w, _out, _in, _d) = (ops, baseWeight, baseWeight.Shape[0], baseWeight.Shape[1], opt.UnitDim);
        (_beta, _invTemp) = (opt.Beta, 1f / opt.Temperature);
        Options = opt;
        Prefix = prefix;
        Pos = new LoraAdapter(ops, prefix, _in, _out, posConfig, seed, id, trainable);
        Neg = new LoraAdapter(ops, prefix, _in, _out, negConfig with { Dropout = 0f }, seed, id ^ NegativeStream, trainable: false);
        string u = prefix + ".integration.";
        Q = new Param(ops, u + "Q.weight", DType.F32, trainable, _d, _in);
        K = new Param(ops, u + "K.weight", DType.F32, trainable, _d, _out);
        U1 = new Param(ops, u + "U1.weight", DType.F32, trainable, _d, _out);
        U2 = new Param(ops, u + "U2.weight", DType.F32, trainable, _out, _d);                  // zero: y = Wx at the start
        ops.Upload(Q.W, Init.KaimingUniform(Q.Length, _in, CounterRng.Derive(seed, id, 0x5151)));
        ops.Upload(K.W, Init.KaimingUniform(K.Length, _out, CounterRng.Derive(seed, id, 0x4B4B)));
        ops.Upload(U1.W, Init.KaimingUniform(U1.Length, _out, CounterRng.Derive(seed, id, 0x5531)));
    }

    /// <summary>LoRA_neg's initial draws come from its own stream ("NEG" in ASCII), apart from LoRA_pos's;
    /// they are overwritten by the trained LoRA_neg in every use, but a fresh adapter stays reproducible.</summary>
    const ulong NegativeStream = 0x4E4547;

    public string Prefix { get; }
    public NatOptions Options { get; }
    public NatMode Mode { get; set; } = NatMode.Integrated;
    /// <summary>Trainable LoRA_pos (PEFT names of the module).</summary>
    public LoraAdapter Pos { get; }
    /// <summary>Frozen LoRA_neg, dropout off.</summary>
    public LoraAdapter Neg { get; }
    public Param Q { get; }
    public Param K { get; }
    public Param U1 { get; }
    public Param U2 { get; }

    /// <summary>A_pos, B_pos, Q, K, U1, U2: what trains and what the NAT stage saves
    /// (ModelIO.SaveLora(model, dir, posConfig) writes them all; no extra list is needed). With a fixed α,
    /// Q and K take no part and are left out.</summary>
    public IEnumerable<Param> Parameters => Options.FixedAlpha == null ? [Pos.A, Pos.B, Q, K, U1, U2] : [Pos.A, Pos.B, U1, U2];
    /// <summary>The integration unit alone: Q, K, U1, U2 (U1, U2 with a fixed α).</summary>
    public IEnumerable<Param> UnitParameters => Options.FixedAlpha == null ? [Q, K, U1, U2] : [U1, U2];

    // Row buffers for up to _capF (forward) and _capB (backward) rows: a teacher that only runs forward
    // (NCE) never allocates the backward half.
    void EnsureForward(int n)
    {
        if (n <= _capF) return;
        foreach (var t in new[] { _h, _q, _k, _u, _mix, _aNeg }) t?.Dispose();
        var f = ActivationSizes.Alloc(_ops, Prefix + ".nat.", ActivationSizes.NatForward(n, _out, _d));
        (_h, _q, _k, _u, _mix, _aNeg) = (f["h"], f["q"], f["k"], f["u"], f["mix"], f["a_neg"]);
        _capF = n;
        _lastRows = 0;
    }

    void EnsureBackward(int n)
    {
        if (n <= _capB) return;
        foreach (var t in new[] { _dmix, _dq, _dk, _du, _dh }) t?.Dispose();
        var g = ActivationSizes.Alloc(_ops, Prefix + ".nat.", ActivationSizes.NatBackward(n, _out, _d));
        (_dmix, _dq, _dk, _du, _dh) = (g["dmix"], g["dq"], g["dk"], g["du"], g["dh"]);
        _capB = n;
    }

    void FreeBuffers()
    {
        foreach (var t in new[] { _h, _q, _k, _u, _mix, _aNeg, _dmix, _dq, _dk, _du, _dh }) t?.Dispose();
        _h = _q = _k = _u = _mix = _aNeg = _dmix = _dq = _dk = _du = _dh = null;
        _capF = _capB = 0;
    }

    /// <summary>Rows [0,n) of a stacked (2·cap, w) buffer as the pos half, [n,2n) as the neg half.</summary>
    (Tensor Pos, Tensor Neg, Tensor Both) Halves(Tensor t, int n, int w) =>
        (_ops.View(t, 0, n, w), _ops.View(t, (long)n * w, n, w), _ops.View(t, 0, 2 * n, w));

    /// <inheritdoc/>
    public void Reserve(int rows, bool training)
    {
        Pos.Reserve(rows, training);
        Neg.Reserve(rows, training);
        if (Mode == NatMode.Integrated) { EnsureForward(rows); if (training) EnsureBackward(rows); }
    }

    public void Forward(PassContext ctx, Tensor x, Tensor y, int n)
    {
        switch (Mode)
        {
            case NatMode.NegOnly: _lastRows = 0; Neg.Forward(ctx, x, y, n); return;
            case NatMode.PosOnly: _lastRows = 0; Pos.Forward(ctx, x, y, n); return;
        }
        EnsureForward(n);
        var o = _ops;
        var (hPos, hNeg, h) = Halves(_h!, n, _out);
        var (kPos, kNeg, k) = Halves(_k!, n, _d);
        var (uPos, uNeg, u) = Halves(_u!, n, _d);
        var (q, mix, aNeg) = (o.View(_q!, 0, n, _d), o.View(_mix!, 0, n, _d), o.View(_aNeg!, 0, n));
        o.Copy(hPos, y);                                                  // y holds Wx
        o.Copy(hNeg, y);
        Pos.Forward(ctx, x, hPos, n);                                     // h_pos = Wx + s·B_pos A_pos drop(x)
        Neg.Forward(ctx, x, hNeg, n);                                     // h_neg = Wx + s·B_neg A_neg x
        if (Options.FixedAlpha is { } fixedAlpha)
        {
            // Constant scores q·k_pos = 0, q·k_neg = logit(a) with a = (α + β)/2β, so the fused op's softmax gives
            // a_neg = a, i.e. α = fixedAlpha, on every row (q = 1, k_pos = 0, k_neg = logit/(D·invTemp)).
            double a = (fixedAlpha + _beta) / (2.0 * _beta);
            o.Fill(q, 1f); o.Fill(kPos, 0f); o.Fill(kNeg, (float)(Math.Log(a / (1 - a)) / (_d * _invTemp)));
        }
        else
        {
            o.MatMul(q, x, Q.W, n, _d, _in, false, true);                 // q(N,D) = x·Qᵀ
            o.MatMul(k, h, K.W, 2 * n, _d, _out, false, true);            // k(2N,D) = h·Kᵀ
        }
        o.MatMul(u, h, U1.W, 2 * n, _d, _out, false, true);               // u(2N,D) = h·U1ᵀ
        o.IntegrationForward(mix, aNeg, q, kPos, kNeg, uPos, uNeg, n, _d, _beta, _invTemp);
        o.MatMul(y, mix, U2.W, n, _out, _d, false, true, 1f, 1f);         // y += mix·U2ᵀ
        _lastRows = n;
    }

    public void Backward(PassContext ctx, Tensor x, Tensor dy, Tensor dx, int n)
    {
        switch (Mode)
        {
            case NatMode.NegOnly: Neg.Backward(ctx, x, dy, dx, n); return;
            case NatMode.PosOnly: Pos.Backward(ctx, x, dy, dx, n); return;
        }
        if (_lastRows != n) throw new InvalidOperationException($"{Prefix}: backward over {n} rows without an integrated forward over them");
        if (!Q.Trainable) throw new InvalidOperationException($"{Prefix}: this NAT adapter was built frozen (a teacher); it has no backward");
        EnsureBackward(n);
        var o = _ops;
        var (_, _, h) = Halves(_h!, n, _out);
        var (dhPos, dhNeg, dh) = Halves(_dh!, n, _out);
        var (kPos, kNeg, _) = Halves(_k!, n, _d);
        var (uPos, uNeg, _) = Halves(_u!, n, _d);
        var (dkPos, dkNeg, dk) = Halves(_dk!, n, _d);
        var (duPos, duNeg, du) = Halves(_du!, n, _d);
        var (q, mix, aNeg) = (o.View(_q!, 0, n, _d), o.View(_mix!, 0, n, _d), o.View(_aNeg!, 0, n));
        var (dq, dmix) = (o.View(_dq!, 0, n, _d), o.View(_dmix!, 0, n, _d));
        o.MatMul(U2.Grad!, dy, mix, _out, _d, n, true, false, 1f, 1f);   // dU2 += dyᵀ·mix
        o.MatMul(dmix, dy, U2.W, n, _d, _out, false, false);              // dmix = dy·U2
        o.Fill(dq, 0f); o.Fill(dk, 0f); o.Fill(du, 0f);
        o.IntegrationBackward(dq, dkPos, dkNeg, duPos, duNeg, dmix, q, kPos, kNeg, uPos, uNeg, aNeg, n, _d, _beta, _invTemp);
        bool attention = Options.FixedAlpha == null;                      // a fixed α: the scores are constants, dq and dk unused
        if (attention)
        {
            o.MatMul(Q.Grad!, dq, x, _d, _in, n, true, false, 1f, 1f);   // dQ += dqᵀ·x
            o.MatMul(dx, dq, Q.W, n, _in, _d, false, false, 1f, 1f);     // dx += dq·Q
            o.MatMul(K.Grad!, dk, h, _d, _out, 2 * n, true, false, 1f, 1f);  // dK += dkᵀ·h   (both halves)
        }
        o.MatMul(U1.Grad!, du, h, _d, _out, 2 * n, true, false, 1f, 1f); // dU1 += duᵀ·h
        if (attention) o.MatMul(dh, dk, K.W, 2 * n, _out, _d, false, false);   // dh = dk·K
        o.MatMul(dh, du, U1.W, 2 * n, _out, _d, false, false, 1f, attention ? 1f : 0f);   //    + du·U1
        Pos.Backward(ctx, x, dhPos, dx, n);                               // dA_pos, dB_pos, dx through LoRA_pos
        Neg.Backward(ctx, x, dhNeg, dx, n);                               // dx through the frozen LoRA_neg
        o.Axpy(dhPos, dhNeg, 1f, (long)n * _out);                         // both h_i contain Wx
        o.MatMul(dx, dhPos, _w.W, n, _in, _out, false, false, 1f, 1f);    // dx += (dh_pos + dh_neg)·W
        if (_w.Trainable) o.MatMul(_w.Grad!, dhPos, x, _out, _in, n, true, false, 1f, 1f);
    }

    /// <summary>Mean and (population) standard deviation of α = 2β·a_neg − β over the rows of the last
    /// integrated forward; with a mask (one weight per row, e.g. the batch's attention mask), over the
    /// rows with non-zero weight only, weighted.</summary>
    public (double Mean, double Std) AlphaStats(ReadOnlySpan<float> mask = default)
    {
        if (_lastRows == 0) throw new InvalidOperationException($"{Prefix}: no integrated forward has run yet");
        if (!mask.IsEmpty && mask.Length != _lastRows)
            throw new ArgumentException($"{Prefix}: mask has {mask.Length} rows, the last forward had {_lastRows}");
        var a = new float[_lastRows];
        _ops.Download(_ops.View(_aNeg!, 0, _lastRows), a);
        float[]? weights = mask.IsEmpty ? null : mask.ToArray();
        double W(int i) => weights?[i] ?? 1;
        double Alpha(int i) => 2.0 * _beta * a[i] - _beta;
        double sw = 0, s1 = 0;
        for (int i = 0; i < a.Length; i++) { sw += W(i); s1 += W(i) * Alpha(i); }
        if (sw == 0) return (double.NaN, double.NaN);
        double mean = s1 / sw, s2 = 0;
        for (int i = 0; i < a.Length; i++) { double e = Alpha(i) - mean; s2 += W(i) * e * e; }   // two passes: no cancellation
        return (mean, Math.Sqrt(s2 / sw));
    }

    /// <summary>α of every row of the last integrated forward (for tests and diagnostics).</summary>
    public float[] Alphas()
    {
        if (_lastRows == 0) throw new InvalidOperationException($"{Prefix}: no integrated forward has run yet");
        var a = new float[_lastRows];
        _ops.Download(_ops.View(_aNeg!, 0, _lastRows), a);
        for (int i = 0; i < a.Length; i++) a[i] = 2f * _beta * a[i] - _beta;
        return a;
    }

    public void Dispose()
    {
        Pos.Dispose(); Neg.Dispose();
        Q.Dispose(); K.Dispose(); U1.Dispose(); U2.Dispose();
        FreeBuffers();
    }

    // ------------------------------------------------------------------ model wiring

    /// <summary>
    /// Turns the model's plain LoRA adapters (LoRA_neg, e.g. loaded by ModelIO.LoadLora from the negative
    /// stage's folder) into NAT adapters: on every layer and every target of <paramref name="posConfig"/>,
    /// the existing LoRA's weights become the frozen LoRA_neg and a fresh LoRA_pos and integration unit
    /// are created. Every target must have a LoRA of rank negConfig.Rank, and the model may have no
    /// adapter elsewhere; nothing changes if a check fails.
    /// </summary>
    public static IReadOnlyList<NatAdapter> Attach(LlamaModel model, LoraConfig negConfig, LoraConfig posConfig, ulong seed, NatOptions? options = null, bool trainable = true)
    {
        var targets = posConfig.Targets.Distinct().ToArray();
        foreach (var ((l, p), a) in model.Adapters)
        {
            if (!targets.Contains(p))
                throw new ArgumentException($"layer {l} {p} has an adapter but NAT targets only [{string.Join(", ", targets)}]");
            if (a is not LoraAdapter lora)
                throw new ArgumentException($"layer {l} {p} has a {a.GetType().Name}, not a plain LoRA to use as LoRA_neg (is NAT already attached?)");
            if (lora.A.Shape[0] != negConfig.Rank)
                throw new ArgumentException($"layer {l} {p}: LoRA_neg has rank {lora.A.Shape[0]} but negConfig says {negConfig.Rank}");
        }
        for (int l = 0; l < model.Layers.Length; l++)
            foreach (var p in targets)
                if (!model.Adapters.ContainsKey((l, p)))
                    throw new ArgumentException($"layer {l} {p}: NAT needs a LoRA_neg there and the model has none (load the negative adapter first)");
        var list = new List<NatAdapter>();
        for (int l = 0; l < model.Layers.Length; l++)
            foreach (var p in targets)
            {
                var neg = (LoraAdapter)model.Adapters[(l, p)];
                var nat = new NatAdapter(model.Ops, LlamaModel.ModulePrefix(l, p), model.Layers[l].Get(p), negConfig, posConfig, seed, (ulong)(l * 8 + (int)p), options, trainable);
                model.Ops.Copy(nat.Neg.A.W, neg.A.W);
                model.Ops.Copy(nat.Neg.B.W, neg.B.W);
                model.SetAdapter(l, p, nat);                                          // disposes the plain LoRA it replaces
                list.Add(nat);
            }
        return list;
    }

    /// <summary>Loads LoRA_neg from the negative stage's PEFT folder into a model without adapters and
    /// attaches NAT on top of it (<see cref="Attach"/>). Returns LoRA_neg's settings and the adapters.</summary>
    public static (LoraConfig NegConfig, IReadOnlyList<NatAdapter> Adapters) AttachFromPeft(LlamaModel model, string negDir, LoraConfig posConfig, ulong seed, NatOptions? options = null,
        bool trainable = true)
    {
        if (model.Adapters.Count > 0) throw new ArgumentException("the model already has adapters; NAT loads LoRA_neg into a bare model");
        var (negCfg, extra) = ModelIO.LoadLora(model, negDir, trainable: false);
        if (extra.Count > 0)
        {
            model.ClearAdapters();
            throw new CheckpointFormatException(CheckpointErrorKind.AdapterMismatch, Path.Combine(negDir, AdapterCheckpoint.WeightsFileName), extra[0].Name,
                "a negative LoRA folder should hold LoRA factors only (is this a NAT folder?)");
        }
        return (negCfg, Attach(model, negCfg, posConfig, seed, options, trainable));
    }

    /// <summary>Loads a trained NAT (LoRA_pos and the integration units, as written by
    /// ModelIO.SaveLora(model, dir, posConfig)) into a model whose NAT adapters are attached. Every
    /// tensor of every attached adapter must be in the folder with its shape, and the folder may hold
    /// nothing else.</summary>
    public static void LoadTrained(LlamaModel model, string natDir)
    {
        var loaded = AdapterCheckpoint.Load(natDir, ModelIO.Dims(model.Config));
        string file = Path.Combine(natDir, AdapterCheckpoint.WeightsFileName);
        var nats = model.Adapters.Values.OfType<NatAdapter>().ToList();
        if (nats.Count == 0) throw new InvalidOperationException("the model has no NAT adapters; attach them before loading a trained NAT");
        var used = new HashSet<string>();
        var uploads = new List<(Param P, StoredTensor T)>();
        foreach (var nat in nats)
            foreach (var p in nat.Parameters)
            {
                if (!loaded.TryGet(p.Name, out var t))
                    throw new CheckpointFormatException(CheckpointErrorKind.MissingTensor, file, p.Name, "the attached NAT adapter needs this tensor");
                if (!t.Shape.SequenceEqual(p.Shape.Select(d => (long)d)))
                    throw new CheckpointFormatException(CheckpointErrorKind.ShapeMismatch, file, p.Name,
                        $"shape [{string.Join(", ", t.Shape)}] but the attached adapter has [{string.Join(", ", p.Shape)}]");
                uploads.Add((p, t));
                used.Add(p.Name);
            }
        var stray = loaded.Tensors.FirstOrDefault(t => !used.Contains(t.Name));
        if (stray != null)
            throw new CheckpointFormatException(CheckpointErrorKind.AdapterMismatch, file, stray.Name, "no attached NAT adapter has this tensor (different targets or layers?)");
        foreach (var (p, t) in uploads) model.Ops.Upload(p.W, t.ToFloat32());
    }

    /// <summary>Sets the mode of every NAT adapter of the model; returns how many there are.</summary>
    public static int SetMode(LlamaModel model, NatMode mode)
    {
        int c = 0;
        foreach (var a in model.Adapters.Values.OfType<NatAdapter>()) { a.Mode = mode; c++; }
        return c;
    }

    /// <summary>α statistics of every NAT adapter of the model after its last forward, by layer and
    /// projection (the trainer's per-layer log). mask: per-row weights of that forward, or empty.</summary>
    public static IReadOnlyList<(int Layer, Proj Proj, double Mean, double Std)> AlphaStatsByModule(LlamaModel model, ReadOnlySpan<float> mask = default)
    {
        var r = new List<(int, Proj, double, double)>();
        foreach (var ((l, p), a) in model.Adapters.OrderBy(k => k.Key.Layer).ThenBy(k => k.Key.Proj))
            if (a is NatAdapter nat)
            {
                var (m, s) = nat.AlphaStats(mask);
                r.Add((l, p, m, s));
            }
        return r;
    }
}
