using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>One batch of padded sequences, host side. Right padding for training, left padding for
/// prompts; positions are derived from the mask (the count of real tokens before each one).</summary>
public sealed record ModelBatch(int B, int T, int[] Tokens, int[] Targets, float[] Mask)
{
    /// <summary>RoPE positions: 0, 1, 2, ... over the real tokens of each row (pads get the position
    /// of the next real token, which is never attended to).</summary>
    public int[] Positions()
    {
        var pos = new int[B * T];
        for (int b = 0; b < B; b++)
        {
            int p = 0;
            for (int t = 0; t < T; t++) { pos[b * T + t] = p; if (Mask[b * T + t] != 0f) p++; }
        }
        return pos;
    }

    public int LossTokens { get { int c = 0; foreach (int y in Targets) if (y >= 0) c++; return c; } }

    /// <summary>Per-sequence labels for sequence-level heads (the ranking model: 1 positive, 0 negative).</summary>
    public float[]? Labels { get; init; }

    /// <summary>Row index (b·T + t) of the last real token of sequence b.</summary>
    public int LastRow(int b)
    {
        for (int t = T - 1; t >= 0; t--) if (Mask[b * T + t] != 0f) return b * T + t;
        throw new ArgumentException($"batch row {b} has no real token");
    }

    public void Validate(int vocab, string what = "batch")
    {
        if (Tokens.Length != B * T || Targets.Length != B * T || Mask.Length != B * T)
            throw new ArgumentException($"{what}: B·T = {B * T} but tokens/targets/mask have {Tokens.Length}/{Targets.Length}/{Mask.Length}");
        for (int i = 0; i < Tokens.Length; i++)
        {
            if ((uint)Tokens[i] >= (uint)vocab) throw new ArgumentException($"{what}: token {Tokens[i]} at row {i / T}, position {i % T} is outside the vocabulary of {vocab}");
            if (Targets[i] >= vocab) throw new ArgumentException($"{what}: target {Targets[i]} at row {i / T}, position {i % T} is outside the vocabulary of {vocab}");
        }
    }
}

/// <summary>Weights of one decoder layer, under Hugging Face names.</summary>
public sealed class LayerWeights
{
    public required Param AttnNorm, Wq, Wk, Wv, Wo, MlpNorm, Gate, Up, Down;
    public Param Get(Proj p) => p switch
    {
        Proj.q_proj => Wq, Proj.k_proj => Wk, Proj.v_proj => Wv, Proj.o_proj => Wo,
        Proj.gate_proj => Gate, Proj.up_proj => Up, _ => Down,
    };
    public IEnumerable<Param> All => [AttnNorm, Wq, Wk, Wv, Wo, MlpNorm, Gate, Up, Down];
}

/// <summary>
/// A LLaMA decoder (RMSNorm → attention with RoPE → residual → RMSNorm → SwiGLU MLP → residual,
/// final RMSNorm, untied LM head) written against <see cref="IBackend"/>, with a hand-written
/// backward. Shapes: N = B·T rows, C = Dim, F = FfnDim, V = Vocab, H heads of hd = C/H.
/// The loss is computed by an <see cref="ILossHead"/> over row chunks of the logits so that at most
/// one chunk of N×V exists at a time.
/// </summary>
public sealed partial class LlamaModel : IDisposable
{
    public IBackend Ops { get; }
    public LlamaConfig Config { get; }
    public Param Embed { get; }
    public LayerWeights[] Layers { get; }
    public Param FinalNorm { get; }
    public Param LmHead { get; }
    readonly Dictionary<(int Layer, Proj Proj), IProjectionAdapter> _adapters = new();
    /// <summary>The adapters in force, by layer and projection. <see cref="AddLora"/> and NAT's attach add
    /// to them (the model then owns and disposes them); <see cref="WithAdapters"/> swaps a set in for a scope.</summary>
    public IReadOnlyDictionary<(int Layer, Proj Proj), IProjectionAdapter> Adapters => _adapters;
    public PassContext Pass { get; } = new();
    /// <summary>Recompute each layer's activations in backward from its input instead of keeping them
    /// (memory: one layer's activations instead of L).</summary>
    public bool Recompute { get; set; }
    /// <summary>Upper bound on logits floats held at once (rows per chunk = this / V).</summary>
    public long LogitsBudget { get; set; } = 1 << 22;

    readonly int C, F, V, H, Hd;

    /// <summary>Allocates the base model; trainable base weights must be F32. Weights are random
    /// (normal 0.02, norms 1) from the seed; load a checkpoint over them for real weights. The draws are
    /// Init.Normal's, made on the host and uploaded, so every backend holds the same bits; with
    /// <paramref name="drawOnDevice"/> each backend draws them itself (<see cref="IBackend.FillNormal"/>:
    /// no host round-trip, how gpu-check makes a random LLaMA-7b in moments; kernels' draws differ from
    /// the host's in the last bits).</summary>
    public LlamaModel(IBackend ops, LlamaConfig cfg, DType weightType = DType.F32, bool trainBase = false, ulong seed = 1, bool drawOnDevice = false)
    {
        cfg.Validate();
        (Ops, Config) = (ops, cfg);
        (C, F, V, H, Hd) = (cfg.Dim, cfg.FfnDim, cfg.Vocab, cfg.Heads, cfg.HeadDim);
        if (trainBase && weightType != DType.F32) throw new ArgumentException("full fine-tuning needs F32 base weights");
        ulong pid = 0;
        Param Mk(string name, bool isNorm, params int[] shape)
        {
            // norms and the embedding stay F32 (small, and the embedding is a gather, not a matmul)
            var dt = isNorm || name == "model.embed_tokens.weight" ? DType.F32 : weightType;
            var p = new Param(ops, name, dt, trainBase, shape);
            if (isNorm) ops.Fill(p.W, 1f);
            else if (drawOnDevice) ops.FillNormal(p.W, 0.02f, CounterRng.Derive(seed, pid));
            else ops.Upload(p.W, Init.Normal(p.Length, 0.02f, CounterRng.Derive(seed, pid)));
            pid++;
            return p;
        }
        Embed = Mk("model.embed_tokens.weight", false, V, C);
        Layers = new LayerWeights[cfg.Layers];
        for (int l = 0; l < cfg.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Layers[l] = new LayerWeights
            {
                AttnNorm = Mk(p + "input_layernorm.weight", true, C),
                Wq = Mk(p + "self_attn.q_proj.weight", false, C, C),
                Wk = Mk(p + "self_attn.k_proj.weight", false, C, C),
                Wv = Mk(p + "self_attn.v_proj.weight", false, C, C),
                Wo = Mk(p + "self_attn.o_proj.weight", false, C, C),
                MlpNorm = Mk(p + "post_attention_layernorm.weight", true, C),
                Gate = Mk(p + "mlp.gate_proj.weight", false, F, C),
                Up = Mk(p + "mlp.up_proj.weight", false, F, C),
                Down = Mk(p + "mlp.down_proj.weight", false, C, F),
            };
        }
        FinalNorm = Mk("model.norm.weight", true, C);
        LmHead = Mk("lm_head.weight", false, V, C);
    }

    public IEnumerable<Param> BaseParameters
    {
        get
        {
            yield return Embed;
            foreach (var l in Layers) foreach (var p in l.All) yield return p;
            yield return FinalNorm;
            yield return LmHead;
        }
    }

    public IEnumerable<Param> TrainableParameters =>
        BaseParameters.Concat(Adapters.OrderBy(a => a.Key.Layer).ThenBy(a => a.Key.Proj).SelectMany(a => a.Value.Parameters)).Where(p => p.Trainable);

    public static (int In, int Out) ProjShape(LlamaConfig c, Proj p) => p switch
    {
        Proj.gate_proj or Proj.up_proj => (c.Dim, c.FfnDim),
        Proj.down_proj => (c.FfnDim, c.Dim),
        _ => (c.Dim, c.Dim),
    };

    public static string ModulePrefix(int layer, Proj p) =>
        $"base_model.model.model.layers.{layer}.{(p is Proj.gate_proj or Proj.up_proj or Proj.down_proj ? "mlp" : "self_attn")}.{p}";

    /// <summary>Adds a fresh LoRA on every target projection of every layer (PEFT names).</summary>
    public IReadOnlyList<LoraAdapter> AddLora(LoraConfig cfg, ulong seed, bool trainable = true)
    {
        var list = new List<LoraAdapter>();
        for (int l = 0; l < Layers.Length; l++)
            foreach (var p in cfg.Targets)
            {
                var (i, o) = ProjShape(Config, p);
                var a = new LoraAdapter(Ops, ModulePrefix(l, p), i, o, cfg, seed, (ulong)(l * 8 + (int)p), trainable);
                SetAdapter(l, p, a);
                list.Add(a);
            }
        return list;
    }

    /// <summary>Puts <paramref name="adapter"/> on one projection, disposing the one it replaces.</summary>
    internal void SetAdapter(int layer, Proj p, IProjectionAdapter adapter)
    {
        if (_adapters.Remove((layer, p), out var old) && !ReferenceEquals(old, adapter)) old.Dispose();
        _adapters[(layer, p)] = adapter;
    }

    public void ClearAdapters()
    {
        foreach (var a in _adapters.Values) a.Dispose();
        _adapters.Clear();
    }

    /// <summary>Takes every adapter out of the model and hands it to the caller, who disposes it; the model
    /// is left with none.</summary>
    public IReadOnlyDictionary<(int Layer, Proj Proj), IProjectionAdapter> DetachAdapters()
    {
        var set = new Dictionary<(int, Proj), IProjectionAdapter>(_adapters);
        _adapters.Clear();
        return set;
    }

    /// <summary>Puts <paramref name="set"/> in force instead of the current adapters until the returned scope
    /// is disposed, when the previous ones come back (NCE runs its teachers this way on the student's
    /// model, so the base weights exist once). Ownership does not change: the set stays the caller's.</summary>
    public IDisposable WithAdapters(IReadOnlyDictionary<(int Layer, Proj Proj), IProjectionAdapter> set)
    {
        var previous = new Dictionary<(int, Proj), IProjectionAdapter>(_adapters);
        _adapters.Clear();
        foreach (var kv in set) _adapters[kv.Key] = kv.Value;
        return new Restore(() =>
        {
            _adapters.Clear();
            foreach (var kv in previous) _adapters[kv.Key] = kv.Value;
        });
    }

    sealed class Restore(Action undo) : IDisposable
    {
        bool _done;
        public void Dispose() { if (!_done) { _done = true; undo(); } }
    }

    // ---------------------------------------------------------------- activations
    sealed class LayerActs : IDisposable
    {
        public required Tensor Xn1, Rstd1, Q, K, V, Lse, Ao, X2, Xn2, Rstd2, G, U, Hh;
        public void Dispose() { foreach (var t in new[] { Xn1, Rstd1, Q, K, V, Lse, Ao, X2, Xn2, Rstd2, G, U, Hh }) t.Dispose(); }
    }

    sealed class Scratch : IDisposable
    {
        public required Tensor Dres, Dx2, Dxn, Dq, Dk, Dv, Dao, Dh, Dg, Du, Xf, RstdF, Dxf, Logits, Losses;
        public void Dispose() { foreach (var t in new[] { Dres, Dx2, Dxn, Dq, Dk, Dv, Dao, Dh, Dg, Du, Xf, RstdF, Dxf, Logits, Losses }) t.Dispose(); }
    }

    int _b, _t;
    Tensor[] _xs = [];                 // residual stream at each layer input, and after the last: (L+1) × (N,C)
    LayerActs[] _acts = [];            // L sets, or 1 shared set when recomputing
    Scratch? _s;
    Tensor? _tokens, _pos, _mask, _targets;
    public int ChunkRows { get; private set; }

    void Ensure(int b, int t)
    {
        if (b == _b && t == _t && _s != null && _acts.Length == (Recompute ? 1 : Layers.Length)) return;
        FreeActivations();
        (_b, _t) = (b, t);
        var o = Ops;
        _xs = ActivationSizes.Residual(Config, b, t).Select(x => o.Alloc(x.Name, x.Type, x.Dims)).ToArray();
        _acts = Enumerable.Range(0, Recompute ? 1 : Layers.Length).Select(i =>
        {
            var a = ActivationSizes.Alloc(o, $"l{i}.", ActivationSizes.Layer(Config, b, t));
            return new LayerActs
            {
                Xn1 = a["xn1"], Rstd1 = a["rstd1"], Q = a["q"], K = a["k"], V = a["v"], Lse = a["lse"], Ao = a["ao"],
                X2 = a["x2"], Xn2 = a["xn2"], Rstd2 = a["rstd2"], G = a["g"], U = a["u"], Hh = a["h"],
            };
        }).ToArray();
        ChunkRows = ActivationSizes.ChunkRows(Config, b, t, LogitsBudget);
        var s = ActivationSizes.Alloc(o, "", ActivationSizes.Scratch(Config, b, t, ChunkRows));
        _s = new Scratch
        {
            Dres = s["dres"], Dx2 = s["dx2"], Dxn = s["dxn"], Dq = s["dq"], Dk = s["dk"], Dv = s["dv"], Dao = s["dao"],
            Dh = s["dh"], Dg = s["dg"], Du = s["du"], Xf = s["xf"], RstdF = s["rstdf"], Dxf = s["dxf"], Logits = s["logits"], Losses = s["losses"],
        };
        var inputs = ActivationSizes.Alloc(o, "", ActivationSizes.Inputs(b, t));
        (_tokens, _pos, _mask, _targets) = (inputs["tokens"], inputs["pos"], inputs["mask"], inputs["targets"]);
    }

    void FreeActivations()
    {
        foreach (var x in _xs) x.Dispose();
        foreach (var a in _acts) a.Dispose();
        _s?.Dispose(); _tokens?.Dispose(); _pos?.Dispose(); _mask?.Dispose(); _targets?.Dispose();
        _xs = []; _acts = []; _s = null; _b = _t = 0;
    }

    /// <summary>Final normed hidden states (N,C) of the last forward.</summary>
    public Tensor Hidden => _s!.Xf;
    public Tensor TargetsTensor => _targets!;
    public Tensor LossesTensor => _s!.Losses;
    public int Rows => _b * _t;

    // ---------------------------------------------------------------- linear with adapters
    void Linear(int l, Proj p, Tensor x, Tensor y, int n)
    {
        var w = Layers[l].Get(p);
        var (i, o) = ProjShape(Config, p);
        Ops.MatMul(y, x, w.W, n, o, i, false, true);                                  // y(N,out) = x(N,in)·Wᵀ
        if (Adapters.TryGetValue((l, p), out var a)) a.Forward(Pass, x, y, n);
    }

    void LinearBackward(int l, Proj p, Tensor x, Tensor dy, Tensor dx, int n, bool accumulate)
    {
        var w = Layers[l].Get(p);
        var (i, o) = ProjShape(Config, p);
        Ops.MatMul(dx, dy, w.W, n, i, o, false, false, 1f, accumulate ? 1f : 0f);      // dx(N,in) (+)= dy(N,out)·W(out,in)
        if (w.Trainable) Ops.MatMul(w.Grad!, dy, x, o, i, n, true, false, 1f, 1f);    // dW(out,in) += dyᵀ·x
        if (Adapters.TryGetValue((l, p), out var a)) a.Backward(Pass, x, dy, dx, n);
    }

    // ---------------------------------------------------------------- forward
    /// <summary>Runs the decoder over the batch and leaves the final normed hidden states in
    /// <see cref="Hidden"/>. training = dropout on.</summary>
    public void ForwardHidden(ModelBatch batch, bool training)
    {
        batch.Validate(V);
        Ensure(batch.B, batch.T);
        Pass.Training = training;
        Ops.Upload(_tokens!, batch.Tokens);
        Ops.Upload(_pos!, batch.Positions());
        Ops.Upload(_mask!, batch.Mask);
        Ops.Upload(_targets!, batch.Targets);
        int n = Rows;
        Ops.EmbeddingForward(_xs[0], _tokens!, Embed.W, n, C);
        for (int l = 0; l < Layers.Length; l++) LayerForward(l, Acts(l));
        Ops.RmsNormForward(_s!.Xf, _s.RstdF, _xs[^1], FinalNorm.W, n, C, Config.NormEps);
    }

    LayerActs Acts(int l) => _acts[Recompute ? 0 : l];

    void LayerForward(int l, LayerActs a)
    {
        int n = Rows;
        var w = Layers[l];
        var x = _xs[l];
        Ops.RmsNormForward(a.Xn1, a.Rstd1, x, w.AttnNorm.W, n, C, Config.NormEps);   // xn1(N,C)
        Linear(l, Proj.q_proj, a.Xn1, a.Q, n);
        Linear(l, Proj.k_proj, a.Xn1, a.K, n);
        Linear(l, Proj.v_proj, a.Xn1, a.V, n);
        Ops.Rope(a.Q, _pos!, n, H, Hd, Config.RopeTheta, false);
        Ops.Rope(a.K, _pos!, n, H, Hd, Config.RopeTheta, false);
        Ops.AttentionForward(a.Ao, a.Lse, a.Q, a.K, a.V, _mask!, _b, _t, H, Hd);     // ao(N,C), lse(B,H,T)
        Ops.Copy(a.X2, x);
        Linear(l, Proj.o_proj, a.Ao, _s!.Dao, n);                                   // Dao used as scratch for o(ao)
        Ops.Axpy(a.X2, _s.Dao, 1f, (long)n * C);                                     // x2 = x + o(ao)
        Ops.RmsNormForward(a.Xn2, a.Rstd2, a.X2, w.MlpNorm.W, n, C, Config.NormEps);
        Linear(l, Proj.gate_proj, a.Xn2, a.G, n);                                    // g(N,F)
        Linear(l, Proj.up_proj, a.Xn2, a.U, n);                                      // u(N,F)
        Ops.SwiGluForward(a.Hh, a.G, a.U, (long)n * F);                              // h(N,F)
        Ops.Copy(_xs[l + 1], a.X2);
        Linear(l, Proj.down_proj, a.Hh, _s.Dxn, n);                                  // Dxn as scratch for down(h)
        Ops.Axpy(_xs[l + 1], _s.Dxn, 1f, (long)n * C);                               // x_{l+1} = x2 + down(h)
    }

    // ---------------------------------------------------------------- loss + backward
    /// <summary>Forward, loss through <paramref name="head"/>, and (when backward) the backward pass
    /// accumulating into every trainable parameter's gradient. Returns the head's loss.</summary>
    public double Step(ModelBatch batch, ILossHead head, bool backward, bool training = true)
    {
        ForwardHidden(batch, training);
        int n = Rows;
        head.Begin(this, batch);
        if (backward) Ops.Fill(_s!.Dxf, 0f);
        for (int r0 = 0; r0 < n; r0 += ChunkRows)
        {
            int rows = Math.Min(ChunkRows, n - r0);
            var xf = Ops.View(_s!.Xf, (long)r0 * C, rows, C);
            var logits = Ops.View(_s.Logits, 0, rows, V);
            Ops.MatMul(logits, xf, LmHead.W, rows, V, C, false, true);               // logits(rows,V) = xf·Wheadᵀ
            head.Chunk(this, logits, r0, rows, backward);                            // in place: logits → dlogits
            if (!backward) continue;
            var dxf = Ops.View(_s.Dxf, (long)r0 * C, rows, C);
            Ops.MatMul(dxf, logits, LmHead.W, rows, C, V, false, false);             // dxf = dlogits·Whead
            if (LmHead.Trainable) Ops.MatMul(LmHead.Grad!, logits, xf, V, C, rows, true, false, 1f, 1f);
        }
        double loss = head.End(this);
        if (backward) Backward();
        return loss;
    }

    /// <summary>−log p(target) of every row of the last forward under the model's own LM head (0 where the
    /// target is &lt; 0), in the loss's row chunks: features for a head that reads the model's likelihood (the
    /// ranking model's). No gradient; <see cref="TokenLossesBackward"/> adds it.</summary>
    public double[] TokenLosses()
    {
        int n = Rows;
        var s = _s!;
        for (int r0 = 0; r0 < n; r0 += ChunkRows)
        {
            int rows = Math.Min(ChunkRows, n - r0);
            var logits = Ops.View(s.Logits, 0, rows, V);
            Ops.MatMul(logits, Ops.View(s.Xf, (long)r0 * C, rows, C), LmHead.W, rows, V, C, false, true);   // logits(rows,V) = xf·Wheadᵀ
            Ops.CrossEntropyFused(logits, Ops.View(s.Losses, r0, rows), Ops.View(_targets!, r0, rows), rows, V, 1.0, false);
        }
        var l = new double[n];                                        // per row through Sum: the backend's precision (fp64 oracle)
        for (int r = 0; r < n; r++) l[r] = Ops.Sum(Ops.View(s.Losses, r, 1), 1);
        return l;
    }

    /// <summary>Adds Σ_t g_t · ∂(−log p(target_t))/∂hidden_t to <paramref name="dHidden"/> (N,C) for the last
    /// forward, recomputing each chunk's logits: dlogits_t = g_t·(softmax − onehot), dhidden += dlogits·Whead.</summary>
    public void TokenLossesBackward(ReadOnlySpan<float> g, Tensor dHidden)
    {
        int n = Rows;
        if (g.Length != n) throw new ArgumentException($"one coefficient per row: {g.Length} for {n} rows");
        var s = _s!;
        for (int r0 = 0; r0 < n; r0 += ChunkRows)
        {
            int rows = Math.Min(ChunkRows, n - r0);
            var xf = Ops.View(s.Xf, (long)r0 * C, rows, C);
            var logits = Ops.View(s.Logits, 0, rows, V);
            Ops.MatMul(logits, xf, LmHead.W, rows, V, C, false, true);
            Ops.CrossEntropyFused(logits, Ops.View(s.Losses, r0, rows), Ops.View(_targets!, r0, rows), rows, V, 1.0, true);
            for (int r = 0; r < rows; r++) Ops.Scale(Ops.View(logits, (long)r * V, V), g[r0 + r], V);   // row r's coefficient
            Ops.MatMul(Ops.View(dHidden, (long)r0 * C, rows, C), logits, LmHead.W, rows, C, V, false, false, 1f, 1f);
            if (LmHead.Trainable) Ops.MatMul(LmHead.Grad!, logits, xf, V, C, rows, true, false, 1f, 1f);
        }
    }

    /// <summary>Forward, a sequence-level loss on the final hidden states (N,C) through
    /// <paramref name="head"/>, and (when backward) the backward pass from the head's dL/dhidden.</summary>
    public double StepHidden(ModelBatch batch, IHiddenHead head, bool backward, bool training = true)
    {
        ForwardHidden(batch, training);
        if (backward) Ops.Fill(_s!.Dxf, 0f);
        double loss = head.Run(this, batch, _s!.Xf, backward ? _s.Dxf : null);
        if (backward) Backward();
        return loss;
    }

    void Backward()
    {
        int n = Rows;
        var s = _s!;
        Ops.Fill(s.Dres, 0f);
        Ops.RmsNormBackward(s.Dres, FinalNorm.Grad, s.Dxf, _xs[^1], FinalNorm.W, s.RstdF, n, C);
        for (int l = Layers.Length - 1; l >= 0; l--)
        {
            var a = Acts(l);
            if (Recompute) LayerForward(l, a);
            LayerBackward(l, a);
        }
        if (Embed.Trainable) Ops.EmbeddingBackward(Embed.Grad!, _tokens!, s.Dres, n, C);
    }

    void LayerBackward(int l, LayerActs a)
    {
        int n = Rows;
        var s = _s!;
        var w = Layers[l];
        // MLP branch: dres is d x_{l+1}; it flows unchanged into d x2
        Ops.Copy(s.Dx2, s.Dres);
        LinearBackward(l, Proj.down_proj, a.Hh, s.Dres, s.Dh, n, false);            // dh(N,F)
        Ops.Fill(s.Dg, 0f); Ops.Fill(s.Du, 0f);
        Ops.SwiGluBackward(s.Dg, s.Du, s.Dh, a.G, a.U, (long)n * F);
        LinearBackward(l, Proj.gate_proj, a.Xn2, s.Dg, s.Dxn, n, false);            // dxn2 = dg·Wg
        LinearBackward(l, Proj.up_proj, a.Xn2, s.Du, s.Dxn, n, true);               //      + du·Wu
        Ops.RmsNormBackward(s.Dx2, w.MlpNorm.Grad, s.Dxn, a.X2, w.MlpNorm.W, a.Rstd2, n, C);
        // attention branch
        LinearBackward(l, Proj.o_proj, a.Ao, s.Dx2, s.Dao, n, false);               // dao(N,C)
        Ops.Fill(s.Dq, 0f); Ops.Fill(s.Dk, 0f); Ops.Fill(s.Dv, 0f);
        Ops.AttentionBackward(s.Dq, s.Dk, s.Dv, s.Dao, a.Ao, a.Lse, a.Q, a.K, a.V, _mask!, _b, _t, H, Hd);
        Ops.Rope(s.Dq, _pos!, n, H, Hd, Config.RopeTheta, true);
        Ops.Rope(s.Dk, _pos!, n, H, Hd, Config.RopeTheta, true);
        LinearBackward(l, Proj.q_proj, a.Xn1, s.Dq, s.Dxn, n, false);
        LinearBackward(l, Proj.k_proj, a.Xn1, s.Dk, s.Dxn, n, true);
        LinearBackward(l, Proj.v_proj, a.Xn1, s.Dv, s.Dxn, n, true);
        Ops.Copy(s.Dres, s.Dx2);
        Ops.RmsNormBackward(s.Dres, w.AttnNorm.Grad, s.Dxn, _xs[l], w.AttnNorm.W, a.Rstd1, n, C);
    }

    // ---------------------------------------------------------------- diagnosis
    /// <summary>The first tensor holding NaN or ±Infinity: a parameter (base, then adapters, in order), else
    /// an activation of the last forward in the order the forward wrote them; null when all are finite.
    /// For the trainer's report when a loss or gradient went non-finite (reads every tensor: slow).</summary>
    public string? FirstNonFinite()
    {
        var adapterParams = Adapters.OrderBy(a => a.Key.Layer).ThenBy(a => a.Key.Proj).SelectMany(a => a.Value.Parameters);
        foreach (var p in BaseParameters.Concat(adapterParams))
            if (NonFinite(p.W)) return $"parameter {p.Name}";
        if (_s == null) return null;
        bool Bad(Tensor t) => NonFinite(t);
        if (Bad(_xs[0])) return "activation x0 (the embedding's output)";
        for (int l = 0; l < Layers.Length; l++)
        {
            if (!Recompute || l == Layers.Length - 1)   // recomputation keeps the last layer's set only
            {
                var a = Acts(l);
                foreach (var (name, t) in new[] { ("xn1", a.Xn1), ("q", a.Q), ("k", a.K), ("v", a.V), ("lse", a.Lse), ("ao", a.Ao), ("x2", a.X2), ("xn2", a.Xn2), ("g", a.G), ("u", a.U), ("h", a.Hh) })
                    if (Bad(t)) return $"activation {name} of layer {l}";
            }
            if (Bad(_xs[l + 1])) return $"activation x{l + 1} (the residual stream after layer {l})";
        }
        return Bad(_s.Xf) ? "activation xf (the final norm's output)" : null;
    }

    bool NonFinite(Tensor t)
    {
        if (t.DType == DType.F32) return Ops.HasNonFinite(t, t.Length);
        if (t.DType is not (DType.F16 or DType.BF16)) return false;
        var raw = new ushort[t.Length];
        Ops.DownloadRaw16(t, raw);
        ushort exp = t.DType == DType.BF16 ? (ushort)0x7F80 : (ushort)0x7C00;   // exponent all ones: Inf or NaN
        foreach (var w in raw) if ((w & exp) == exp) return true;
        return false;
    }

    /// <summary>Logits (N,V) of the last position-wise forward, for inference and tests (allocates).</summary>
    public float[] Logits(ModelBatch batch)
    {
        ForwardHidden(batch, false);
        int n = Rows;
        using var full = Ops.Alloc("logits.full", DType.F32, n, V);
        Ops.MatMul(full, _s!.Xf, LmHead.W, n, V, C, false, true);
        var r = new float[(long)n * V];
        Ops.Download(full, r);
        return r;
    }

    public void Dispose()
    {
        FreeActivations();
        foreach (var p in BaseParameters) p.Dispose();
        ClearAdapters();
    }
}
